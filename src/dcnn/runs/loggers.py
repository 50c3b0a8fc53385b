"""Where a run's curves go: ``csv/metrics.csv`` always (``dcnn-report`` reads it), and W&B
with ``logger=wandb``.

A resumed run continues both: the CSV keeps the rows logged before the checkpoint it resumed
from (rows after it are logged again), and the W&B run with the id found in the run folder is
resumed instead of a new one being started. At the end the W&B summary holds the run's status
and the run closes with exit code 0 only when the status is ``ok``; an interrupted run is
marked as preempted, so W&B shows it as resumable rather than finished.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

LOGGERS = ("csv", "wandb")


def run_name(overrides: list[str]) -> str:
    """A readable name from the command-line overrides, e.g. 'loss.beta=10,seed=1'."""
    kept = [
        o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(("hydra", "logger"))
    ]
    return ",".join(kept) or "default"


class _ResumedWriter(ExperimentWriter):
    """Keeps the rows logged before ``keep_below_step`` instead of deleting the file."""

    def __init__(self, log_dir: str, keep_below_step: int) -> None:
        self.keep_below_step = keep_below_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if int(row["step"]) < self.keep_below_step]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


class RunCSVLogger(CSVLogger):
    """``<run>/csv/metrics.csv``; with ``resume_step`` the rows before that step are kept."""

    def __init__(self, run_folder: Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=str(run_folder), name="csv", version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            if self.resume_step is None:
                self._experiment = ExperimentWriter(log_dir=self.log_dir)
            else:
                self._experiment = _ResumedWriter(self.log_dir, self.resume_step)
        return self._experiment


_WANDB_RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)$")


def wandb_run_id(run_folder: Path) -> str | None:
    """The id of the W&B run a previous launch of this folder logged to, if any."""
    latest = Path(run_folder) / "wandb" / "latest-run"
    if not latest.exists():
        return None
    match = _WANDB_RUN_FOLDER.match(latest.resolve().name)
    return match["id"] if match else None


def build_loggers(
    cfg: DictConfig,
    output_dir: Path,
    name: str,
    group: str | None,
    config: dict,
    resume_step: int | None = None,
) -> list[Logger]:
    kind = cfg.logger.name
    if kind not in LOGGERS:
        raise ValueError(f"unknown logger.name {kind!r}; expected one of {', '.join(LOGGERS)}")
    loggers: list[Logger] = [RunCSVLogger(output_dir, resume_step)]
    if kind == "wandb":
        mode = cfg.logger.get("mode", "offline")
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}; expected offline, online or disabled")
        os.environ.setdefault("WANDB_MODE", mode)
        previous_id = wandb_run_id(output_dir) if resume_step is not None else None
        wandb_logger = WandbLogger(
            project=cfg.logger.project,
            entity=cfg.logger.get("entity"),
            name=name,
            group=group,
            tags=list(cfg.get("tags") or []),
            save_dir=str(output_dir),
            offline=mode == "offline",
            mode=mode,
            id=previous_id,
            resume="allow" if previous_id else None,
        )
        loggers.append(wandb_logger)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def finish_wandb(status: str) -> None:
    """Record ``status`` in the W&B summary and close the run (next multirun job: a new run)."""
    import wandb

    if wandb.run is None:
        return
    wandb.run.summary["status"] = status
    if status == "interrupted":
        wandb.mark_preempting()
    wandb.finish(exit_code=0 if status == "ok" else 1)
