"""``dcnn-report``: the command line over the tables and figures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dcnn.report.figures import figure1, figure_formats
from dcnn.report.runs import ReportError, Run, find_runs
from dcnn.report.tables import Table, pinn_tables, render_csv, render_markdown, runs_table, table1

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
            supported = figure_formats()
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
