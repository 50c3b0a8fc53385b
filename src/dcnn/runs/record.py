"""metrics.json: the record every run leaves in its folder, whatever happened to it.

Statuses: ``ok`` (trained and tested), ``diverged`` (non-finite or exploding loss; recorded,
the sweep goes on), ``interrupted`` (stopped by a signal; a checkpoint to resume from is named
in the record) and ``failed`` (an error; re-raised after it is recorded).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config_resolved.yaml"
TRAINING_LOG = Path("csv") / "metrics.csv"
PREVIOUS_DIR = "previous"  # runs a relaunch moved aside (dcnn.runs.folder)
STATUSES = ("ok", "diverged", "interrupted", "failed")
DEFAULT_SWEEP_ROOT = Path("outputs") / "multiruns"


class RecordError(Exception):
    """A metrics.json that cannot be read; the message names the file and what to do."""


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
    """Write metrics.json (schema in design.md) atomically. Non-finite numbers become null."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r}; expected one of {STATUSES}")
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
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path


def read_record(folder: Path) -> dict | None:
    """The metrics.json of ``folder``, or None when there is none."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RecordError(
            f"{path}: cannot be read as JSON ({error}); move it away to run this folder again"
        ) from error
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        raise RecordError(
            f"{path}: not a dcnn-train record (expected a JSON object whose 'status' is one of "
            f"{', '.join(STATUSES)}); move it away to run this folder again"
        )
    return record


def sweep_group(sweep_dir: Path) -> str:
    """W&B group of a multirun: its folder under outputs/multiruns with the date
    ('2026-12-01_15-26-31'), or the folder's own name for a sweep folder given by the user."""
    sweep_dir = Path(sweep_dir)
    parts = sweep_dir.parts
    root = DEFAULT_SWEEP_ROOT.parts
    for start in range(len(parts) - len(root)):
        if parts[start : start + len(root)] == root:
            return "_".join(parts[start + len(root) :])
    return sweep_dir.name
