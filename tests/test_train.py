"""End to end: `dcnn-train` on real aspirin frames, multiruns, W&B offline, divergence, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import TINY, compose_train, wait_for_wandb_run

from dcnn.data.readers import DataNotFoundError
from dcnn.train import run


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


def _wandb_values(records, kind: str) -> dict[str, object]:
    """The last value of each key of the W&B records of one kind (config or summary)."""
    values = {}
    for record in records:
        if record.HasField(kind):
            values.update({u.key: json.loads(u.value_json) for u in getattr(record, kind).update})
    return values


def test_wandb_offline_run_holds_curves_config_status_and_group(tmp_path):
    cfg = compose_train([*TINY, "logger=wandb", "trainer.max_epochs=1", "tags=[study]"])
    run(cfg, tmp_path, ["loss.beta=30", "logger=wandb"], group="2026-12-01_15-26-31")
    records = wait_for_wandb_run(tmp_path)  # the writer may still be flushing after finish()
    history_keys = {
        item.key or "/".join(item.nested_key)
        for r in records
        if r.HasField("history")
        for item in r.history.item
    }
    assert {
        "train/energy_loss",
        "val/energy_mae",
        "test/force_mae",
        "weight/forces",
    } <= history_keys
    config = _wandb_values(records, "config")
    assert config["rescaling"] == {"name": "standardize"}  # as the user wrote it ...
    assert set(config["label_scaler"]) == {"scale", "shift_per_atom"}  # ... the fit beside it
    assert config["activation"]["name"] == "irelu" and "surgery" in config
    assert _wandb_values(records, "summary")["status"] == "ok"
    (run_record,) = [r.run for r in records if r.HasField("run")]
    assert run_record.run_group == "2026-12-01_15-26-31"
    assert run_record.display_name == "loss.beta=30" and list(run_record.tags) == ["study"]
    (exit_record,) = [r.exit for r in records if r.HasField("exit")]
    assert exit_record.exit_code == 0
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # CSV is written beside W&B


def test_a_diverged_wandb_run_says_so_and_closes_as_failed(tmp_path):
    overrides = [*TINY, "logger=wandb", "rescaling=fixed", "rescaling.scale=1e-300"]
    assert run(compose_train(overrides), tmp_path)["status"] == "diverged"
    records = wait_for_wandb_run(tmp_path)
    assert _wandb_values(records, "summary")["status"] == "diverged"
    (exit_record,) = [r.exit for r in records if r.HasField("exit")]
    assert exit_record.exit_code == 1


def test_annealing_balances_the_energy_against_the_forces_by_default(tmp_path):
    cfg = compose_train([*TINY, "trainer.max_epochs=1", "weighting=annealing", "weighting.every=2"])
    assert run(cfg, tmp_path)["status"] == "ok"
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("weight/energy")]
    energy_weights = {float(row["weight/energy"]) for row in rows}
    forces_weights = {float(row["weight/forces"]) for row in rows}
    assert forces_weights == {30.0}  # the reference term keeps its configured weight
    assert len(energy_weights) > 1 and 1.0 not in energy_weights  # the energy's was adapted
