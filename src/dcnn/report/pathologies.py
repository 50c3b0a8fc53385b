"""Wang, Teng & Perdikaris' Table 2 from runs: one table per problem (Helmholtz, Klein-Gordon,
cavity), the methods M1-M4 (and any other model x weighting pair) as columns, activations (and
any other setting that differs) as rows, relative L2 error with the published value beside it."""

from __future__ import annotations

from collections.abc import Sequence

from dcnn.report.published import PATHOLOGIES_SOURCE, pathologies_value
from dcnn.report.runs import (
    ACTIVATION_LABELS,
    Cell,
    Run,
    differing_settings,
    group_by,
    ordered,
    runs_of_task,
    setting_cell,
    sort_key,
)
from dcnn.report.tables import (
    COUNT_NOTE,
    Measured,
    Table,
    budget_note,
    run_count,
    summarize,
    value_notes,
)

PROBLEM_ORDER = ("helmholtz", "klein_gordon", "cavity")
# (model class, weighting) -> the paper's name for the method.
METHODS = {
    ("MLP", "fixed"): "M1",
    ("MLP", "annealing"): "M2",
    ("ModifiedMLP", "fixed"): "M3",
    ("ModifiedMLP", "annealing"): "M4",
}
MODEL_LABELS = {"MLP": "MLP", "ModifiedMLP": "modified MLP"}
METRIC = "rel_l2"
# Settings the table's layout already shows (columns, table) or that name the run.
LAYOUT_KEYS = {"task", "dataset.pde", "model", "weighting", "weighting.form", "seed"}


def method_label(run: Run, show_form: bool) -> str:
    """M1-M4 for the paper's four methods, else "<model> + <weighting>"; with ``show_form`` the
    annealing form (paper or code) is added, for tables holding both."""
    model, weighting = str(run.setting("model")), str(run.setting("weighting"))
    label = METHODS.get((model, weighting)) or f"{MODEL_LABELS.get(model, model)} + {weighting}"
    if show_form and weighting == "annealing":
        label += f" ({run.setting('weighting.form')})"
    return label


def _method_rank(label: str) -> tuple:
    return (0, label) if label[:2] in METHODS.values() else (1, label)


def pathologies_tables(runs: Sequence[Run]) -> list[Table]:
    """One table per problem: rows activation (+ differing settings), columns the methods'
    relative L2 error (mean ± std over seeds [published]), M1/M4 and the run count."""
    runs, skipped_note = runs_of_task(runs, "pinn", "pathologies")
    by_pde = group_by(runs, lambda run: (str(run.setting("dataset.pde")),))
    tables = []
    for pde in ordered((key[0] for key in by_pde), PROBLEM_ORDER):
        pde_runs = by_pde[(pde,)]
        annealed = [run for run in pde_runs if run.setting("weighting") == "annealing"]
        show_form = len({run.setting("weighting.form") for run in annealed}) > 1
        extras = [key for key in differing_settings(pde_runs) if key not in LAYOUT_KEYS]
        row_names = ["activation", *(key for key in extras if key != "activation")]
        methods = sorted({method_label(run, show_form) for run in pde_runs}, key=_method_rank)
        groups = group_by(
            pde_runs,
            lambda run, names=row_names: tuple(run.setting(key) for key in names),
        )
        rows: list[list[Cell]] = []
        for key in sorted(groups, key=lambda key: tuple(sort_key(value) for value in key)):
            row_runs = groups[key]
            activation = str(key[0])
            by_method = group_by(row_runs, lambda run, form=show_form: (method_label(run, form),))
            cells = {
                method: summarize(
                    by_method[(method,)],
                    METRIC,
                    pathologies_value(pde, method.split(" ")[0], activation),
                )
                if (method,) in by_method
                else None
                for method in methods
            }
            row: list[Cell] = [ACTIVATION_LABELS.get(activation, activation)]
            row += [setting_cell(value) for value in key[1:]]
            row += [cells[method] for method in methods]
            row.append(_ratio(cells.get("M1"), cells.get("M4")))
            row.append(run_count(row_runs))
            rows.append(row)
        notes = [
            *skipped_note,
            f"{METRIC}: relative L2 error on the problem's test grid (cavity: of the velocity "
            "magnitude against the reference solution), final parameters",
            "M1 plain MLP, M2 + learning-rate annealing, M3 modified MLP, M4 both; M1/M4: how "
            "many times M4's error is below M1's",
            *value_notes(rows, f"[x]: published ({PATHOLOGIES_SOURCE}; tanh networks)"),
            budget_note(pde_runs),
            COUNT_NOTE,
        ]
        tables.append(
            Table(
                [*row_names, *methods, "M1/M4", "n"],
                rows,
                title=f"{pde}: relative L2 error (mean over ok runs)",
                group=("pde", pde),
                notes=notes,
            )
        )
    return tables


def _ratio(m1: Cell, m4: Cell) -> Cell:
    if isinstance(m1, Measured) and isinstance(m4, Measured) and m4.mean > 0:
        return m1.mean / m4.mean
    return None
