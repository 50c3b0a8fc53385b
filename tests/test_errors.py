"""Bad input and runaway runs: each message names the setting or file and says what to do."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, compose_train

from dcnn.data.atoms import DataError
from dcnn.data.generate import generate_advection
from dcnn.data.readers import DataNotFoundError
from dcnn.surgery import SurgeryError
from dcnn.train import run


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))


def test_a_missing_pdebench_file_says_how_to_make_it(tmp_path):
    cfg = compose_train(["experiment=pinn_cfd", f"pde_data_root={tmp_path}"])
    with pytest.raises(DataNotFoundError) as info:
        run(cfg, tmp_path / "run")
    message = str(info.value)
    assert "dcnn-data cfd" in message and "DCNN_PDE_DATA_ROOT" in message
    assert str(tmp_path) in message and "figshare" not in message


def test_no_training_frames_is_said_as_such(tmp_path):
    with pytest.raises(DataError, match=r"dataset.n_train=0: a run needs training frames"):
        run(compose_train([*TINY, "dataset.n_train=0"]), tmp_path)


def test_a_scope_without_an_activation_to_put_there_is_an_error(tmp_path):
    cfg = compose_train([*TINY, "activation=original", "activation.scope=output"])
    with pytest.raises(SurgeryError, match="keeps the model's own activations"):
        run(cfg, tmp_path)


def test_a_pinn_run_that_blows_up_without_nan_is_recorded_as_diverged(tmp_path):
    root = tmp_path / "pdebench"
    generate_advection(
        root / "1D_Advection_Sols_beta0.1.hdf5", n_samples=10, nx=64, nt=41, progress=False
    )
    overrides = [
        "experiment=pinn_advection",
        f"pde_data_root={root}",
        "dataset.n_domain=200",
        "dataset.n_boundary=100",
        "dataset.n_initial=200",
        "trainer.max_steps=150",
        "trainer.enable_progress_bar=false",
        "optimizer.lr=1e10",
    ]
    result = run(compose_train(overrides), tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["status"] == recorded["status"] == "diverged"
    assert "over divergence_ratio=1e+06 times their first value" in recorded["error"]
    assert "for divergence_patience=100 steps" in recorded["error"]
    # Without the bound the same run ends "ok" with a meaningless error.
    unbounded = run(compose_train([*overrides, "divergence_ratio=null"]), tmp_path / "unbounded")
    assert unbounded["status"] == "ok" and unbounded["test"]["nrmse"] > 1e3


def test_a_spike_the_run_recovers_from_is_not_divergence():
    from dcnn.tasks.common import DerivativeTask, DivergedError
    from dcnn.tasks.weighting import FixedWeights

    task = DerivativeTask(
        {"a": 1.0}, FixedWeights(), torch.optim.Adam, divergence_ratio=10, divergence_patience=3
    )
    for value in (1.0, 500.0, 50.0, 2.0, 20.0, 30.0):  # spikes, back below 10 x the first
        task._check_divergence("train", value, {"a": value})
    with pytest.raises(DivergedError, match="for divergence_patience=3 steps"):
        task._check_divergence("train", 40.0, {"a": 40.0})  # the third step in a row above
    with pytest.raises(ValueError, match="divergence_patience=0"):
        DerivativeTask({"a": 1.0}, FixedWeights(), torch.optim.Adam, divergence_patience=0)
