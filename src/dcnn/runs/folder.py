"""What launching a run into a folder does when the folder already holds a run.

Relaunching the same command into the same folder (``hydra.run.dir=D``, or a multirun with the
same ``hydra.sweep.dir``) is how a stopped study is continued:

| the folder holds             | the launch                                                    |
|------------------------------|---------------------------------------------------------------|
| nothing (or only Hydra's log)| trains from scratch (from ``ckpt_path`` when given)            |
| an ``ok`` run                | is skipped: the old results stay                              |
| an ``interrupted`` run, or a | resumes from ``checkpoints/last.ckpt`` (or ``ckpt_path``);     |
| checkpoint and no record     | from scratch when the run stopped before its first checkpoint |
| a ``failed``/``diverged`` run| is skipped, unless ``rerun`` names that status                 |

A run that is started again (``rerun``, or no checkpoint to resume from) first moves the old
files into ``previous/<n>-<status>/``; nothing is deleted. A folder whose run was configured
differently (other than in the settings that cannot change results, ``IGNORED_SETTINGS``) is
refused with the differences listed, and so is a folder another process on this machine is
still training in.

Only the main process decides. It writes the decision to ``launch.json``; the other DDP
processes follow it: those Lightning started receive it in their environment (``dcnn.runs.ddp``),
those a cluster started (SLURM tasks, torchrun) read it from ``launch.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from dcnn.runs.checkpoint import CHECKPOINT_DIR, last_checkpoint
from dcnn.runs.record import CONFIG_FILE, PREVIOUS_DIR, STATUSES, read_record

LAUNCH_FILE = "launch.json"
# Kept where they are when a run is moved aside: Hydra has already written this launch's
# `.hydra/` and opened its log file (in append mode) before the job starts.
KEPT_IN_PLACE = (PREVIOUS_DIR, ".hydra", LAUNCH_FILE)
# Settings that may differ between a run and its relaunch: where data lives, how progress is
# shown and logged, how the launch is told to behave, and the hardware (the global batch and the
# data order do not depend on the number of processes).
IGNORED_SETTINGS = (
    "data_root",
    "pde_data_root",
    "dataset.root",
    "dataset.num_workers",
    "logger",
    "tags",
    "group",
    "rerun",
    "ckpt_path",
    "checkpoint_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
)
RERUN_CHOICES = (*STATUSES, "all", "none")


class RunFolderError(Exception):
    """The folder cannot take this launch; the message says why and what to do."""


class FolderInUseError(RunFolderError):
    """Another live process trains in the folder (its launch file must stay as it is)."""


@dataclass(frozen=True)
class Launch:
    """The decision for one launch: ``fresh``, ``resume`` (from ``checkpoint``) or ``skip``."""

    action: str
    checkpoint: Path | None = None
    message: str = ""
    record: dict | None = None  # the record kept in place when skipping

    def to_dict(self) -> dict:
        checkpoint = None if self.checkpoint is None else str(self.checkpoint)
        return {"action": self.action, "checkpoint": checkpoint, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict) -> Launch:
        checkpoint = data.get("checkpoint")
        return cls(
            data["action"], None if checkpoint is None else Path(checkpoint), data["message"]
        )


def parse_rerun(value: object) -> set[str]:
    """``rerun``: none (default), a status (ok, diverged, failed, interrupted), a list, or all."""
    if value is None:
        return set()
    names = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    unknown = [name for name in names if name not in RERUN_CHOICES]
    if unknown:
        raise RunFolderError(
            f"rerun={value!r}: {unknown} not understood; expected none, all, one of "
            f"{', '.join(STATUSES)} or a list of them (rerun=[failed,diverged])"
        )
    if "all" in names:
        return set(STATUSES)
    return {name for name in names if name != "none"}


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        flat: dict[str, object] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def _ignored(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in IGNORED_SETTINGS)


def config_differences(folder: Path, config: dict, limit: int = 6) -> list[str]:
    """Settings in which ``config`` differs from the run recorded in ``folder``."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return []
    try:
        old = _flatten(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as error:
        raise RunFolderError(
            f"{path}: not valid YAML ({error}); move the folder away or pass rerun=all"
        ) from error
    new = _flatten(config)
    differences = [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if not _ignored(key) and old.get(key, "(unset)") != new.get(key, "(unset)")
    ]
    if len(differences) > limit:
        differences = differences[:limit] + [f"... and {len(differences) - limit} more"]
    return differences


def move_aside(folder: Path, status: str) -> Path | None:
    """Move the previous run's files into ``previous/<n>-<status>/``; returns that folder."""
    folder = Path(folder)
    items = [
        item
        for item in folder.iterdir()
        if item.name not in KEPT_IN_PLACE and not item.name.endswith(".log")
    ]
    if not items:
        return None
    previous = folder / PREVIOUS_DIR
    previous.mkdir(exist_ok=True)
    number = 1 + sum(1 for entry in previous.iterdir() if entry.is_dir())
    target = previous / f"{number}-{status}"
    target.mkdir()
    for item in items:
        shutil.move(str(item), str(target / item.name))
    return target


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_launch(folder: Path) -> dict | None:
    path = Path(folder) / LAUNCH_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None  # a launch file cut short by a crash says nothing about a live process


def _check_not_in_use(folder: Path) -> None:
    launch = read_launch(folder)
    if not launch or launch.get("ended") or launch.get("host") != socket.gethostname():
        return
    pid = int(launch.get("pid", 0))
    if pid and pid != os.getpid() and _process_alive(pid):
        raise FolderInUseError(
            f"{folder} is in use: process {pid} on this machine has been training there since "
            f"{launch.get('started')}. Wait for it to end, stop it (kill -TERM {pid} saves a "
            "checkpoint, and the same command resumes it), or use another folder"
        )


def _fresh(ckpt_path: Path | None, message: str) -> Launch:
    if ckpt_path is None:
        return Launch("fresh", message=message)
    return Launch(
        "resume", ckpt_path, f"{message}; starting from ckpt_path={ckpt_path}".lstrip("; ")
    )


def _start_again(folder: Path, status: str, ckpt_path: Path | None, why: str) -> Launch:
    moved = move_aside(folder, status)
    if moved is not None and ckpt_path is not None and ckpt_path.is_relative_to(folder.absolute()):
        ckpt_path = moved.absolute() / ckpt_path.relative_to(folder.absolute())
    where = f" (the old files are in {moved})" if moved else ""
    return _fresh(ckpt_path, f"{why}{where}")


def plan_launch(
    folder: Path, config: dict, rerun: set[str], ckpt_path: str | None = None
) -> Launch:
    """Decide what this launch does in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    explicit = None
    if ckpt_path is not None:
        explicit = Path(ckpt_path).expanduser().absolute()
        if not explicit.is_file():
            raise RunFolderError(
                f"ckpt_path={ckpt_path}: no such checkpoint file; give the path of a .ckpt file, "
                f"e.g. <run folder>/{CHECKPOINT_DIR}/last.ckpt"
            )
    if not folder.is_dir():
        return _fresh(explicit, "")
    _check_not_in_use(folder)
    record = read_record(folder)
    own_checkpoint = last_checkpoint(folder)
    status = record["status"] if record else ("interrupted" if own_checkpoint.is_file() else None)

    if status is None:
        leftovers = [p for p in folder.iterdir() if p.name in (CONFIG_FILE, "csv", "wandb")]
        if leftovers:
            return _start_again(folder, "incomplete", explicit, "the run there left no record")
        return _fresh(explicit, "")
    if status in rerun:
        return _start_again(folder, status, explicit, f"rerun={status}: running it again")
    differences = config_differences(folder, config)
    if differences:
        raise RunFolderError(
            f"{folder} holds a run (status {status}) with another configuration: "
            + "; ".join(differences)
            + f". Relaunch with the same settings, use another folder, or pass rerun={status} "
            "to move the old run aside and start again"
        )
    if status == "ok":
        return Launch(
            "skip", message="already finished (status ok); rerun=ok runs it again", record=record
        )
    if status in ("failed", "diverged"):
        return Launch(
            "skip",
            message=f"status {status}, not run again; pass rerun={status} to run it again",
            record=record,
        )
    if explicit is not None:
        return Launch("resume", explicit, f"resuming from ckpt_path={explicit}")
    if own_checkpoint.is_file():
        return Launch(
            "resume", own_checkpoint, f"resuming the interrupted run from {own_checkpoint}"
        )
    return _start_again(folder, "interrupted", None, "interrupted before its first checkpoint")


def launch_id() -> str | None:
    """An id shared by the processes a cluster started for one launch (None outside SLURM or
    torchrun)."""
    if "SLURM_JOB_ID" in os.environ:
        parts = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_STEP_ID")
        return "slurm-" + "-".join(os.environ.get(name, "0") for name in parts)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}-{restarts}"
    return None


def write_launch(folder: Path, launch: Launch, **fields) -> None:
    """Record this launch in ``folder/launch.json`` (main process only)."""
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().isoformat(timespec="seconds"),
        "launch_id": launch_id(),
        "ended": False,
        **launch.to_dict(),
        **fields,
    }
    path = folder / LAUNCH_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    tmp.replace(path)


def end_launch(folder: Path, status: str) -> None:
    launch = read_launch(folder)
    if launch is not None and launch.get("pid") == os.getpid():
        launch.update(ended=True, status=status)
        path = Path(folder) / LAUNCH_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(launch, indent=2))
        tmp.replace(path)


def decide_as_main(
    folder: Path, config: dict, rerun: set[str], ckpt_path: str | None = None
) -> Launch:
    """The main process's decision (``plan_launch``), written to ``launch.json`` for the run and
    for the other processes a cluster started for this launch, which wait for it: a skip and a
    refusal are written too, so that they end at once instead of waiting (on a single machine a
    skip writes nothing)."""
    cluster = launch_id() is not None
    try:
        launch = plan_launch(folder, config, rerun, ckpt_path)
    except RunFolderError as exc:
        if cluster and not isinstance(exc, FolderInUseError):
            write_launch(folder, Launch("refused", message=str(exc)), ended=True)
        raise
    if launch.action != "skip":
        write_launch(folder, launch)
    elif cluster:
        write_launch(folder, launch, ended=True, status=(launch.record or {}).get("status"))
    return launch


def decide_as_follower(folder: Path, published: dict | None) -> Launch:
    """The decision of a process other than the main one: the one its main process handed it
    (``published``, for processes Lightning started) or the one it wrote (``follow_launch``)."""
    launch = Launch.from_dict(published["launch"]) if published else follow_launch(folder)
    if launch.action == "refused":
        raise RunFolderError(launch.message)
    return launch


def follow_launch(folder: Path, timeout_seconds: float = 600, poll_seconds: float = 1) -> Launch:
    """The decision of the main process of this cluster launch (a non-main process waits)."""
    expected = launch_id()
    if expected is None:
        raise RunFolderError(
            "this process is not the main one of its launch (rank > 0), but neither Lightning nor "
            "a cluster (SLURM, torchrun) says which launch it belongs to; start it with "
            "trainer=ddp, srun or torchrun"
        )
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        launch = read_launch(folder)
        if launch is not None and launch.get("launch_id") == expected:
            return Launch.from_dict(launch)
        time.sleep(poll_seconds)
    raise RunFolderError(
        f"{folder / LAUNCH_FILE}: the main process of launch {expected} did not record its "
        f"decision within {timeout_seconds:.0f} s; see its log"
    )
