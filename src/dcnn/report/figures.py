"""The paper's figures from runs: Fig. 1 (training curves and test MAE against the force weight
beta) and Fig. 2 (test MAE against the training-set size, one line per variant). Points are
means over the ok runs (seeds) with their standard deviation as error bars; a value with no ok
run behind it is marked "diverged" (or "failed") at the foot of the panel, not left out."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from statistics import stdev

from dcnn.report.runs import (
    CONFIG_FILE,
    VARIANT_KEYS,
    VARIANT_ORDER,
    ReportError,
    Run,
    differing_settings,
    group_by,
    is_number,
    lookup,
    ordered,
    runs_of_task,
    variant_label,
)
from dcnn.report.tables import aggregate_metric, ok_values, with_unit
from dcnn.runs.record import TRAINING_LOG


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


def _plot_against(
    axes, groups: dict[float, list[Run]], metric: str, label: str, notes: list[str], **style
) -> int:
    """Mean ``metric`` (error bars: std over the ok runs) against the groups' x values; x values
    without a finite mean are marked at the foot of the panel with the reason. Returns the
    number of finite points."""
    points, missing = [], []
    for x in sorted(groups):
        runs = groups[x]
        mean = aggregate_metric(runs, metric)
        values = ok_values(runs, metric)
        if isinstance(mean, float) and math.isfinite(mean):
            points.append((x, mean, stdev(values) if len(values) > 1 else 0.0))
        else:
            missing.append((x, mean if isinstance(mean, str) else "not finite"))
    if points:
        xs, ys, errors = zip(*points, strict=True)
        axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label, **style)
    for reason in sorted({why for _, why in missing}):
        xs = [x for x, why in missing if why == reason]
        axes.plot(
            xs,
            [0.03] * len(xs),
            "x",
            color=style.get("color", "red"),
            markersize=9,
            transform=axes.get_xaxis_transform(),
            label=f"{label}: {reason}",
        )
    if missing:
        lost = ", ".join(f"{x:g} ({why})" for x, why in missing)
        notes.append(f"{label}: no finite value at {lost}; marked at the foot of the panel")
    return len(points)


def _beta(run: Run) -> float:
    beta = run.setting("loss.beta")
    if not is_number(beta):
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

    runs, notes = runs_of_task(runs, "potential", "fig1")
    others = [key for key in differing_settings(runs) if key not in ("loss.beta", "seed")]
    if others:
        values = "; ".join(
            f"{key} = {', '.join(sorted({str(run.setting(key)) for run in runs}))}"
            for key in others
        )
        raise ReportError(f"fig1 needs one beta sweep, but the runs also differ in {values}")
    by_beta = group_by(runs, lambda run: (_beta(run),))
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
        every = {str(lookup(run.config, "trainer.log_every_n_steps")) for run in runs}
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
                    if run.status != "ok":  # its curve stops where it diverged or failed
                        label = f"β = {beta:g} ({run.status})"
                    curve_axes.plot(
                        steps,
                        losses,
                        color=colour[beta],
                        label=label,
                        linewidth=1,
                        linestyle="-" if run.status == "ok" else "--",
                    )
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
    groups = {beta: by_beta[(beta,)] for beta in plotted_betas}
    plotted = 0
    for metric, label, unit, colour_name in (
        ("energy_mae", "energy MAE", units.get("energy"), "tab:blue"),
        ("force_mae", "force MAE", units.get("forces"), "tab:orange"),
    ):
        plotted += _plot_against(
            mae_axes,
            groups,
            metric,
            with_unit(label, {unit} if unit else set()),
            notes,
            color=colour_name,
        )
    if not plotted and not curves:
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


FIG2_KEYS = ("dataset.n_train", "seed", *VARIANT_KEYS)


def _n_train(run: Run) -> float:
    n_train = run.setting("dataset.n_train")
    if not is_number(n_train):
        raise ReportError(
            f"{run.folder / CONFIG_FILE}: dataset.n_train={n_train!r}; fig2 needs a number of "
            "training frames"
        )
    return float(n_train)


def figure2(runs: Sequence[Run], out: Path) -> list[str]:
    """Paper Fig. 2 from a training-set-size sweep, saved to ``out``; returns notes.

    Two log-log panels, test energy and force MAE against dataset.n_train, one line per
    variant (activation / normalization / rescaling).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs, notes = runs_of_task(runs, "potential", "fig2")
    others = [key for key in differing_settings(runs) if key not in FIG2_KEYS]
    if others:
        values = "; ".join(
            f"{key} = {', '.join(sorted({str(run.setting(key)) for run in runs}))}"
            for key in others
        )
        raise ReportError(
            f"fig2 needs one training-set-size sweep (variants allowed), but the runs also "
            f"differ in {values}"
        )
    by_variant = group_by(runs, lambda run: (variant_label(run),))
    variants = ordered((key[0] for key in by_variant), VARIANT_ORDER)
    units = next((run.units for run in runs if run.units), {})
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 2)
    plotted = 0
    for axes, metric, title, unit in zip(
        panels,
        ("energy_mae", "force_mae"),
        ("energy", "force"),
        (units.get("energy"), units.get("forces")),
        strict=True,
    ):
        for index, variant in enumerate(variants):
            groups = group_by(by_variant[(variant,)], lambda run: (_n_train(run),))
            plotted += _plot_against(
                axes,
                {key[0]: group for key, group in groups.items()},
                metric,
                f"{title} MAE, {variant}",
                notes,
                color=f"C{index}",
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        # Ticks at the sizes run, written out: log-axis labels such as 3x10^3 overlap.
        sizes = sorted({_n_train(run) for run in runs})
        axes.set_xticks(sizes, [f"{size:,.0f}" for size in sizes], minor=False)
        axes.set_xticks([], minor=True)
        axes.set_xlabel("training frames")
        axes.set_ylabel(with_unit(f"test {title} MAE", {unit} if unit else set()))
        axes.set_title(f"test {title} MAE against training-set size")
        axes.legend(fontsize="small")
    if not plotted:
        raise ReportError("fig2: no ok run with a finite test MAE to plot")
    if "*" in variants:
        notes.append("* = IReLU, no normalization layers, labels divided by a power of ten")
    figure.savefig(out, dpi=120)
    return notes


def figure_formats() -> set[str]:
    """File extensions matplotlib can write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return set(FigureCanvasAgg.get_supported_filetypes())
