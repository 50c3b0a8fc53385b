"""The extra processes of a DDP job that Lightning starts on one machine (``trainer=ddp``).

Lightning starts them by running the command line again with ``hydra.run.dir=...`` appended. In
a multirun that line still holds ``-m`` and the whole sweep, so each extra process would run the
sweep again into a second timestamped folder. Instead, the main process publishes the job it is
running (its overrides, its folder and its launch decision) in the environment the extra
processes inherit, and ``job_argv`` turns their command line into that one job in run mode:
one multirun folder, one record and one W&B run per job, the extra processes writing nothing
outside the job's folder.

Lightning also leaves its rendezvous variables (``MASTER_PORT``, ``LOCAL_RANK``, ...) in the main
process's environment and its process group open; ``job_environment`` restores both after each
job, so the next job of the sweep starts its own processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

JOB_ENV = "DCNN_DDP_JOB"
LIGHTNING_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides that belong to the multirun or to the main process, not to the job itself.
_NOT_FOR_THE_JOB = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra.output_subdir",
    "hydra.job.name",
    "hydra/launcher",
    "hydra.launcher.",
    "hydra/sweeper",
    "hydra.sweeper.",
)


def is_main_process() -> bool:
    """Rank 0 of its launch, judged from the environment (before any trainer exists)."""
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "0") != "0":
            return False
    return True


def published_job() -> dict | None:
    """The job the main process published, in a process Lightning started for it."""
    if is_main_process() or JOB_ENV not in os.environ:
        return None
    return json.loads(os.environ[JOB_ENV])


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_argv(job: dict) -> list[str]:
    """Command-line arguments that run ``job`` alone, in run mode, in its own folder."""
    hydra_overrides = [o for o in job["hydra_overrides"] if not o.startswith(_NOT_FOR_THE_JOB)]
    return [
        *job["overrides"],
        *hydra_overrides,
        f"hydra.run.dir={_quoted(job['output_dir'])}",
        "hydra.output_subdir=null",
        f"hydra.job.name=ddp_rank_{os.environ.get('LOCAL_RANK', '1')}",
    ]


@contextmanager
def job_environment(
    output_dir: Path, overrides: list[str], hydra_overrides: list[str], launch: dict
) -> Iterator[None]:
    """Publish the job for Lightning's extra processes; restore the environment afterwards."""
    saved = {name: os.environ.get(name) for name in (*LIGHTNING_ENV, JOB_ENV)}
    os.environ[JOB_ENV] = json.dumps(
        {
            "output_dir": str(Path(output_dir).absolute()),
            "overrides": list(overrides),
            "hydra_overrides": list(hydra_overrides),
            "launch": launch,
        }
    )
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stop_extra_processes(trainer, grace_seconds: float = 10) -> None:
    """After the main process's run: give the processes Lightning started time to end on their
    own (they finish with it, and agree on interruptions), then kill those still waiting in a
    collective operation (after a failure of the main process)."""
    procs = getattr(getattr(trainer, "strategy", None), "launcher", None)
    for proc in getattr(procs, "procs", []):
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
