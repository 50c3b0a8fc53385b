"""End to end: `dcnn-train` on real aspirin frames, multiruns, W&B offline, divergence, failures."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, compose_train

from dcnn.data.readers import DataNotFoundError
from dcnn.train import run

TINY = [
    "dataset.n_train=60",
    "dataset.n_val=20",
    "dataset.n_test=40",
    "dataset.batch_size=10",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optimizer.lr=2e-3",
    "model.hidden_channels=32",
    "model.num_filters=32",
    "model.num_interactions=2",
    "model.num_gaussians=16",
]


def _train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]


@pytest.fixture(autouse=True)
def _data_root_env(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_tiny_training_on_aspirin_lowers_the_loss_and_writes_metrics(tmp_path):
    cfg = compose_train([*TINY, "experiment=md17_dc", "logger=csv"])
    result = run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok" == result["status"]
    assert record["task"] == "potential"
    assert record["units"]["energy"] == "kcal/mol"
    for key in ("energy_mae", "force_mae", "energy_rmse", "force_rmse"):
        assert 0 < record["test"][key] < 1e7
    assert record["test"]["energy_rmse"] >= record["test"]["energy_mae"]
    assert set(record["train_last"]) >= {"energy", "forces", "loss"}
    assert record["epochs"] == 4 and record["wall_seconds"] > 0
    losses = _train_losses(tmp_path)
    assert len(losses) == 24
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
    assert "IReLU" in (tmp_path / "surgery.txt").read_text()
    assert (tmp_path / "config_resolved.yaml").exists()


def test_baseline_metrics_are_in_dataset_units(tmp_path):
    """Rescaled and raw-label runs must report in kcal/mol: compare against label spread."""
    cfg = compose_train([*TINY, "experiment=md17_standardized", "trainer.max_epochs=1"])
    record = run(cfg, tmp_path)
    # A standardized model starts near the mean energy: errors are a few kcal/mol, not 1e-3.
    assert 0.5 < record["test"]["energy_mae"] < 100
    assert 1 < record["test"]["force_mae"] < 200


def test_diverged_run_is_recorded_and_does_not_raise(tmp_path):
    # A scale of 1e-300 turns every label into inf: the first loss is not finite.
    cfg = compose_train([*TINY, "rescaling=fixed", "rescaling.scale=1e-300"])
    result = run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert result["status"] == record["status"] == "diverged"
    assert "non-finite train loss" in record["error"]


def test_failed_run_is_recorded_and_raised(tmp_path):
    cfg = compose_train([*TINY, "dataset.molecule=unobtainium"])
    with pytest.raises(Exception, match="unobtainium"):
        run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "unobtainium" in record["error"]


def test_missing_data_root_explains_where_to_get_data(tmp_path, monkeypatch):
    monkeypatch.delenv("DCNN_DATA_ROOT")
    cfg = compose_train([*TINY])
    with pytest.raises(DataNotFoundError, match="DCNN_DATA_ROOT") as info:
        run(cfg, tmp_path)
    assert "figshare" in str(info.value)


def test_wandb_offline_run_folder_holds_logged_metrics(tmp_path):
    cfg = compose_train([*TINY, "logger=wandb", "trainer.max_epochs=1"])
    run(cfg, tmp_path)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    # The offline log is the protobuf record stream `wandb sync` uploads; keys are stored verbatim.
    (log_file,) = run_dir.glob("run-*.wandb")
    records = log_file.read_bytes()
    for key in (b"train/energy_loss", b"val/energy_mae", b"test/force_mae", b"weight/forces"):
        assert key in records, key
    assert b"surgery" in records and b"irelu" in records  # resolved config + surgery report


def test_cli_multirun_writes_one_metrics_file_per_job(tmp_path):
    command = [
        sys.executable,
        "-m",
        "dcnn.train",
        "-m",
        "loss.beta=1,100",
        *TINY,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/metrics.json"))]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert "energy_mae" in done.stdout
