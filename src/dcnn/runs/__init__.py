"""Run bookkeeping: what a run folder holds, and how runs stop, resume and report.

- ``record``: metrics.json, the one record every run leaves (statuses, schema);
- ``folder``: what relaunching into a folder does (skip, resume, rerun, refuse);
- ``checkpoint``: ``checkpoints/last.ckpt``, kept current while training;
- ``interrupt``: SIGINT / SIGTERM / SIGUSR2 become a checkpoint and status ``interrupted``;
- ``loggers``: CSV (always) and W&B, with the run's status in its summary;
- ``ddp``: DDP processes of one Hydra job; ``slots``: one device per parallel local job;
- ``hydra_hooks``: sweep-level checks and the summary printed at the end of a multirun.
"""
