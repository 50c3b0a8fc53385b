"""``dcnn-report wandb``: a study's tables and figures as one W&B run in the sweep's group.

Every table and figure that applies to the runs found (runs, Table 1, Tables 3-5, Tables 7-9,
Fig. 1, Fig. 2) is logged: tables as W&B Tables (the CSV layout: means, spreads and published
values in columns of their own), figures as images. Offline unless ``--mode online`` (or
``WANDB_MODE``); `wandb sync` uploads it later like the runs themselves.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from dcnn.report.figures import figure1, figure2
from dcnn.report.runs import ReportError, Run
from dcnn.report.tables import (
    Table,
    ablation_tables,
    flat_table,
    pinn_tables,
    runs_table,
    table1,
)
from dcnn.runs.record import sweep_group

TABLES: dict[str, Callable[[Sequence[Run]], list[Table]]] = {
    "runs": runs_table,
    "table1": table1,
    "pinn": pinn_tables,
    "ablations": ablation_tables,
}
FIGURES: dict[str, Callable[[Sequence[Run], Path], list[str]]] = {
    "fig1": figure1,
    "fig2": figure2,
}


def _table_key(command: str, table: Table, tables: list[Table]) -> str:
    if len(tables) == 1:
        return command
    label = table.group[1] if table.group else table.title.split(":")[0]
    return f"{command}/{label}"


def publish(
    runs: Sequence[Run],
    folders: Sequence[Path],
    project: str,
    entity: str | None,
    group: str | None,
    mode: str,
) -> tuple[Path, list[str]]:
    """Log the study summary; returns the run's folder and notes on what did not apply."""
    import wandb

    group = group or sweep_group(Path(folders[0]).resolve())
    notes: list[str] = []
    logged: dict[str, object] = {}
    for command, build in TABLES.items():
        try:
            tables = build(runs)
        except ReportError as error:
            notes.append(f"{command}: not logged ({error})")
            continue
        for table in tables:
            flat = flat_table(table)
            # Mixed types: a column of numbers holds "diverged" where a cell has no value.
            logged[_table_key(command, table, tables)] = wandb.Table(
                columns=flat.columns,
                data=[list(row) for row in flat.rows],
                allow_mixed_types=True,
            )
    with tempfile.TemporaryDirectory() as scratch:
        for command, draw in FIGURES.items():
            image = Path(scratch) / f"{command}.png"
            try:
                notes += [f"{command}: {note}" for note in draw(runs, image)]
            except ReportError as error:
                notes.append(f"{command}: not logged ({error})")
                continue
            logged[command] = wandb.Image(str(image))
        os.environ.setdefault("WANDB_MODE", mode)
        run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            job_type="study-summary",
            name=f"summary {group}",
            dir=str(Path(folders[0])),
            mode=mode,
            config={"folders": [str(folder) for folder in folders], "runs": len(runs)},
        )
        run.log(logged)
        run.summary.update({f"status/{k}": v for k, v in Counter(r.status for r in runs).items()})
        folder = Path(run.dir).parent
        run.finish()
    return folder, notes
