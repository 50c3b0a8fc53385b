"""`dcnn-report`: the paper's tables and figures from finished `dcnn-train` run folders.

Every subcommand takes folders that are searched recursively for ``metrics.json`` (one per run;
a multirun folder holds one numbered subfolder per job) and reads ``config_resolved.yaml`` beside
it to tell the runs' settings apart:

    dcnn-report runs DIR...       one row per run: status, the settings that differ, test metrics
    dcnn-report table1 DIR...     paper Table 1: model/variant x molecule energy and force MAE
    dcnn-report pinn DIR...       paper Tables 3-5: one table per PDE, rows tanh/IReLU (+BN)
    dcnn-report fig1 DIR --out F  paper Fig. 1: training curves and test MAE against beta

Repeated seeds are averaged over the runs with status ok; diverged and failed runs are always
shown (in their own row, as a cell text, or in the run count), never dropped silently.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

import yaml

from dcnn.runs.record import CONFIG_FILE, METRICS_FILE, PREVIOUS_DIR, STATUSES, TRAINING_LOG

TASKS = ("potential", "pinn")

Cell = str | int | float | None


class ReportError(Exception):
    """A problem with the user's input; ``main`` prints it and returns ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------- reading runs


def _lookup(config: dict, dotted_key: str) -> object:
    node: object = config
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _config_value(dotted_key: str) -> Callable[[dict], object]:
    return lambda config: _lookup(config, dotted_key)


def _model_class_name(config: dict) -> object:
    target = _lookup(config, "model._target_")
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
        path = _lookup(self.config, "dataset.path")
        return Path(str(path)).name if path else "?"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_mapping(record: dict, key: str, path: Path) -> dict[str, float | None]:
    mapping = record[key]
    values: dict[str, float | None] = {}
    for name, value in mapping.items():
        if value is not None and not _is_number(value):
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


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A table to print; cells keep raw numbers so that CSV output has full precision."""

    columns: list[str]
    rows: list[list[Cell]]
    title: str = ""
    # (column, value) naming this table when several are written into one CSV file.
    group: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)


def format_number(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4g}"


def _markdown_cell(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return format_number(cell)
    return str(cell).replace("\n", " ").replace("|", "\\|")


def render_markdown(tables: Sequence[Table]) -> str:
    blocks = []
    for table in tables:
        text_rows = [[_markdown_cell(cell) for cell in row] for row in table.rows]
        widths = [
            max([len(column)] + [len(row[index]) for row in text_rows])
            for index, column in enumerate(table.columns)
        ]

        def line(cells: Iterable[str], widths: list[int] = widths) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        lines = [f"### {table.title}", ""] if table.title else []
        lines.append(line(table.columns))
        lines.append(line("-" * width for width in widths))
        lines.extend(line(row) for row in text_rows)
        if table.notes:
            lines.append("")
            lines.extend(table.notes)
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _csv_cell(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float):
        return "NaN" if math.isnan(cell) else repr(cell)
    return str(cell)


def render_csv(tables: Sequence[Table]) -> str:
    """One CSV table; several tables are stacked with their group column in front."""
    if len(tables) == 1 and tables[0].group is None:
        columns, records = (
            tables[0].columns,
            [dict(zip(tables[0].columns, r, strict=True)) for r in tables[0].rows],
        )
    else:
        group_column = tables[0].group[0] if tables[0].group else "table"
        columns = [group_column]
        records = []
        for table in tables:
            columns += [column for column in table.columns if column not in columns]
            label = table.group[1] if table.group else table.title
            records += [
                {group_column: label, **dict(zip(table.columns, r, strict=True))}
                for r in table.rows
            ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(record.get(column)) for column in columns] for record in records)
    return buffer.getvalue()


def differing_settings(runs: Sequence[Run], keys: Iterable[str] = SETTINGS) -> list[str]:
    """The setting keys whose value is not the same in all ``runs``."""
    return [key for key in keys if len({run.setting(key) for run in runs}) > 1]


def _sort_key(value: object) -> tuple:
    """Orders numbers numerically, then text, then missing values."""
    if _is_number(value):
        return (0, float(value), "")
    return (2, 0.0, "") if value is None else (1, 0.0, str(value))


def _setting_cell(value: object) -> Cell:
    if isinstance(value, bool):
        return str(value)
    return value  # numbers stay numbers (full precision in CSV), text stays text


def _metric_unit(run: Run, metric: str) -> str | None:
    if run.task != "potential":
        return None  # PINN fields carry the data file's own units
    if metric.startswith("energy_") and metric != "energy_loss":
        return run.units.get("energy")
    if metric.startswith("force_"):
        return run.units.get("forces")
    return None  # loss terms are in rescaled units


def _with_unit(label: str, units: set[str]) -> str:
    return f"{label} ({', '.join(sorted(units))})" if units else label


RUN_METRICS = ("energy_mae", "force_mae", "mse", "rmse", "nrmse")


def runs_table(runs: Sequence[Run]) -> list[Table]:
    """One row per run: name, status, the settings that differ, main test metrics, epochs."""
    settings = differing_settings(runs)
    metrics = [metric for metric in RUN_METRICS if any(metric in run.test for run in runs)]
    columns = ["run", "status", *settings]
    mixed_units: set[str] = set()
    for metric in metrics:
        units = {u for run in runs if metric in run.test and (u := _metric_unit(run, metric))}
        if len(units) > 1:
            mixed_units.add(metric)  # e.g. MD17 (kcal/mol) with OC20 (eV): unit in each cell
            columns.append(metric)
        else:
            columns.append(_with_unit(metric, units))
    columns.append("epochs")
    with_errors = any(run.error for run in runs)
    if with_errors:
        columns.append("error")

    rows = []
    for run in runs:
        row: list[Cell] = [run.name, run.status]
        row += [_setting_cell(run.setting(key)) for key in settings]
        for metric in metrics:
            value: Cell = run.test.get(metric)
            if metric in run.test and value is None:
                value = math.nan  # recorded, but not finite
            if metric in mixed_units and value is not None:
                value = f"{format_number(value)} {_metric_unit(run, metric) or ''}".rstrip()
            row.append(value)
        row.append(run.epochs)
        if with_errors:
            row.append(_short_error(run.error))
        rows.append(row)
    counted = {status: sum(run.status == status for run in runs) for status in STATUSES}
    counts = ", ".join(
        f"{count} {status}" for status, count in counted.items() if count or status == "ok"
    )
    return [Table(columns, rows, title=f"{len(runs)} runs", notes=[f"runs: {counts}"])]


def _short_error(error: str | None, limit: int = 80) -> str | None:
    if not error:
        return None
    first_line = error.strip().splitlines()[0]
    return first_line if len(first_line) <= limit else first_line[: limit - 3] + "..."


def aggregate_metric(runs: Sequence[Run], metric: str) -> Cell:
    """Mean of ``metric`` over the ok runs (NaN if one of them has no finite value).

    Without any ok run the cell says why: "diverged" if any run diverged, else "failed".
    None when no ok run recorded the metric at all.
    """
    ok = [run for run in runs if run.status == "ok"]
    if not ok:
        return "diverged" if any(run.status == "diverged" for run in runs) else "failed"
    if all(metric not in run.test for run in ok):
        return None
    values = [run.test.get(metric) for run in ok]
    return math.nan if any(value is None for value in values) else fmean(values)


def run_count(runs: Sequence[Run]) -> Cell:
    """Number of ok runs averaged; "ok/total" when some runs diverged or failed."""
    n_ok = sum(run.status == "ok" for run in runs)
    return n_ok if n_ok == len(runs) else f"{n_ok}/{len(runs)}"


COUNT_NOTE = "n: ok runs averaged (ok/total when some runs diverged or failed)"


def _runs_of_task(runs: Sequence[Run], task: str, command: str) -> tuple[list[Run], list[str]]:
    chosen = [run for run in runs if run.task == task]
    if not chosen:
        raise ReportError(
            f"{command} needs runs with task={task}; none among the {len(runs)} found"
        )
    skipped = len(runs) - len(chosen)
    return chosen, [f"skipped {skipped} runs of other tasks"] if skipped else []


def _group_by(runs: Iterable[Run], key: Callable[[Run], tuple]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


# Table 1 variants: (activation, normalization, rescaling) -> label.
VARIANT_LABELS = {
    ("original", "original", "none"): "baseline",
    ("original", "original", "standardize"): "standardized",
    ("irelu", "none", "power_of_ten"): "*",
}
VARIANT_ORDER = ("baseline", "standardized", "*")
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


def _ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    distinct = set(values)
    rank = {name: index for index, name in enumerate(preferred)}
    return sorted(distinct, key=lambda name: (rank.get(name, len(rank)), name))


def table1(runs: Sequence[Run]) -> list[Table]:
    """Paper Table 1: rows model + variant (+ any other setting that differs), columns
    molecule x (energy MAE, force MAE, n), seeds averaged."""
    runs, notes = _runs_of_task(runs, "potential", "table1")
    fixed_by_layout = {"task", "dataset.molecule", "model", "seed", *VARIANT_KEYS}
    extras = [key for key in differing_settings(runs) if key not in fixed_by_layout]

    def row_key(run: Run) -> tuple:
        return (run.setting("model"), variant_label(run), *(run.setting(k) for k in extras))

    molecules = _ordered((run.dataset_label() for run in runs), MD17_MOLECULES)
    variant_rank = {label: index for index, label in enumerate(VARIANT_ORDER)}
    row_keys = sorted(
        _group_by(runs, row_key),
        key=lambda key: (
            _sort_key(key[0]),
            variant_rank.get(key[1], len(variant_rank)),
            key[1],
            *(_sort_key(value) for value in key[2:]),
        ),
    )
    cells = _group_by(runs, lambda run: (*row_key(run), run.dataset_label()))

    columns = ["model", "variant", *extras]
    for molecule in molecules:
        of_molecule = [run for run in runs if run.dataset_label() == molecule]
        energy_units = {u for run in of_molecule if (u := run.units.get("energy"))}
        force_units = {u for run in of_molecule if (u := run.units.get("forces"))}
        columns += [
            _with_unit(f"{molecule} E MAE", energy_units),
            _with_unit(f"{molecule} F MAE", force_units),
            f"{molecule} n",
        ]
    rows = []
    for key in row_keys:
        row: list[Cell] = [_setting_cell(value) for value in key]
        for molecule in molecules:
            cell_runs = cells.get((*key, molecule), [])
            if cell_runs:
                row += [
                    aggregate_metric(cell_runs, "energy_mae"),
                    aggregate_metric(cell_runs, "force_mae"),
                    run_count(cell_runs),
                ]
            else:
                row += [None, None, None]
        rows.append(row)

    if any(key[1] == "*" for key in row_keys):
        notes.append("* = IReLU, no normalization layers, labels divided by a power of ten")
    notes.append(COUNT_NOTE)
    return [Table(columns, rows, title="Table 1: test MAE (mean over ok runs)", notes=notes)]


PDE_ORDER = ("advection", "cfd", "diffreact")
ACTIVATION_LABELS = {"tanh": "Tanh", "irelu": "IReLU"}
PINN_VARIANT_ORDER = ("Tanh", "Tanh+BN", "IReLU", "IReLU+BN")
PINN_METRICS = ("mse", "rmse", "nrmse")


def pinn_variant_label(run: Run) -> str:
    """Tables 3-5 row label: Tanh, Tanh+BN, IReLU, IReLU+BN; other activations by their name."""
    activation = str(run.setting("activation"))
    normalization = run.setting("normalization")
    label = ACTIVATION_LABELS.get(activation, activation)
    if normalization == "batchnorm":
        return f"{label}+BN"
    return label if normalization in ("original", None) else f"{label}+norm={normalization}"


def pinn_tables(runs: Sequence[Run]) -> list[Table]:
    """Paper Tables 3-5: one table per PDE; rows variants, columns mse, rmse, nrmse and the
    loss terms at the end of training, seeds averaged."""
    runs, skipped_note = _runs_of_task(runs, "pinn", "pinn")
    fixed_by_layout = {"task", "dataset.pde", "activation", "normalization", "seed"}
    by_pde = _group_by(runs, lambda run: (str(run.setting("dataset.pde")),))
    tables = []
    for pde in _ordered((key[0] for key in by_pde), PDE_ORDER):
        pde_runs = by_pde[(pde,)]
        extras = [key for key in differing_settings(pde_runs) if key not in fixed_by_layout]
        term_losses = list(
            dict.fromkeys(m for run in pde_runs for m in run.test if m.endswith("_loss"))
        )
        variant_rank = {label: index for index, label in enumerate(PINN_VARIANT_ORDER)}

        def row_key(run: Run, extras: list[str] = extras) -> tuple:
            return (pinn_variant_label(run), *(run.setting(key) for key in extras))

        groups = _group_by(pde_runs, row_key)
        row_keys = sorted(
            groups,
            key=lambda key: (
                variant_rank.get(key[0], len(variant_rank)),
                key[0],
                *(_sort_key(value) for value in key[1:]),
            ),
        )
        rows = []
        for key in row_keys:
            row: list[Cell] = [_setting_cell(value) for value in key]
            row += [aggregate_metric(groups[key], m) for m in (*PINN_METRICS, *term_losses)]
            row.append(run_count(groups[key]))
            rows.append(row)
        notes = [
            *skipped_note,
            "mse/rmse/nrmse: test grid, last saved time steps (the paper's PINN 'MSE' is nRMSE); "
            "*_loss: loss terms at the final parameters",
            COUNT_NOTE,
        ]
        tables.append(
            Table(
                ["variant", *extras, *PINN_METRICS, *term_losses, "n"],
                rows,
                title=f"{pde}: test metrics (mean over ok runs)",
                group=("pde", pde),
                notes=notes,
            )
        )
    return tables


# ----------------------------------------------------------------------------- figure 1


def read_training_curve(path: Path) -> tuple[list[int], list[float]]:
    """(step, train/loss) pairs of a Lightning CSVLogger metrics.csv; rows without it skipped.

    A log without any training-loss row (a run shorter than trainer.log_every_n_steps) gives
    an empty curve; a file that is not a dcnn-train log is an error.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if "step" in columns and "train/loss" not in columns:
            return [], []
        missing = {"step", "train/loss"} - columns
        if missing:
            raise ReportError(
                f"{path}: no column(s) {', '.join(sorted(missing))} (columns: "
                f"{', '.join(reader.fieldnames or ()) or 'none'}); expected a dcnn-train CSV log"
            )
        steps, losses = [], []
        for line_number, row in enumerate(reader, start=2):
            if not row["train/loss"]:
                continue
            try:
                steps.append(int(float(row["step"])))
                losses.append(float(row["train/loss"]))
            except ValueError as exc:
                raise ReportError(f"{path}, line {line_number}: {exc}") from exc
    return steps, losses


def _beta(run: Run) -> float:
    beta = run.setting("loss.beta")
    if not _is_number(beta):
        raise ReportError(
            f"{run.folder / CONFIG_FILE}: loss.beta={beta!r}; fig1 needs a numeric force weight"
        )
    return float(beta)


def figure1(runs: Sequence[Run], out: Path) -> list[str]:
    """Paper Fig. 1 from a beta sweep, saved to ``out``; returns notes for the user.

    Left: train/loss against step from each run's csv/metrics.csv (log y), one colour per beta.
    Right: test energy and force MAE (mean over ok runs) against beta, log-log.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs, notes = _runs_of_task(runs, "potential", "fig1")
    others = [key for key in differing_settings(runs) if key not in ("loss.beta", "seed")]
    if others:
        values = "; ".join(
            f"{key} = {', '.join(sorted({str(run.setting(key)) for run in runs}))}"
            for key in others
        )
        raise ReportError(f"fig1 needs one beta sweep, but the runs also differ in {values}")
    by_beta = _group_by(runs, lambda run: (_beta(run),))
    betas = sorted(key[0] for key in by_beta)

    curves = {
        run.name: read_training_curve(run.folder / TRAINING_LOG)
        for run in runs
        if (run.folder / TRAINING_LOG).is_file()
    }
    without_log = [run.name for run in runs if run.name not in curves]
    if without_log:
        notes.append(f"no {TRAINING_LOG.as_posix()} in {', '.join(without_log)}: curves missing")
    without_rows = [name for name, (steps, _) in curves.items() if not steps]
    if without_rows:
        every = {str(_lookup(run.config, "trainer.log_every_n_steps")) for run in runs}
        notes.append(
            f"no training-loss rows in {', '.join(without_rows)}: the loss is logged every "
            f"trainer.log_every_n_steps={'/'.join(sorted(every))} steps, more than these runs "
            "trained; run them again with a smaller trainer.log_every_n_steps to plot their curves"
        )
    curves = {name: curve for name, curve in curves.items() if curve[0]}
    if not curves:
        notes.append("no training curve to plot: plotted the test-MAE panel only")

    figure = Figure(figsize=(11, 4.2) if curves else (5.5, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if curves else 1, squeeze=False)[0]
    colormap = colormaps["viridis"]
    colour = {beta: colormap(i / max(len(betas) - 1, 1)) for i, beta in enumerate(betas)}

    if curves:
        curve_axes = axes[0]
        for beta in betas:
            labelled = False
            for run in by_beta[(beta,)]:
                if run.name in curves:
                    steps, losses = curves[run.name]
                    label = None if labelled else f"β = {beta:g}"
                    curve_axes.plot(steps, losses, color=colour[beta], label=label, linewidth=1)
                    labelled = True
        curve_axes.set_yscale("log")
        curve_axes.set_xlabel("step")
        curve_axes.set_ylabel("training loss")
        curve_axes.set_title("training loss")
        curve_axes.legend(fontsize="small")

    mae_axes = axes[-1]
    plotted_betas = [beta for beta in betas if beta > 0]
    if len(plotted_betas) < len(betas):
        notes.append("beta <= 0 cannot be placed on the log axis: left out of the MAE panel")
    units = next((run.units for run in runs if run.units), {})  # failed runs have none
    for metric, label, unit in (
        ("energy_mae", "energy MAE", units.get("energy")),
        ("force_mae", "force MAE", units.get("forces")),
    ):
        points = [(b, aggregate_metric(by_beta[(b,)], metric)) for b in plotted_betas]
        finite = [(b, v) for b, v in points if isinstance(v, float) and math.isfinite(v)]
        if len(finite) < len(points):
            lost = ", ".join(f"{b:g} ({v})" for b, v in points if (b, v) not in finite)
            notes.append(f"{label}: no finite value for beta = {lost}")
        if finite:
            xs, ys = zip(*finite, strict=True)
            mae_axes.plot(xs, ys, "o-", label=_with_unit(label, {unit} if unit else set()))
    if not mae_axes.lines and not curves:
        raise ReportError("fig1: no training log and no ok run with a finite test MAE to plot")
    mae_axes.set_xscale("log")
    mae_axes.set_yscale("log")
    alpha = runs[0].setting("loss.alpha")
    mae_axes.set_xlabel(f"force weight β (α = {alpha})")
    mae_axes.set_ylabel("test MAE")
    mae_axes.set_title("test error against β")
    if mae_axes.lines:
        mae_axes.legend(fontsize="small")
    figure.savefig(out, dpi=120)
    return notes


# ----------------------------------------------------------------------------- command line


TABLE_COMMANDS: dict[str, tuple[Callable[[Sequence[Run]], list[Table]], str]] = {
    "runs": (runs_table, "one row per run: status, differing settings, main test metrics"),
    "table1": (table1, "paper Table 1: model/variant x molecule energy and force MAE"),
    "pinn": (pinn_tables, "paper Tables 3-5: one table per PDE, variants x test metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcnn-report",
        description="Tables and figures of the paper from finished dcnn-train run folders.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    folders = argparse.ArgumentParser(add_help=False)
    folders.add_argument(
        "folders",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="run or multirun folders, searched recursively for metrics.json",
    )
    overwrite = argparse.ArgumentParser(add_help=False)
    overwrite.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    for name, (_, help_text) in TABLE_COMMANDS.items():
        command = commands.add_parser(
            name, parents=[folders, overwrite], help=help_text, description=help_text
        )
        command.add_argument("--format", choices=("markdown", "csv"), default="markdown")
        command.add_argument("--out", type=Path, help="write to this file instead of stdout")
    fig1_help = "paper Fig. 1 from a beta sweep: training curves and test MAE against beta"
    fig1 = commands.add_parser(
        "fig1", parents=[folders, overwrite], help=fig1_help, description=fig1_help
    )
    fig1.add_argument("--out", type=Path, required=True, help="image file, e.g. fig1.png")
    return parser


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ReportError(f"--out {out} is a folder; expected a file name")
    if out.exists() and not overwrite:
        raise ReportError(f"--out {out} exists; pass --overwrite to replace it")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.out is not None:
            _check_out(args.out, args.overwrite)
        runs = find_runs(args.folders)
        if args.command == "fig1":
            supported = _figure_formats()
            if args.out.suffix.lstrip(".").lower() not in supported:
                raise ReportError(
                    f"--out {args.out}: unknown image type {args.out.suffix!r}; expected one of "
                    + ", ".join(f".{ext}" for ext in sorted(supported))
                )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            for note in figure1(runs, args.out):
                print(f"note: {note}", file=sys.stderr)
            print(f"wrote {args.out}")
            return 0
        build, _ = TABLE_COMMANDS[args.command]
        tables = build(runs)
        text = render_csv(tables) if args.format == "csv" else render_markdown(tables)
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            print(f"wrote {args.out}")
        return 0
    except ReportError as exc:
        print(f"dcnn-report: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _figure_formats() -> set[str]:
    """File extensions matplotlib can write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return set(FigureCanvasAgg.get_supported_filetypes())


if __name__ == "__main__":
    sys.exit(main())
