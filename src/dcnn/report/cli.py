"""``dcnn-report``: the command line over the tables and figures."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dcnn.report.figures import figure1, figure2, figure_formats
from dcnn.report.pathologies import pathologies_tables
from dcnn.report.runs import ReportError, Run, find_runs
from dcnn.report.tables import (
    Table,
    ablation_tables,
    pinn_tables,
    render_csv,
    render_markdown,
    runs_table,
    table1,
)

TABLE_COMMANDS: dict[str, tuple[Callable[[Sequence[Run]], list[Table]], str]] = {
    "runs": (runs_table, "one row per run: status, differing settings, main test metrics"),
    "table1": (table1, "paper Table 1: model/variant x molecule energy and force MAE"),
    "pinn": (pinn_tables, "paper Tables 3-5: one table per PDE, variants x test metrics"),
    "pathologies": (
        pathologies_tables,
        "Wang et al. Table 2: M1-M4 (and IReLU) relative L2 error per problem",
    ),
    "ablations": (ablation_tables, "paper Tables 7-9: IReLU alone, both, rescaling alone"),
}
# Tables laid out molecule by molecule, which `--rows molecules` turns round.
MOLECULE_TABLES = ("table1", "ablations")
FIGURE_COMMANDS: dict[str, tuple[Callable[[Sequence[Run], Path], list[str]], str]] = {
    "fig1": (figure1, "paper Fig. 1 from a beta sweep: training curves and test MAE against beta"),
    "fig2": (figure2, "paper Fig. 2 from a size sweep: test MAE against training frames"),
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
        if name in MOLECULE_TABLES:
            command.add_argument(
                "--rows",
                choices=("variants", "molecules"),
                default="variants",
                help="variants: the paper's layout (a row per model and variant, molecules as "
                "columns); molecules: a row per molecule (narrower)",
            )
    for name, (_, help_text) in FIGURE_COMMANDS.items():
        figure = commands.add_parser(
            name, parents=[folders, overwrite], help=help_text, description=help_text
        )
        figure.add_argument("--out", type=Path, required=True, help=f"image file, e.g. {name}.png")
    wandb_help = "every table and figure that applies, as one W&B run in the sweep's group"
    wandb = commands.add_parser("wandb", parents=[folders], help=wandb_help, description=wandb_help)
    wandb.add_argument("--project", default="dcnn")
    wandb.add_argument("--entity", default=None)
    wandb.add_argument("--group", default=None, help="default: the first folder's sweep group")
    wandb.add_argument(
        "--mode",
        choices=("offline", "online"),
        default=os.environ.get("WANDB_MODE", "offline"),
        help="offline (default, or $WANDB_MODE): `wandb sync` uploads it later",
    )
    return parser


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ReportError(f"--out {out} is a folder; expected a file name")
    if out.exists() and not overwrite:
        raise ReportError(f"--out {out} exists; pass --overwrite to replace it")


def _draw(command: str, runs: Sequence[Run], out: Path) -> None:
    supported = figure_formats()
    if out.suffix.lstrip(".").lower() not in supported:
        raise ReportError(
            f"--out {out}: unknown image type {out.suffix!r}; expected one of "
            + ", ".join(f".{ext}" for ext in sorted(supported))
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    draw, _ = FIGURE_COMMANDS[command]
    for note in draw(runs, out):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None) is not None:
            _check_out(args.out, args.overwrite)
        runs = find_runs(args.folders)
        if args.command == "wandb":
            from dcnn.report.wandb_summary import publish

            folder, notes = publish(
                runs, args.folders, args.project, args.entity, args.group, args.mode
            )
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            print(f"logged the study summary to W&B: {folder}")
            return 0
        if args.command in FIGURE_COMMANDS:
            _draw(args.command, runs, args.out)
            return 0
        build, _ = TABLE_COMMANDS[args.command]
        if args.command in MOLECULE_TABLES:
            tables = build(runs, molecule_rows=args.rows == "molecules")
        else:
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
