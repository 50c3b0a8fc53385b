"""Run bookkeeping: loggers (W&B / CSV), run names, and the metrics.json every run leaves."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

LOGGERS = ("csv", "wandb", "none")


def run_name(overrides: list[str]) -> str:
    """A readable name from the command-line overrides, e.g. 'loss.beta=10,seed=1'."""
    kept = [
        o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(("hydra", "logger"))
    ]
    return ",".join(kept) or "default"


def build_logger(
    cfg: DictConfig, output_dir: Path, name: str, group: str | None, config: dict
) -> Logger | None:
    kind = cfg.logger.name
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=str(output_dir), name="csv", version="")
    if kind == "wandb":
        mode = cfg.logger.get("mode", "offline")
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}; expected offline, online or disabled")
        os.environ.setdefault("WANDB_MODE", mode)
        logger = WandbLogger(
            project=cfg.logger.project,
            entity=cfg.logger.get("entity"),
            name=name,
            group=group,
            tags=list(cfg.get("tags") or []),
            save_dir=str(output_dir),
            offline=mode == "offline",
            mode=mode,
        )
        logger.log_hyperparams(config)
        return logger
    raise ValueError(f"unknown logger.name {kind!r}; expected one of {', '.join(LOGGERS)}")


def finish_wandb() -> None:
    """Close the W&B run so that the next job of a multirun starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_metrics(
    output_dir: Path,
    *,
    status: str,
    task: str,
    units: dict[str, str],
    test: dict[str, float],
    train_last: dict[str, float],
    epochs: int,
    wall_seconds: float,
    error: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write metrics.json (schema in design.md). Non-finite numbers become null (valid JSON)."""
    record = {
        "status": status,
        "task": task,
        "units": units,
        "test": {k: _finite_or_none(float(v)) for k, v in test.items()},
        "train_last": {k: _finite_or_none(float(v)) for k, v in train_last.items()},
        "epochs": int(epochs),
        "wall_seconds": float(wall_seconds),
    }
    if error is not None:
        record["error"] = error
    if extra:
        record.update(extra)
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path
