"""`dcnn-report`'s tables on synthetic run folders: exact table cells, seed averaging, diverged
and failed runs, CSV output, the W&B summary and input errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from report_runs import (
    beta_sweep,
    mae,
    markdown_rows,
    md17_sweep,
    report,
    run_config,
    size_sweep,
    write_run,
)

__all__ = ["md17_sweep"]  # a fixture: pytest finds it here


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
        (run_config("pinn", activation="tanh", pde="advection"), "ok", _pinn_test(1.59, advection)),
        (
            run_config("pinn", activation="tanh", normalization="batchnorm", pde="advection"),
            "ok",
            _pinn_test(1.70, advection),
        ),
        (
            run_config("pinn", activation="irelu", pde="advection", seed=0),
            "ok",
            _pinn_test(1.0, cfd),
        ),
        (
            run_config("pinn", activation="irelu", pde="advection", seed=1),
            "ok",
            _pinn_test(0.98, cfd),
        ),
        (
            run_config("pinn", activation="irelu", normalization="batchnorm", pde="advection"),
            "diverged",
            {},
        ),
        (run_config("pinn", activation="silu", pde="advection"), "ok", _pinn_test(2.0, advection)),
        (run_config("pinn", activation="tanh", pde="cfd"), "ok", _pinn_test(0.87, cfd)),
    ]
    for index, (config, status, test) in enumerate(runs):
        write_run(root / str(index), config, status, test)
    return root


def test_runs_lists_every_run_with_differing_settings(md17_sweep, capsys):
    code, out, _ = report(["runs", str(md17_sweep)], capsys)
    assert code == 0
    header, *rows = markdown_rows(out)
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
    code, out, _ = report(["table1", str(md17_sweep)], capsys)
    assert code == 0
    header, *rows = markdown_rows(out)
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
    code, out, _ = report(["table1", str(md17_sweep), "--rows", "molecules"], capsys)
    assert code == 0
    header, *rows = markdown_rows(out)
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
        config = run_config(variant="dc", seed=seed)
        config["dataset"]["n_train"] = n_train
        write_run(root / str(index), config, test=mae(energy, energy / 3))
    code, out, _ = report(["table1", str(root), "--format", "csv"], capsys)
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
    code, out, _ = report(["pinn", str(pinn_sweep), str(md17_sweep)], capsys)
    assert code == 0
    assert out.index("### advection") < out.index("### cfd")
    advection_text, cfd_text = out.split("### cfd")
    header, *rows = markdown_rows(advection_text)
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
    _, *cfd_rows = markdown_rows(cfd_text)
    assert cfd_rows == [["Tanh", "0.87", "0.9327", "0.087 [0.87]", "1", "2", "4", "1"]]


def test_pinn_csv_stacks_tables_with_a_pde_column(pinn_sweep, tmp_path, capsys):
    out_file = tmp_path / "tables" / "pinn.csv"
    code, out, _ = report(
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
    code, _, err = report(["runs", str(md17_sweep), "--out", str(out_file)], capsys)
    assert code == 1
    assert str(out_file) in err and "--overwrite" in err
    assert out_file.read_text() == "keep me"
    code, _, _ = report(["runs", str(md17_sweep), "--out", str(out_file), "--overwrite"], capsys)
    assert code == 0
    assert out_file.read_text().startswith("### 12 runs")


def test_folder_without_runs_exits_2(tmp_path, md17_sweep, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    code, _, err = report(["runs", str(md17_sweep), str(empty)], capsys)
    assert code == 2
    assert str(empty) in err and "metrics.json" in err
    code, _, err = report(["table1", str(tmp_path / "missing")], capsys)
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
    folder = write_run(tmp_path / "run", run_config(), test=mae(1.0, 1.0))
    record = json.loads((folder / "metrics.json").read_text())
    if content == "STATUS":
        content = json.dumps({**record, "status": "finished"})
    elif content == "VALUE":
        content = json.dumps({**record, "test": {"energy_mae": "12"}})
    (folder / "metrics.json").write_text(content)
    code, _, err = report(["runs", str(tmp_path)], capsys)
    assert code == 1
    assert str(folder / "metrics.json") in err and expected in err


def test_missing_config_is_named(tmp_path, capsys):
    folder = write_run(tmp_path / "run", run_config(), test=mae(1.0, 1.0))
    (folder / "config_resolved.yaml").unlink()
    code, _, err = report(["runs", str(folder)], capsys)
    assert code == 1 and str(folder / "config_resolved.yaml") in err


def test_table_commands_need_runs_of_their_task(md17_sweep, capsys):
    code, _, err = report(["pinn", str(md17_sweep)], capsys)
    assert code == 1 and "task=pinn" in err


def test_runs_moved_aside_by_a_relaunch_are_not_reported(md17_sweep, capsys):
    write_run(md17_sweep / "0" / "previous" / "1-failed", run_config(), status="failed", error="x")
    code, out, _ = report(["runs", str(md17_sweep)], capsys)
    assert code == 0 and "previous" not in out and "### 12 runs" in out


def test_interrupted_runs_are_listed_with_their_status(tmp_path, capsys):
    write_run(tmp_path / "0", run_config(), test=mae(1.0, 0.5))
    write_run(tmp_path / "1", run_config(seed=1), status="interrupted")
    code, out, _ = report(["runs", str(tmp_path)], capsys)
    assert code == 0 and "| interrupted |" in out and "1 interrupted" in out


def test_cells_of_a_study_under_way_say_interrupted_and_runs_lacking_a_metric_count_as_nan(
    tmp_path,
):
    from dcnn.report.runs import find_runs
    from dcnn.report.tables import aggregate_metric, summarize

    write_run(tmp_path / "0", run_config(), status="interrupted")
    write_run(tmp_path / "1", run_config(seed=1), test=mae(1.0, 0.5))
    write_run(tmp_path / "2", run_config(seed=2), test={"energy_mae": 3.0})
    interrupted, *ok = find_runs([tmp_path])
    assert aggregate_metric([interrupted], "energy_mae") == "interrupted"
    assert summarize(ok, "energy_mae").mean == 2.0
    assert math.isnan(summarize(ok, "force_mae").mean)  # one ok run has no force MAE


def test_ablation_tables_are_laid_out_like_the_papers_appendix(md17_sweep, tmp_path, capsys):
    write_run(
        md17_sweep / "20", run_config(variant="irelu_only", molecule="benzene"), test=mae(9.0, 0.9)
    )
    code, out, _ = report(["ablations", str(md17_sweep)], capsys)
    assert code == 0
    titles = [line for line in out.splitlines() if line.startswith("### ")]
    assert titles == [
        "### Table 7: IReLU alone (raw labels, normalization layers kept): test MAE",
        "### Table 8: IReLU with denormalization and power-of-ten rescaling: test MAE",
    ]
    table7 = markdown_rows(out.split("### Table 8")[0])
    assert table7[1] == ["SchNet", "IReLU only", "7", "0.7", "1", "9", "0.9", "1"]
    code, _, err = report(["ablations", str(beta_sweep(tmp_path / "b", False))], capsys)
    assert code == 1 and "ablations needs runs of IReLU only, *, denorm + rescale" in err


def test_wandb_summary_logs_tables_and_figures_in_the_sweeps_group(tmp_path, capsys, monkeypatch):
    from helpers import wait_for_wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    root = size_sweep(tmp_path / "outputs" / "multiruns" / "2026-12-01" / "10-00-00")
    code, out, err = report(["wandb", str(root)], capsys)
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
    config = run_config("pinn", activation=activation, pde=pde, seed=seed, model=model)
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
    code, out, _ = report(["pathologies", str(root)], capsys)
    assert code == 0
    helmholtz_text, klein_gordon_text = out.split("### klein_gordon")
    header, *rows = markdown_rows(helmholtz_text)
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
    header, *rows = markdown_rows(klein_gordon_text)
    assert header == ["activation", "M4 (code)", "M4 (paper)", "M1/M4", "n"]
    assert rows == [["Tanh", "0.003 [2.81e-3]", "0.004 [2.81e-3]", "-", "2"]]
    assert "Wang, Teng & Perdikaris" in out
