"""`dcnn-report fig1` and `fig2` on synthetic run folders: the panels drawn, diverged runs marked
on the plot and named on stderr, and runs that are not one sweep refused."""

from __future__ import annotations

import yaml
from report_runs import (
    beta_sweep,
    mae,
    md17_sweep,
    png_size,
    report,
    run_config,
    size_sweep,
    write_run,
)

__all__ = ["md17_sweep"]  # a fixture: pytest finds it here


def test_fig1_writes_both_panels_or_only_the_mae_panel(tmp_path, capsys):
    with_logs = tmp_path / "with_logs.png"
    code, out, err = report(
        ["fig1", str(beta_sweep(tmp_path / "a", True)), "--out", str(with_logs)], capsys
    )
    assert code == 0 and str(with_logs) in out
    assert "energy MAE (kcal/mol): no finite value at 100 (diverged); marked at the foot" in err
    without_logs = tmp_path / "without_logs.png"
    code, _, err = report(
        ["fig1", str(beta_sweep(tmp_path / "b", False)), "--out", str(without_logs)], capsys
    )
    assert code == 0
    assert "plotted the test-MAE panel only" in err
    two_panels, one_panel = png_size(with_logs), png_size(without_logs)
    assert two_panels[0] > 1.5 * one_panel[0] and two_panels[1] == one_panel[1]


def test_fig1_rejects_runs_that_are_not_one_beta_sweep(md17_sweep, tmp_path, capsys):
    out_file = tmp_path / "fig.png"
    code, _, err = report(["fig1", str(md17_sweep), "--out", str(out_file)], capsys)
    assert code == 1
    assert "dataset.molecule = aspirin, benzene" in err
    assert not out_file.exists()


def test_fig1_of_runs_shorter_than_the_logging_interval_says_how_to_get_curves(tmp_path, capsys):
    """A short sweep logs no training-loss row when trainer.log_every_n_steps exceeds its steps."""
    sweep = beta_sweep(tmp_path / "short", with_curves=False)
    for index in ("0", "1", "2"):
        (sweep / index / "csv").mkdir()
        (sweep / index / "csv" / "metrics.csv").write_text("epoch,step,val/loss\n0,5,0.5\n")
        config = yaml.safe_load((sweep / index / "config_resolved.yaml").read_text())
        config["trainer"] = {"log_every_n_steps": 50}
        (sweep / index / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    code, _, err = report(["fig1", str(sweep), "--out", str(tmp_path / "fig.png")], capsys)
    assert code == 0
    assert "no training-loss rows in 0, 1, 2" in err
    assert "trainer.log_every_n_steps=50" in err and "smaller trainer.log_every_n_steps" in err


def test_fig2_plots_mae_against_training_size_per_variant_and_marks_divergence(tmp_path, capsys):
    out_file = tmp_path / "fig2.png"
    code, out, err = report(
        ["fig2", str(size_sweep(tmp_path / "sizes")), "--out", str(out_file)], capsys
    )
    assert code == 0 and str(out_file) in out
    width, height = png_size(out_file)
    assert width > 1.8 * height  # two panels side by side
    assert "energy MAE, *: no finite value at 1600 (diverged); marked at the foot" in err
    assert "force MAE, *: no finite value at 1600 (diverged)" in err
    assert "standardized" not in err  # every size of that variant has a value


def test_fig2_rejects_runs_that_differ_in_more_than_size_seed_and_variant(tmp_path, capsys):
    root = size_sweep(tmp_path / "sizes")
    other = run_config(variant="dc", beta=1.0)
    other["dataset"]["n_train"] = 100
    write_run(root / "9", other, test=mae(1.0, 1.0))
    code, _, err = report(["fig2", str(root), "--out", str(tmp_path / "f.png")], capsys)
    assert code == 1 and "differ in loss.beta = 1.0, 30.0" in err


def test_fig1_marks_diverged_betas_on_the_plot(tmp_path, capsys):
    """The diverged run's curve is drawn (dashed) and its beta marked, both with a legend entry."""
    from matplotlib.figure import Figure

    drawn = {}
    original_savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn["labels"] = [text.get_text() for ax in self.axes for text in ax.get_legend().texts]
        return original_savefig(self, *args, **kwargs)

    root = beta_sweep(tmp_path / "a", True)
    (root / "3" / "csv").mkdir()
    (root / "3" / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,5.0\n0,10,80.0\n")
    Figure.savefig = keep
    try:
        code, _, _ = report(["fig1", str(root), "--out", str(tmp_path / "f.png")], capsys)
    finally:
        Figure.savefig = original_savefig
    assert code == 0
    assert "β = 100 (diverged)" in drawn["labels"]
    assert "energy MAE (kcal/mol): diverged" in drawn["labels"]
