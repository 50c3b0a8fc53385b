"""Reading finished runs and telling them apart: records, configs, settings, variants.

A run is a folder with ``metrics.json`` and ``config_resolved.yaml`` (what ``dcnn-train``
leaves); ``find_runs`` collects them below the folders given, leaving out runs that a relaunch
moved aside.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dcnn.runs.record import CONFIG_FILE, METRICS_FILE, PREVIOUS_DIR, STATUSES

TASKS = ("potential", "pinn")

Cell = str | int | float | None


class ReportError(Exception):
    """A problem with the user's input; ``main`` prints it and returns ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def lookup(config: dict, dotted_key: str) -> object:
    node: object = config
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _config_value(dotted_key: str) -> Callable[[dict], object]:
    return lambda config: lookup(config, dotted_key)


def _model_class_name(config: dict) -> object:
    target = lookup(config, "model._target_")
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else None


# The settings that tell runs apart, in the order the tables show them.
SETTINGS: dict[str, Callable[[dict], object]] = {
    "task": _config_value("task"),
    "dataset.molecule": _config_value("dataset.molecule"),
    "dataset.pde": _config_value("dataset.pde"),
    "dataset.n_train": _config_value("dataset.n_train"),
    "model": _model_class_name,
    "activation": _config_value("activation.name"),
    "normalization": _config_value("normalization.name"),
    "rescaling": _config_value("rescaling.name"),
    "weighting": _config_value("weighting.name"),
    "weighting.form": _config_value("weighting.form"),
    "init": lambda config: lookup(config, "init.name") or "default",  # init=default adds no key
    "loss.kind": _config_value("loss.kind"),
    "loss.alpha": _config_value("loss.alpha"),
    "loss.beta": _config_value("loss.beta"),
    "optimizer.lr": _config_value("optimizer.lr"),
    "seed": _config_value("seed"),
}


@dataclass(frozen=True)
class Run:
    """One finished run: its metrics.json record and resolved config."""

    folder: Path
    name: str  # the folder relative to the searched folders, for display
    status: str
    task: str
    units: dict[str, str]
    test: dict[str, float | None]  # None: the metric was NaN/inf (or null) in metrics.json
    train_last: dict[str, float | None]
    epochs: int
    wall_seconds: float
    config: dict
    error: str | None = None
    data: dict = field(default_factory=dict)  # what the run read (metrics.json info.data)

    def setting(self, key: str) -> object:
        value = SETTINGS[key](self.config)
        if value is None and key == "dataset.molecule":
            value = self.data.get("molecule")  # unset: the molecule the data named
        # Lists or mappings (unusual here) become text so that values can be grouped on.
        if value is None or isinstance(value, str | int | float | bool):
            return value
        return json.dumps(value, sort_keys=True)

    def dataset_label(self) -> str:
        """The molecule, or the data path's name for data sets without molecules (OC20)."""
        molecule = self.setting("dataset.molecule")
        if molecule is not None:
            return str(molecule)
        path = lookup(self.config, "dataset.path")
        return Path(str(path)).name if path else "?"


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_mapping(record: dict, key: str, path: Path) -> dict[str, float | None]:
    mapping = record[key]
    values: dict[str, float | None] = {}
    for name, value in mapping.items():
        if value is not None and not is_number(value):
            raise ReportError(f"{path}: {key}.{name}={value!r}; expected a number or null")
        values[name] = float(value) if value is not None and math.isfinite(value) else None
    return values


def _check_record(record: object, path: Path) -> dict:
    if not isinstance(record, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(record).__name__}")
    expected_types = {
        "status": str,
        "task": str,
        "units": dict,
        "test": dict,
        "train_last": dict,
        "epochs": int,
        "wall_seconds": int | float,
    }
    missing = [key for key in expected_types if key not in record]
    if missing:
        raise ReportError(
            f"{path}: missing key(s) {', '.join(missing)}; a dcnn-train metrics.json has "
            f"{', '.join(expected_types)}"
        )
    for key, expected in expected_types.items():
        value = record[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ReportError(
                f"{path}: {key}={value!r} ({type(value).__name__}); expected "
                f"{getattr(expected, '__name__', 'a number')}"
            )
    if record["status"] not in STATUSES:
        raise ReportError(f"{path}: status={record['status']!r}; expected one of {STATUSES}")
    if record["task"] not in TASKS:
        raise ReportError(f"{path}: task={record['task']!r}; expected one of {TASKS}")
    if not all(isinstance(unit, str) for unit in record["units"].values()):
        raise ReportError(f"{path}: units={record['units']!r}; expected text values")
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        raise ReportError(f"{path}: error={error!r}; expected text or no 'error' key")
    return record


def load_run(folder: Path, name: str) -> Run:
    """Read ``folder/metrics.json`` and ``folder/config_resolved.yaml`` into a Run."""
    metrics_path = folder / METRICS_FILE
    try:
        record = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{metrics_path}: not valid JSON ({exc})") from exc
    record = _check_record(record, metrics_path)

    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ReportError(
            f"{config_path} is missing: dcnn-train writes it beside {METRICS_FILE}, and the "
            "report needs it to tell the runs' settings apart"
        )
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as exc:
        raise ReportError(f"{config_path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise ReportError(f"{config_path}: expected a mapping of config keys")

    return Run(
        folder=folder,
        name=name,
        status=record["status"],
        task=record["task"],
        units=dict(record["units"]),
        test=_metric_mapping(record, "test", metrics_path),
        train_last=_metric_mapping(record, "train_last", metrics_path),
        epochs=record["epochs"],
        wall_seconds=float(record["wall_seconds"]),
        config=config,
        error=record.get("error"),
        data=dict((record.get("info") or {}).get("data") or {}),
    )


def _natural_key(text: str) -> list[str | int]:
    # re.split with a group alternates text and digits, so the list types line up in comparisons.
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", text))]


def find_runs(folders: Sequence[Path]) -> list[Run]:
    """All runs under ``folders`` (each searched recursively), in natural order of their names.

    Names are relative to the folders' common parent (to the folder itself when only one is
    given). Runs that a relaunch moved aside (``previous/``) are not counted. A folder without
    any metrics.json is an error with exit code 2.
    """
    run_folders: dict[Path, None] = {}  # ordered set: the same run reached twice counts once
    for folder in folders:
        if not folder.is_dir():
            raise ReportError(f"{folder}: no such folder", exit_code=2)
        found = [
            path
            for path in sorted(folder.rglob(METRICS_FILE))
            if path.is_file() and PREVIOUS_DIR not in path.relative_to(folder).parts
        ]
        if not found:
            raise ReportError(
                f"{folder}: no {METRICS_FILE} in it or any subfolder; pass a dcnn-train output "
                "folder (a run, or a multirun with one subfolder per job)",
                exit_code=2,
            )
        run_folders.update((path.parent.resolve(), None) for path in found)
    base = Path(os.path.commonpath([folder.resolve() for folder in folders]))
    runs = []
    for run_folder in run_folders:
        relative = run_folder.relative_to(base).as_posix()
        runs.append(load_run(run_folder, run_folder.name if relative == "." else relative))
    return sorted(runs, key=lambda run: _natural_key(run.name))


def differing_settings(runs: Sequence[Run], keys: Iterable[str] = SETTINGS) -> list[str]:
    """The setting keys whose value is not the same in all ``runs``."""
    return [key for key in keys if len({run.setting(key) for run in runs}) > 1]


def sort_key(value: object) -> tuple:
    """Orders numbers numerically, then text, then missing values."""
    if is_number(value):
        return (0, float(value), "")
    return (2, 0.0, "") if value is None else (1, 0.0, str(value))


def setting_cell(value: object) -> Cell:
    if isinstance(value, bool):
        return str(value)
    return value  # numbers stay numbers (full precision in CSV), text stays text


def runs_of_task(runs: Sequence[Run], task: str, command: str) -> tuple[list[Run], list[str]]:
    chosen = [run for run in runs if run.task == task]
    if not chosen:
        raise ReportError(
            f"{command} needs runs with task={task}; none among the {len(runs)} found"
        )
    skipped = len(runs) - len(chosen)
    return chosen, [f"skipped {skipped} runs of other tasks"] if skipped else []


def group_by(runs: Iterable[Run], key: Callable[[Run], tuple]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


# Table 1 variants: (activation, normalization, rescaling) -> label.
VARIANT_LABELS = {
    ("original", "original", "none"): "baseline",
    ("original", "original", "standardize"): "standardized",
    ("irelu", "none", "power_of_ten"): "*",
    ("irelu", "original", "none"): "IReLU only",
    ("original", "none", "power_of_ten"): "denorm + rescale",
}
VARIANT_ORDER = ("baseline", "standardized", "*", "IReLU only", "denorm + rescale")
VARIANT_KEYS = ("activation", "normalization", "rescaling")
MD17_MOLECULES = (
    "aspirin",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "salicylic",
    "toluene",
    "uracil",
)


def variant_label(run: Run) -> str:
    """Table 1 row label: baseline, * (DC), standardized, else "act/norm/rescaling"."""
    key = tuple(run.setting(name) for name in VARIANT_KEYS)
    return VARIANT_LABELS.get(key, "/".join(str(part) for part in key))


def ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    distinct = set(values)
    rank = {name: index for index, name in enumerate(preferred)}
    return sorted(distinct, key=lambda name: (rank.get(name, len(rank)), name))


PDE_ORDER = ("advection", "cfd", "diffreact")
ACTIVATION_LABELS = {"tanh": "Tanh", "irelu": "IReLU"}
PINN_VARIANT_ORDER = ("Tanh", "Tanh+BN", "IReLU", "IReLU+BN")


def pinn_variant_label(run: Run) -> str:
    """Tables 3-5 row label: Tanh, Tanh+BN, IReLU, IReLU+BN; other activations by their name."""
    activation = str(run.setting("activation"))
    normalization = run.setting("normalization")
    label = ACTIVATION_LABELS.get(activation, activation)
    if normalization == "batchnorm":
        return f"{label}+BN"
    return label if normalization in ("original", None) else f"{label}+norm={normalization}"
