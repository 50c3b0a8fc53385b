"""The paper's tables from runs: one row per run, Table 1, Tables 3-5 (PINN), the ablations;
rendered as markdown or CSV. Repeated seeds are averaged over the ok runs; diverged and failed
runs are always shown (in their own row, as a cell text, or in the run count)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean, stdev

from dcnn.report.published import SOURCE, pinn_value, table1_value
from dcnn.report.runs import (
    MD17_MOLECULES,
    PDE_ORDER,
    PINN_VARIANT_ORDER,
    STATUSES,
    VARIANT_KEYS,
    VARIANT_ORDER,
    Cell,
    ReportError,
    Run,
    differing_settings,
    group_by,
    lookup,
    ordered,
    pinn_variant_label,
    runs_of_task,
    setting_cell,
    sort_key,
    variant_label,
)


@dataclass(frozen=True)
class Measured:
    """A metric over the ok runs of a table cell: the mean, the spread over seeds (standard
    deviation, with two or more runs) and the published value where the paper has one."""

    mean: float
    std: float | None = None
    published: str | None = None
    n: int = 1


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


def _markdown_cell(cell: Cell | Measured) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Measured):
        text = format_number(cell.mean)
        if cell.std is not None:
            text += f" ± {format_number(cell.std)}"
        return text if cell.published is None else f"{text} [{cell.published}]"
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


def flat_table(table: Table) -> Table:
    """``table`` with each column of Measured cells split into mean, std and published."""
    columns: list[str] = []
    parts: list[tuple[int, str]] = []  # (column index, which part)
    for index, column in enumerate(table.columns):
        cells = [row[index] for row in table.rows]
        measured = [cell for cell in cells if isinstance(cell, Measured)]
        columns.append(column)
        parts.append((index, "value"))
        if any(cell.std is not None for cell in measured):
            columns.append(f"{column} std")
            parts.append((index, "std"))
        if any(cell.published is not None for cell in measured):
            columns.append(f"{column} paper")
            parts.append((index, "published"))

    def part(cell, which: str) -> Cell:
        if not isinstance(cell, Measured):
            return cell if which == "value" else None
        return {"value": cell.mean, "std": cell.std, "published": cell.published}[which]

    rows = [[part(row[index], which) for index, which in parts] for row in table.rows]
    return Table(columns, rows, table.title, table.group, table.notes)


def render_csv(tables: Sequence[Table]) -> str:
    """One CSV table; several tables are stacked with their group column in front."""
    tables = [flat_table(table) for table in tables]
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


def _metric_unit(run: Run, metric: str) -> str | None:
    if run.task != "potential":
        return None  # PINN fields carry the data file's own units
    if metric.startswith("energy_") and metric != "energy_loss":
        return run.units.get("energy")
    if metric.startswith("force_"):
        return run.units.get("forces")
    return None  # loss terms are in rescaled units


def with_unit(label: str, units: set[str]) -> str:
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
            columns.append(with_unit(metric, units))
    columns.append("epochs")
    with_errors = any(run.error for run in runs)
    if with_errors:
        columns.append("error")

    rows = []
    for run in runs:
        row: list[Cell] = [run.name, run.status]
        row += [setting_cell(run.setting(key)) for key in settings]
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

    Without any ok run the cell says why: "diverged" if any run diverged, else "failed" if one
    failed, else "interrupted" (a study still under way). None when no ok run recorded the
    metric at all.
    """
    ok = [run for run in runs if run.status == "ok"]
    if not ok:
        statuses = {run.status for run in runs}
        return next(
            (why for why in ("diverged", "failed", "interrupted") if why in statuses), "failed"
        )
    if all(metric not in run.test for run in ok):
        return None
    values = [run.test.get(metric) for run in ok]
    return math.nan if any(value is None for value in values) else fmean(values)


def ok_values(runs: Sequence[Run], metric: str) -> list[float]:
    """The values of ``metric`` the ok runs recorded (a run without it counts as NaN)."""
    values = [run.test.get(metric) for run in runs if run.status == "ok"]
    return [math.nan if value is None else value for value in values]


def summarize(runs: Sequence[Run], metric: str, published: str | None = None) -> Cell:
    """A table cell for ``metric`` over ``runs``: a Measured value (mean, spread over the ok
    runs, the published value), or the reason there is none (see ``aggregate_metric``)."""
    mean = aggregate_metric(runs, metric)
    if not isinstance(mean, float):
        return mean
    values = ok_values(runs, metric)
    std = stdev(values) if len(values) > 1 and not math.isnan(mean) else None
    return Measured(mean, std, published, len(values))


BUDGET_KEYS = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "dataset.n_train",
    "dataset.batch_size",
    "optimizer.lr",
)


def budget_note(runs: Sequence[Run]) -> str:
    """The training budget the runs share (or the values they take), and their seeds."""
    parts = []
    for key in BUDGET_KEYS:
        values = {lookup(run.config, key) for run in runs} - {None, -1}
        if values:
            parts.append(f"{key}={'/'.join(str(v) for v in sorted(values, key=sort_key))}")
    seeds = sorted({run.setting("seed") for run in runs} - {None}, key=sort_key)
    if seeds:
        parts.append(f"seeds {', '.join(str(seed) for seed in seeds)}")
    return "budget: " + ", ".join(parts)


SPREAD_NOTE = "a ± b: mean ± standard deviation over the ok runs (seeds) of the cell"


def run_count(runs: Sequence[Run]) -> Cell:
    """Number of ok runs averaged; "ok/total" when some runs diverged or failed."""
    n_ok = sum(run.status == "ok" for run in runs)
    return n_ok if n_ok == len(runs) else f"{n_ok}/{len(runs)}"


COUNT_NOTE = "n: ok runs averaged (ok/total when some runs diverged or failed)"


def table1(runs: Sequence[Run], molecule_rows: bool = False) -> list[Table]:
    """Paper Table 1: rows model + variant (+ any other setting that differs), columns
    molecule x (energy MAE, force MAE, n), seeds averaged, the published value in each cell
    where the paper has one. ``molecule_rows``: one row per molecule instead (narrower)."""
    runs, notes = runs_of_task(runs, "potential", "table1")
    title = "Table 1: test MAE (mean over ok runs)"
    return [_molecule_table(runs, title, notes, molecule_rows)]


# The paper's ablation tables (its appendix C): variant label -> title.
ABLATIONS = {
    "IReLU only": "Table 7: IReLU alone (raw labels, normalization layers kept)",
    "*": "Table 8: IReLU with denormalization and power-of-ten rescaling",
    "denorm + rescale": "Table 9: denormalization and rescaling with the original activations",
}


def ablation_tables(runs: Sequence[Run], molecule_rows: bool = False) -> list[Table]:
    """Paper Tables 7-9: one table per ablation variant found, rows model, columns molecules
    (``molecule_rows``: the other way round)."""
    runs, notes = runs_of_task(runs, "potential", "ablations")
    tables = []
    for variant, title in ABLATIONS.items():
        chosen = [run for run in runs if variant_label(run) == variant]
        if chosen:
            table = _molecule_table(chosen, f"{title}: test MAE", list(notes), molecule_rows)
            tables.append(table)
    if not tables:
        found = ", ".join(sorted({variant_label(run) for run in runs}))
        raise ReportError(
            f"ablations needs runs of {', '.join(ABLATIONS)} (sweeps ablation_irelu_only, "
            f"ablation_denorm_rescale, table1); found only {found}"
        )
    return tables


def _molecule_table(
    runs: Sequence[Run], title: str, notes: list[str], molecule_rows: bool = False
) -> Table:
    fixed_by_layout = {"task", "dataset.molecule", "model", "seed", *VARIANT_KEYS}
    extras = [key for key in differing_settings(runs) if key not in fixed_by_layout]

    def row_key(run: Run) -> tuple:
        return (run.setting("model"), variant_label(run), *(run.setting(k) for k in extras))

    molecules = ordered((run.dataset_label() for run in runs), MD17_MOLECULES)
    variant_rank = {label: index for index, label in enumerate(VARIANT_ORDER)}
    row_keys = sorted(
        group_by(runs, row_key),
        key=lambda key: (
            sort_key(key[0]),
            variant_rank.get(key[1], len(variant_rank)),
            key[1],
            *(sort_key(value) for value in key[2:]),
        ),
    )
    cells = group_by(runs, lambda run: (*row_key(run), run.dataset_label()))

    def measured(key: tuple, molecule: str) -> list[Cell]:
        """Energy MAE, force MAE and run count of one model/variant on one molecule."""
        cell_runs = cells.get((*key, molecule), [])
        if not cell_runs:
            return [None, None, None]
        return [
            *(
                summarize(cell_runs, metric, table1_value(key[0], key[1], molecule, metric))
                for metric in ("energy_mae", "force_mae")
            ),
            run_count(cell_runs),
        ]

    def unit_columns(prefix: str, of: Sequence[Run]) -> list[str]:
        energy_units = {u for run in of if (u := run.units.get("energy"))}
        force_units = {u for run in of if (u := run.units.get("forces"))}
        return [
            with_unit(f"{prefix}E MAE", energy_units),
            with_unit(f"{prefix}F MAE", force_units),
            f"{prefix}n",
        ]

    if molecule_rows:
        columns = ["molecule"]
        for key in row_keys:
            model, variant, *values = (str(setting_cell(value)) for value in key)
            named = [f"{k.split('.')[-1]}={v}" for k, v in zip(extras, values, strict=True)]
            label = " ".join([model, variant, *named]) + " "
            columns += unit_columns(label, [run for run in runs if row_key(run) == key])
        rows = [
            [molecule, *(value for key in row_keys for value in measured(key, molecule))]
            for molecule in molecules
        ]
    else:
        columns = ["model", "variant", *extras]
        for molecule in molecules:
            of_molecule = [run for run in runs if run.dataset_label() == molecule]
            columns += unit_columns(f"{molecule} ", of_molecule)
        rows = [
            [
                *(setting_cell(value) for value in key),
                *(value for molecule in molecules for value in measured(key, molecule)),
            ]
            for key in row_keys
        ]

    if any(key[1] == "*" for key in row_keys):
        notes.append("* = IReLU, no normalization layers, labels divided by a power of ten")
    notes += value_notes(rows, f"[x]: published value ({SOURCE}, Table 1)")
    notes += [budget_note(runs), COUNT_NOTE]
    return Table(columns, rows, title=title, notes=notes)


def value_notes(rows: list[list[Cell]], published_note: str) -> list[str]:
    cells = [cell for row in rows for cell in row if isinstance(cell, Measured)]
    notes = [SPREAD_NOTE] if any(cell.std is not None for cell in cells) else []
    return notes + ([published_note] if any(cell.published for cell in cells) else [])


PINN_METRICS = ("mse", "rmse", "nrmse")


def pinn_tables(runs: Sequence[Run]) -> list[Table]:
    """Paper Tables 3-5: one table per PDE; rows variants, columns mse, rmse, nrmse and the
    loss terms at the end of training, seeds averaged."""
    runs, skipped_note = runs_of_task(runs, "pinn", "pinn")
    fixed_by_layout = {"task", "dataset.pde", "activation", "normalization", "seed"}
    by_pde = group_by(runs, lambda run: (str(run.setting("dataset.pde")),))
    tables = []
    for pde in ordered((key[0] for key in by_pde), PDE_ORDER):
        pde_runs = by_pde[(pde,)]
        extras = [key for key in differing_settings(pde_runs) if key not in fixed_by_layout]
        term_losses = list(
            dict.fromkeys(m for run in pde_runs for m in run.test if m.endswith("_loss"))
        )
        variant_rank = {label: index for index, label in enumerate(PINN_VARIANT_ORDER)}

        def row_key(run: Run, extras: list[str] = extras) -> tuple:
            return (pinn_variant_label(run), *(run.setting(key) for key in extras))

        groups = group_by(pde_runs, row_key)
        row_keys = sorted(
            groups,
            key=lambda key: (
                variant_rank.get(key[0], len(variant_rank)),
                key[0],
                *(sort_key(value) for value in key[1:]),
            ),
        )
        rows = []
        for key in row_keys:
            row: list[Cell] = [setting_cell(value) for value in key]
            row += [
                summarize(groups[key], m, pinn_value(pde, key[0], m))
                for m in (*PINN_METRICS, *term_losses)
            ]
            row.append(run_count(groups[key]))
            rows.append(row)
        notes = [
            *skipped_note,
            "mse/rmse/nrmse: test grid, last saved time steps (the paper's PINN 'MSE' is nRMSE); "
            "*_loss: loss terms at the final parameters",
            *value_notes(rows, f"[x]: published nRMSE ({SOURCE}, Tables 3-5)"),
            budget_note(pde_runs),
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
