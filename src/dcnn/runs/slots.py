"""One device per job when the local launcher runs several jobs at once.

``hydra/launcher=local_parallel`` runs ``n_jobs`` sweep jobs at a time in worker processes.
Each job claims the lowest free slot, a lock file under the sweep folder that it holds while it
runs (the operating system drops the lock when the process ends, even if it is killed). Slot k
trains on GPU ``k mod n_gpus``, given to the trainer as its device index; without GPUs the job
gets ``n_cpus / n_jobs`` threads, so that the jobs do not oversubscribe the cores.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

SLOTS_DIR = ".slots"


@dataclass
class Slot:
    index: int
    _handle: object

    def release(self) -> None:
        self._handle.close()  # closing the file drops its lock


def claim_slot(sweep_dir: Path, n_slots: int) -> Slot:
    """The lowest of ``n_slots`` slots that no running job holds."""
    if n_slots < 1:
        raise ValueError(f"hydra.launcher.n_jobs={n_slots}; expected at least 1")
    folder = Path(sweep_dir) / SLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_slots):
        handle = open(folder / f"slot-{index}.lock", "w")  # held while the job runs
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return Slot(index, handle)
    raise RuntimeError(
        f"all {n_slots} slots under {folder} are held, but the launcher runs at most {n_slots} "
        "jobs at once; is another sweep running into the same hydra.sweep.dir?"
    )


def slot_resources(
    slot: int, n_slots: int, accelerator: str, n_gpus: int, n_cpus: int
) -> dict[str, object]:
    """What slot ``slot`` of ``n_slots`` gets: a GPU index, or a share of the CPU threads."""
    if n_gpus > 0 and accelerator in ("gpu", "cuda", "auto"):
        return {"slot": slot, "devices": [slot % n_gpus]}
    return {"slot": slot, "threads": max(1, n_cpus // n_slots)}


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
