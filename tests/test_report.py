"""`dcnn-report` on synthetic run folders: exact table cells, seed averaging, diverged and failed
runs, CSV output, Fig. 1 images and input errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from dcnn.report import main

MD17_UNITS = {"energy": "kcal/mol", "forces": "kcal/mol/Angstrom", "positions": "Angstrom"}
VARIANTS = {
    "baseline": ("original", "original", "none"),
    "dc": ("irelu", "none", "power_of_ten"),
    "standardized": ("original", "original", "standardize"),
    "irelu_only": ("irelu", "original", "none"),
}


def _config(
    task: str = "potential",
    variant: str = "baseline",
    molecule: str | None = "aspirin",
    pde: str | None = None,
    seed: int = 0,
    beta: float = 30.0,
    model: str = "dcnn.models.schnet.SchNet",
    activation: str | None = None,
    normalization: str | None = None,
) -> dict:
    default_activation, default_normalization, rescaling = VARIANTS[variant]
    dataset = {"molecule": molecule, "path": "rmd17", "n_train": 1000}
    if pde is not None:
        dataset = {"pde": pde, "path": f"{pde}.hdf5", "sample_index": -10}
    return {
        "task": task,
        "seed": seed,
        "tags": ["test"],
        "dataset": dataset,
        "model": {"_target_": model, "hidden_channels": 64},
        "activation": {"name": activation or default_activation, "scope": None},
        "normalization": {"name": normalization or default_normalization},
        "rescaling": {"name": rescaling},
        "loss": {"kind": "mae" if task == "potential" else "mse", "alpha": 1.0, "beta": beta},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.0001},
    }


def write_run(
    folder: Path,
    config: dict,
    status: str = "ok",
    test: dict | None = None,
    error: str | None = None,
    curve: list[tuple[int, float]] | None = None,
) -> Path:
    """A run folder as dcnn-train leaves it; ``curve`` adds csv/metrics.csv (train/loss)."""
    folder.mkdir(parents=True)
    record = {
        "status": status,
        "task": config["task"],
        "units": MD17_UNITS if config["task"] == "potential" and status != "failed" else {},
        "test": test or {},
        "train_last": {"loss": 1.0},
        "epochs": 5 if status == "ok" else 2,
        "wall_seconds": 12.5,
    }
    if error is not None:
        record["error"] = error
    (folder / "metrics.json").write_text(json.dumps(record))
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if curve is not None:
        (folder / "csv").mkdir()
        with open(folder / "csv" / "metrics.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", "step", "train/loss", "val/loss"])
            for step, loss in curve:
                writer.writerow([0, step, loss, ""])
            writer.writerow([0, curve[-1][0], "", 0.5])  # a validation-only row
    return folder


def _mae(energy: float, force: float) -> dict:
    return {"energy_mae": energy, "force_mae": force, "energy_rmse": 2 * energy, "loss": 1.0}


@pytest.fixture
def md17_sweep(tmp_path: Path) -> Path:
    """Multirun folder: SchNet variants on aspirin and benzene, repeated seeds, a diverged
    cell, a failed run, and a run from a second model."""
    root = tmp_path / "sweep"
    runs = [
        (_config(seed=0), "ok", _mae(50.0, 1.2), None),
        (_config(seed=1), "ok", _mae(56.0, 1.22), None),
        (_config(variant="dc", seed=0), "ok", _mae(28.31, 1.67), None),
        (_config(variant="dc", molecule="benzene", seed=0), "diverged", {}, "loss is nan"),
        (_config(variant="dc", molecule="benzene", seed=1), "diverged", {}, "loss is inf"),
        (_config(molecule="benzene", seed=0), "ok", _mae(125.43, 0.39), None),
        (_config(molecule="benzene", seed=1), "failed", {}, "RuntimeError: out of memory"),
        (_config(variant="standardized"), "ok", _mae(5.0, 0.5), None),
        (_config(variant="irelu_only"), "ok", _mae(7.0, 0.7), None),
        (_config(model="dcnn.models.cgcnn.CGCNN"), "ok", _mae(239.07, 14.2), None),
        (_config(variant="dc", seed=1), "ok", {**_mae(1.0, 1.0), "energy_mae": None}, None),
        (_config(variant="dc", seed=2), "ok", _mae(30.0, 1.7), None),
    ]
    for index, (config, status, test, error) in enumerate(runs):
        write_run(root / str(index), config, status, test, error)
    return root


def _pinn_test(mse: float, terms: dict[str, float]) -> dict:
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "nrmse": mse / 10,
        "max_error": 3 * mse,
        **{f"{name}_loss": value for name, value in terms.items()},
        "loss": sum(terms.values()),
    }


@pytest.fixture
def pinn_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "pinn"
    advection = {"pde": 0.1, "ic": 0.2, "bc": 0.3}
    cfd = {"pde": 1.0, "ic_density": 2.0, "bc_pressure": 4.0}
    runs = [
        (_config("pinn", activation="tanh", pde="advection"), "ok", _pinn_test(1.59, advection)),
        (
            _config("pinn", activation="tanh", normalization="batchnorm", pde="advection"),
            "ok",
            _pinn_test(1.70, advection),
        ),
        (_config("pinn", activation="irelu", pde="advection", seed=0), "ok", _pinn_test(1.0, cfd)),
        (_config("pinn", activation="irelu", pde="advection", seed=1), "ok", _pinn_test(0.98, cfd)),
        (
            _config("pinn", activation="irelu", normalization="batchnorm", pde="advection"),
            "diverged",
            {},
        ),
        (_config("pinn", activation="silu", pde="advection"), "ok", _pinn_test(2.0, advection)),
        (_config("pinn", activation="tanh", pde="cfd"), "ok", _pinn_test(0.87, cfd)),
    ]
    for index, (config, status, test) in enumerate(runs):
        write_run(root / str(index), config, status, test)
    return root


def _markdown_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row (header included, separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_runs_lists_every_run_with_differing_settings(md17_sweep, capsys):
    code, out, _ = _run(["runs", str(md17_sweep)], capsys)
    assert code == 0
    header, *rows = _markdown_rows(out)
    assert header == [
        "run",
        "status",
        "dataset.molecule",
        "model",
        "activation",
        "normalization",
        "rescaling",
        "seed",
        "energy_mae (kcal/mol)",
        "force_mae (kcal/mol/Angstrom)",
        "epochs",
        "error",
    ]
    assert [row[0] for row in rows] == [str(index) for index in range(12)]  # natural order
    assert [row[1] for row in rows].count("diverged") == 2
    assert rows[3][1:3] == ["diverged", "benzene"]
    assert rows[3][-1] == "loss is nan"
    assert rows[6][1] == "failed" and rows[6][-1] == "RuntimeError: out of memory"
    assert rows[6][8:10] == ["-", "-"]
    assert rows[0][2:] == ["aspirin", "SchNet", "original", "original", "none", "0"] + [
        "50",
        "1.2",
        "5",
        "-",
    ]
    assert rows[9][3] == "CGCNN"
    assert rows[10][8] == "NaN"  # ok run whose energy MAE was not finite
    assert "runs: 9 ok, 2 diverged, 1 failed" in out


def test_table1_averages_seeds_and_shows_diverged_cells(md17_sweep, capsys):
    code, out, _ = _run(["table1", str(md17_sweep)], capsys)
    assert code == 0
    header, *rows = _markdown_rows(out)
    assert header == [
        "model",
        "variant",
        "aspirin E MAE (kcal/mol)",
        "aspirin F MAE (kcal/mol/Angstrom)",
        "aspirin n",
        "benzene E MAE (kcal/mol)",
        "benzene F MAE (kcal/mol/Angstrom)",
        "benzene n",
    ]
    # mean ± standard deviation over the seeds, [the published value] where the paper has one
    assert rows == [
        ["CGCNN", "baseline", "239.1 [239.07]", "14.2 [14.20]", "1", "-", "-", "-"],
        [
            "SchNet",
            "baseline",
            "53 ± 4.243 [53.00]",
            "1.21 ± 0.01414 [1.21]",
            "2",
            "125.4 [125.43]",
            "0.39 [0.39]",
            "1/2",
        ],
        ["SchNet", "standardized", "5", "0.5", "1", "-", "-", "-"],
        # one of the three ok seeds has a non-finite energy MAE: the mean is NaN
        ["SchNet", "*", "NaN [28.31]", "1.457 ± 0.3958 [1.67]", "3", "diverged", "diverged", "0/2"],
        ["SchNet", "IReLU only", "7", "0.7", "1", "-", "-", "-"],
    ]
    assert "* = IReLU, no normalization layers, labels divided by a power of ten" in out
    assert "[x]: published value (Lo & Huang, arXiv 2310.01649v1, Table 1)" in out
    assert "budget: dataset.n_train=1000, optimizer.lr=0.0001, seeds 0, 1, 2" in out


def test_table1_with_a_row_per_molecule_holds_the_same_cells(md17_sweep, capsys):
    code, out, _ = _run(["table1", str(md17_sweep), "--rows", "molecules"], capsys)
    assert code == 0
    header, *rows = _markdown_rows(out)
    assert header[:4] == [
        "molecule",
        "CGCNN baseline E MAE (kcal/mol)",
        "CGCNN baseline F MAE (kcal/mol/Angstrom)",
        "CGCNN baseline n",
    ]
    assert header[10:13] == [
        "SchNet * E MAE (kcal/mol)",
        "SchNet * F MAE (kcal/mol/Angstrom)",
        "SchNet * n",
    ]
    assert len(header) == 1 + 5 * 3
    assert rows[0][:7] == ["aspirin", "239.1 [239.07]", "14.2 [14.20]", "1"] + [
        "53 ± 4.243 [53.00]",
        "1.21 ± 0.01414 [1.21]",
        "2",
    ]
    assert rows[1][0] == "benzene" and rows[1][10:13] == ["diverged", "diverged", "0/2"]
    assert "* = IReLU, no normalization layers, labels divided by a power of ten" in out


def test_table1_csv_has_full_precision_and_extra_setting_columns(tmp_path, capsys):
    root = tmp_path / "size_study"
    for index, (n_train, seed, energy) in enumerate([(50, 0, 1.0), (50, 1, 2.0), (200, 0, 0.5)]):
        config = _config(variant="dc", seed=seed)
        config["dataset"]["n_train"] = n_train
        write_run(root / str(index), config, test=_mae(energy, energy / 3))
    code, out, _ = _run(["table1", str(root), "--format", "csv"], capsys)
    assert code == 0
    records = list(csv.DictReader(io.StringIO(out)))
    assert [(r["variant"], r["dataset.n_train"], r["aspirin n"]) for r in records] == [
        ("*", "50", "2"),
        ("*", "200", "1"),
    ]
    assert float(records[0]["aspirin E MAE (kcal/mol)"]) == pytest.approx(1.5)
    assert float(records[0]["aspirin F MAE (kcal/mol/Angstrom)"]) == pytest.approx(0.5)
    assert records[1]["aspirin F MAE (kcal/mol/Angstrom)"] == repr(0.5 / 3)
    # The spread over seeds and the published value get columns of their own.
    assert float(records[0]["aspirin E MAE (kcal/mol) std"]) == pytest.approx(0.7071, abs=1e-4)
    assert records[1]["aspirin E MAE (kcal/mol) std"] == ""
    assert records[0]["aspirin E MAE (kcal/mol) paper"] == "28.31"


def test_pinn_tables_per_pde(pinn_sweep, md17_sweep, capsys):
    code, out, _ = _run(["pinn", str(pinn_sweep), str(md17_sweep)], capsys)
    assert code == 0
    assert out.index("### advection") < out.index("### cfd")
    advection_text, cfd_text = out.split("### cfd")
    header, *rows = _markdown_rows(advection_text)
    # loss terms in the order first seen (advection runs with cfd-named terms add columns)
    assert header == [
        "variant",
        "mse",
        "rmse",
        "nrmse",
        "pde_loss",
        "ic_loss",
        "bc_loss",
        "ic_density_loss",
        "bc_pressure_loss",
        "n",
    ]
    assert rows == [
        ["Tanh", "1.59", "1.261", "0.159 [1.59]", "0.1", "0.2", "0.3", "-", "-", "1"],
        ["Tanh+BN", "1.7", "1.304", "0.17 [1.70]", "0.1", "0.2", "0.3", "-", "-", "1"],
        [
            "IReLU",
            "0.99 ± 0.01414",
            "0.995 ± 0.007107",
            "0.099 ± 0.001414 [0.99]",
            "1 ± 0",
            "-",
            "-",
            "2 ± 0",
            "4 ± 0",
            "2",
        ],
        ["IReLU+BN", *["diverged"] * 8, "0/1"],  # every cell says why it is empty
        ["silu", "2", "1.414", "0.2", "0.1", "0.2", "0.3", "-", "-", "1"],
    ]
    assert "skipped 12 runs of other tasks" in advection_text
    _, *cfd_rows = _markdown_rows(cfd_text)
    assert cfd_rows == [["Tanh", "0.87", "0.9327", "0.087 [0.87]", "1", "2", "4", "1"]]


def test_pinn_csv_stacks_tables_with_a_pde_column(pinn_sweep, tmp_path, capsys):
    out_file = tmp_path / "tables" / "pinn.csv"
    code, out, _ = _run(
        ["pinn", str(pinn_sweep), "--format", "csv", "--out", str(out_file)], capsys
    )
    assert code == 0 and str(out_file) in out
    records = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert [(r["pde"], r["variant"]) for r in records] == [
        ("advection", "Tanh"),
        ("advection", "Tanh+BN"),
        ("advection", "IReLU"),
        ("advection", "IReLU+BN"),
        ("advection", "silu"),
        ("cfd", "Tanh"),
    ]
    assert float(records[2]["mse"]) == pytest.approx(0.99)
    assert records[3]["mse"] == "diverged"
    assert records[5]["ic_loss"] == ""


def test_out_is_never_overwritten_without_flag(md17_sweep, tmp_path, capsys):
    out_file = tmp_path / "runs.md"
    out_file.write_text("keep me")
    code, _, err = _run(["runs", str(md17_sweep), "--out", str(out_file)], capsys)
    assert code == 1
    assert str(out_file) in err and "--overwrite" in err
    assert out_file.read_text() == "keep me"
    code, _, _ = _run(["runs", str(md17_sweep), "--out", str(out_file), "--overwrite"], capsys)
    assert code == 0
    assert out_file.read_text().startswith("### 12 runs")


def _beta_sweep(root: Path, with_curves: bool) -> Path:
    for index, (beta, energy, force) in enumerate(
        [(0.1, 10.0, 3.0), (1, 20.0, 1.0), (10, 40.0, 0.5)]
    ):
        curve = [(step, 10.0 / (1 + step * beta)) for step in range(0, 50, 10)]
        write_run(
            root / str(index),
            _config(beta=beta),
            test=_mae(energy, force),
            curve=curve if with_curves else None,
        )
    write_run(root / "3", _config(beta=100), status="diverged", error="loss is nan")
    return root


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_fig1_writes_both_panels_or_only_the_mae_panel(tmp_path, capsys):
    with_logs = tmp_path / "with_logs.png"
    code, out, err = _run(
        ["fig1", str(_beta_sweep(tmp_path / "a", True)), "--out", str(with_logs)], capsys
    )
    assert code == 0 and str(with_logs) in out
    assert "energy MAE (kcal/mol): no finite value at 100 (diverged); marked at the foot" in err
    without_logs = tmp_path / "without_logs.png"
    code, _, err = _run(
        ["fig1", str(_beta_sweep(tmp_path / "b", False)), "--out", str(without_logs)], capsys
    )
    assert code == 0
    assert "plotted the test-MAE panel only" in err
    two_panels, one_panel = _png_size(with_logs), _png_size(without_logs)
    assert two_panels[0] > 1.5 * one_panel[0] and two_panels[1] == one_panel[1]


def test_fig1_rejects_runs_that_are_not_one_beta_sweep(md17_sweep, tmp_path, capsys):
    out_file = tmp_path / "fig.png"
    code, _, err = _run(["fig1", str(md17_sweep), "--out", str(out_file)], capsys)
    assert code == 1
    assert "dataset.molecule = aspirin, benzene" in err
    assert not out_file.exists()


def test_folder_without_runs_exits_2(tmp_path, md17_sweep, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    code, _, err = _run(["runs", str(md17_sweep), str(empty)], capsys)
    assert code == 2
    assert str(empty) in err and "metrics.json" in err
    code, _, err = _run(["table1", str(tmp_path / "missing")], capsys)
    assert code == 2 and "no such folder" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"status": "ok"}', "missing key(s) task, units, test"),
        ("STATUS", "status='finished'; expected one of"),
        ("VALUE", "test.energy_mae='12'; expected a number or null"),
    ],
)
def test_malformed_metrics_json_names_file_and_problem(tmp_path, capsys, content, expected):
    folder = write_run(tmp_path / "run", _config(), test=_mae(1.0, 1.0))
    record = json.loads((folder / "metrics.json").read_text())
    if content == "STATUS":
        content = json.dumps({**record, "status": "finished"})
    elif content == "VALUE":
        content = json.dumps({**record, "test": {"energy_mae": "12"}})
    (folder / "metrics.json").write_text(content)
    code, _, err = _run(["runs", str(tmp_path)], capsys)
    assert code == 1
    assert str(folder / "metrics.json") in err and expected in err


def test_missing_config_is_named(tmp_path, capsys):
    folder = write_run(tmp_path / "run", _config(), test=_mae(1.0, 1.0))
    (folder / "config_resolved.yaml").unlink()
    code, _, err = _run(["runs", str(folder)], capsys)
    assert code == 1 and str(folder / "config_resolved.yaml") in err


def test_table_commands_need_runs_of_their_task(md17_sweep, capsys):
    code, _, err = _run(["pinn", str(md17_sweep)], capsys)
    assert code == 1 and "task=pinn" in err


def test_fig1_of_runs_shorter_than_the_logging_interval_says_how_to_get_curves(tmp_path, capsys):
    """A short sweep logs no training-loss row when trainer.log_every_n_steps exceeds its steps."""
    sweep = _beta_sweep(tmp_path / "short", with_curves=False)
    for index in ("0", "1", "2"):
        (sweep / index / "csv").mkdir()
        (sweep / index / "csv" / "metrics.csv").write_text("epoch,step,val/loss\n0,5,0.5\n")
        config = yaml.safe_load((sweep / index / "config_resolved.yaml").read_text())
        config["trainer"] = {"log_every_n_steps": 50}
        (sweep / index / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    code, _, err = _run(["fig1", str(sweep), "--out", str(tmp_path / "fig.png")], capsys)
    assert code == 0
    assert "no training-loss rows in 0, 1, 2" in err
    assert "trainer.log_every_n_steps=50" in err and "smaller trainer.log_every_n_steps" in err


def test_runs_moved_aside_by_a_relaunch_are_not_reported(md17_sweep, capsys):
    write_run(md17_sweep / "0" / "previous" / "1-failed", _config(), status="failed", error="x")
    code, out, _ = _run(["runs", str(md17_sweep)], capsys)
    assert code == 0 and "previous" not in out and "### 12 runs" in out


def test_interrupted_runs_are_listed_with_their_status(tmp_path, capsys):
    write_run(tmp_path / "0", _config(), test=_mae(1.0, 0.5))
    write_run(tmp_path / "1", _config(seed=1), status="interrupted")
    code, out, _ = _run(["runs", str(tmp_path)], capsys)
    assert code == 0 and "| interrupted |" in out and "1 interrupted" in out


def test_cells_of_a_study_under_way_say_interrupted_and_runs_lacking_a_metric_count_as_nan(
    tmp_path,
):
    from dcnn.report.runs import find_runs
    from dcnn.report.tables import aggregate_metric, summarize

    write_run(tmp_path / "0", _config(), status="interrupted")
    write_run(tmp_path / "1", _config(seed=1), test=_mae(1.0, 0.5))
    write_run(tmp_path / "2", _config(seed=2), test={"energy_mae": 3.0})
    interrupted, *ok = find_runs([tmp_path])
    assert aggregate_metric([interrupted], "energy_mae") == "interrupted"
    assert summarize(ok, "energy_mae").mean == 2.0
    assert math.isnan(summarize(ok, "force_mae").mean)  # one ok run has no force MAE


def _size_sweep(root: Path) -> Path:
    """fig2 input: two variants x three sizes, two seeds at 100 frames, one diverged size."""
    runs = [
        ("dc", 100, 0, "ok", 40.0, 2.0),
        ("dc", 100, 1, "ok", 44.0, 2.2),
        ("dc", 400, 0, "ok", 20.0, 1.0),
        ("dc", 1600, 0, "diverged", None, None),
        ("standardized", 100, 0, "ok", 10.0, 1.5),
        ("standardized", 400, 0, "ok", 5.0, 0.8),
        ("standardized", 1600, 0, "ok", 2.5, 0.4),
    ]
    for index, (variant, n_train, seed, status, energy, force) in enumerate(runs):
        config = _config(variant=variant, seed=seed)
        config["dataset"]["n_train"] = n_train
        test = _mae(energy, force) if status == "ok" else {}
        write_run(root / str(index), config, status, test, None if status == "ok" else "nan")
    return root


def test_fig2_plots_mae_against_training_size_per_variant_and_marks_divergence(tmp_path, capsys):
    out_file = tmp_path / "fig2.png"
    code, out, err = _run(
        ["fig2", str(_size_sweep(tmp_path / "sizes")), "--out", str(out_file)], capsys
    )
    assert code == 0 and str(out_file) in out
    width, height = _png_size(out_file)
    assert width > 1.8 * height  # two panels side by side
    assert "energy MAE, *: no finite value at 1600 (diverged); marked at the foot" in err
    assert "force MAE, *: no finite value at 1600 (diverged)" in err
    assert "standardized" not in err  # every size of that variant has a value


def test_fig2_rejects_runs_that_differ_in_more_than_size_seed_and_variant(tmp_path, capsys):
    root = _size_sweep(tmp_path / "sizes")
    other = _config(variant="dc", beta=1.0)
    other["dataset"]["n_train"] = 100
    write_run(root / "9", other, test=_mae(1.0, 1.0))
    code, _, err = _run(["fig2", str(root), "--out", str(tmp_path / "f.png")], capsys)
    assert code == 1 and "differ in loss.beta = 1.0, 30.0" in err


def test_fig1_marks_diverged_betas_on_the_plot(tmp_path, capsys):
    """The diverged run's curve is drawn (dashed) and its beta marked, both with a legend entry."""
    from matplotlib.figure import Figure

    drawn = {}
    original_savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn["labels"] = [text.get_text() for ax in self.axes for text in ax.get_legend().texts]
        return original_savefig(self, *args, **kwargs)

    root = _beta_sweep(tmp_path / "a", True)
    (root / "3" / "csv").mkdir()
    (root / "3" / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,5.0\n0,10,80.0\n")
    Figure.savefig = keep
    try:
        code, _, _ = _run(["fig1", str(root), "--out", str(tmp_path / "f.png")], capsys)
    finally:
        Figure.savefig = original_savefig
    assert code == 0
    assert "β = 100 (diverged)" in drawn["labels"]
    assert "energy MAE (kcal/mol): diverged" in drawn["labels"]


def test_ablation_tables_are_laid_out_like_the_papers_appendix(md17_sweep, tmp_path, capsys):
    write_run(
        md17_sweep / "20", _config(variant="irelu_only", molecule="benzene"), test=_mae(9.0, 0.9)
    )
    code, out, _ = _run(["ablations", str(md17_sweep)], capsys)
    assert code == 0
    titles = [line for line in out.splitlines() if line.startswith("### ")]
    assert titles == [
        "### Table 7: IReLU alone (raw labels, normalization layers kept): test MAE",
        "### Table 8: IReLU with denormalization and power-of-ten rescaling: test MAE",
    ]
    table7 = _markdown_rows(out.split("### Table 8")[0])
    assert table7[1] == ["SchNet", "IReLU only", "7", "0.7", "1", "9", "0.9", "1"]
    code, _, err = _run(["ablations", str(_beta_sweep(tmp_path / "b", False))], capsys)
    assert code == 1 and "ablations needs runs of IReLU only, *, denorm + rescale" in err


def test_wandb_summary_logs_tables_and_figures_in_the_sweeps_group(tmp_path, capsys, monkeypatch):
    from helpers import wait_for_wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    root = _size_sweep(tmp_path / "outputs" / "multiruns" / "2026-12-01" / "10-00-00")
    code, out, err = _run(["wandb", str(root)], capsys)
    assert code == 0 and "logged the study summary to W&B" in out
    assert "fig1: not logged" in err and "pinn: not logged" in err  # they do not apply here
    records = wait_for_wandb_run(root)
    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.run_group == "2026-12-01_10-00-00" and run.job_type == "study-summary"
    logged = {  # a logged table or image is a nested entry: (key, "_type")
        (item.nested_key[0], json.loads(item.value_json))
        for r in records
        if r.HasField("history")
        for item in r.history.item
        if list(item.nested_key[1:]) == ["_type"]
    }
    assert logged == {
        ("runs", "table-file"),
        ("table1", "table-file"),
        ("ablations", "table-file"),
        ("fig2", "image-file"),
    }
    images = list((root / "wandb").glob("offline-run-*/files/media/images/fig2*.png"))
    tables = list((root / "wandb").glob("offline-run-*/files/media/table/table1*.table.json"))
    assert len(images) == 1 and len(tables) == 1
    content = json.loads(tables[0].read_text())
    assert "aspirin E MAE (kcal/mol) std" in content["columns"]


def _pathologies_run(pde, model, weighting, activation="tanh", seed=0, form="paper") -> dict:
    config = _config("pinn", activation=activation, pde=pde, seed=seed, model=model)
    form_key = {"form": form} if weighting == "annealing" else {}
    config["weighting"] = {"name": weighting, **form_key}
    return config


def test_pathologies_table_has_the_papers_methods_as_columns(tmp_path, capsys):
    mlp, modified = "dcnn.models.mlp.MLP", "dcnn.models.mlp.ModifiedMLP"
    root = tmp_path / "pathologies"
    runs = [
        (_pathologies_run("helmholtz", mlp, "fixed", seed=0), 0.1),
        (_pathologies_run("helmholtz", mlp, "fixed", seed=1), 0.12),
        (_pathologies_run("helmholtz", mlp, "annealing"), 0.02),
        (_pathologies_run("helmholtz", modified, "fixed"), 0.03),
        (_pathologies_run("helmholtz", modified, "annealing"), 0.005),
        (_pathologies_run("helmholtz", mlp, "relobralo"), 0.04),
        (_pathologies_run("helmholtz", mlp, "fixed", activation="irelu"), 0.5),
        (_pathologies_run("helmholtz", modified, "annealing", activation="irelu"), None),
        (_pathologies_run("klein_gordon", modified, "annealing", form="code"), 0.003),
        (_pathologies_run("klein_gordon", modified, "annealing", form="paper"), 0.004),
    ]
    for index, (config, rel_l2) in enumerate(runs):
        status, test = ("diverged", {}) if rel_l2 is None else ("ok", {"rel_l2": rel_l2})
        write_run(root / str(index), config, status, test)
    code, out, _ = _run(["pathologies", str(root)], capsys)
    assert code == 0
    helmholtz_text, klein_gordon_text = out.split("### klein_gordon")
    header, *rows = _markdown_rows(helmholtz_text)
    assert header == ["activation", "M1", "M2", "M3", "M4", "MLP + relobralo", "M1/M4", "n"]
    assert rows == [
        ["IReLU", "0.5", "-", "-", "diverged", "-", "-", "1/2"],  # published values: tanh only
        [
            "Tanh",
            "0.11 ± 0.01414 [1.06e-1]",
            "0.02 [1.12e-2]",
            "0.03 [2.46e-2]",
            "0.005 [3.87e-3]",
            "0.04",
            "22",
            "6",
        ],
    ]
    # both annealing forms in one table: each gets its own column, published beside both
    header, *rows = _markdown_rows(klein_gordon_text)
    assert header == ["activation", "M4 (code)", "M4 (paper)", "M1/M4", "n"]
    assert rows == [["Tanh", "0.003 [2.81e-3]", "0.004 [2.81e-3]", "-", "2"]]
    assert "Wang, Teng & Perdikaris" in out
