"""Hydra callbacks of dcnn (``hydra.callbacks`` in conf/train.yaml), run in the launching process.

- Before a multirun: ``hydra/launcher=slurm`` on a machine without SLURM stops with a message
  that names the alternatives, instead of submitit's traceback.
- After a multirun: one line per status, read from the jobs' metrics.json files, and the
  outcome that ``dcnn-train`` turns into its exit status (0 only when every job is ok).
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dcnn.runs.record import METRICS_FILE, PREVIOUS_DIR, STATUSES, RecordError, read_record


def job_statuses(sweep_dir: Path) -> Counter:
    """Status counts of the job folders of a multirun (runs moved aside are not counted)."""
    counts: Counter = Counter()
    for path in sorted(Path(sweep_dir).rglob(METRICS_FILE)):
        if PREVIOUS_DIR in path.relative_to(sweep_dir).parts:
            continue
        try:
            record = read_record(path.parent)
        except RecordError:
            counts["unreadable"] += 1
            continue
        counts[record["status"]] += 1
    return counts


class SweepHooks(Callback):
    """See the module docstring. ``outcome`` holds the last multirun's status counts."""

    outcome: Counter | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
            print(
                "hydra/launcher=slurm submits jobs with SLURM's sbatch, which is not on this "
                "machine's PATH. Run the sweep on a SLURM login node, or here with "
                "hydra/launcher=slurm_local (the same preset, jobs as local processes) or "
                "hydra/launcher=local_parallel.",
                file=sys.stderr,
            )
            raise SystemExit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        counts = job_statuses(sweep_dir)
        SweepHooks.outcome = counts
        order = [*STATUSES, "unreadable"]
        parts = ", ".join(f"{counts[status]} {status}" for status in order if counts[status])
        print(f"[dcnn] sweep {sweep_dir}: {sum(counts.values())} jobs: {parts}", flush=True)
