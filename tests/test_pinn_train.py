"""PINN runs end to end on files written by `dcnn-data` (PDEBench layout)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import compose_train

from dcnn.data.generate import generate_advection, generate_cfd, generate_diffreact
from dcnn.train import run

TINY = [
    "dataset.n_domain=200",
    "dataset.n_boundary=100",
    "dataset.n_initial=200",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=csv",
]


@pytest.fixture(scope="module")
def pde_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pdebench")
    generate_advection(
        root / "1D_Advection_Sols_beta0.1.hdf5", n_samples=10, nx=64, nt=41, progress=False
    )
    generate_cfd(
        root / "1D_CFD_Rand_Eta1.e-8_Zeta1.e-8_periodic_Train.hdf5",
        n_samples=10,
        nx=32,
        nt=21,
        t_final=0.2,
        progress=False,
    )
    generate_diffreact(
        root / "2D_diff-react_NA_NA.h5", n_samples=10, nx=8, nt=21, t_final=1.0, progress=False
    )
    return root


def _first_and_last(run_dir, term):
    import csv

    with open(run_dir / "csv" / "metrics.csv") as handle:
        values = [
            float(r[f"train/{term}_loss"])
            for r in csv.DictReader(handle)
            if r.get(f"train/{term}_loss")
        ]
    return values[0], values[-1]


def test_advection_training_lowers_every_term_and_writes_metrics(tmp_path, pde_root):
    cfg = compose_train(
        [
            "experiment=pinn_advection",
            f"pde_data_root={pde_root}",
            *TINY,
            "trainer.max_steps=150",
            "dataset.steps_per_epoch=50",
        ]
    )
    run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok" and record["task"] == "pinn"
    for key in ("mse", "rmse", "nrmse", "max_error", "pde_loss", "ic_loss", "bc_loss"):
        assert record["test"][key] is not None and record["test"][key] >= 0
    assert record["test"]["nrmse"] < 1.5
    assert set(record["train_last"]) == {"pde", "ic", "bc", "loss"}
    for term in ("pde", "ic", "bc"):
        first, last = _first_and_last(tmp_path, term)
        assert last < first, f"{term}: {first} -> {last}"


@pytest.mark.parametrize(
    "experiment,extra",
    [
        ("pinn_cfd", ["activation=irelu", "normalization=batchnorm"]),
        ("pinn_diffreact", ["weighting=annealing", "weighting.every=2"]),
        ("pinn_diffreact", ["protocol=pdebench", "dataset.n_initial_residual=30"]),
    ],
)
def test_cfd_and_diffreact_variants_run(tmp_path, pde_root, experiment, extra):
    cfg = compose_train(
        [
            f"experiment={experiment}",
            f"pde_data_root={pde_root}",
            *TINY,
            "trainer.max_steps=6",
            "dataset.steps_per_epoch=3",
            *extra,
        ]
    )
    run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok"
    terms = {k.removesuffix("_loss") for k in record["test"] if k.endswith("_loss")}
    expected = {
        "pinn_cfd": {
            "pde",
            "ic_density",
            "ic_velocity",
            "ic_pressure",
            "bc_density",
            "bc_velocity",
            "bc_pressure",
        },
        "pinn_diffreact": {"pde", "bc", "ic_u", "ic_v"},
    }[experiment]
    if "protocol=pdebench" in extra:  # PDEBench's data term, residual on every training point
        expected = expected | {"data"}
        sizes = record["info"]["data"]
        assert sizes["domain"] == cfg.dataset.n_domain + 30 + cfg.dataset.n_boundary
    assert terms == expected
    assert "rmse_density" in record["test"] or "rmse_u" in record["test"]


def test_batchnorm_is_inserted_and_irelu_swapped(tmp_path, pde_root):
    cfg = compose_train(
        [
            "experiment=pinn_advection",
            f"pde_data_root={pde_root}",
            *TINY,
            "trainer.max_steps=2",
            "activation=irelu",
            "normalization=batchnorm",
        ]
    )
    run(cfg, tmp_path)
    assert "activation=...): irelu" in (tmp_path / "surgery.txt").read_text()
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert sum(key.endswith("running_mean") for key in state) == 6  # one BatchNorm per hidden layer


def test_pinn_refuses_label_rescaling(tmp_path, pde_root):
    cfg = compose_train(
        ["experiment=pinn_advection", f"pde_data_root={pde_root}", *TINY, "rescaling=power_of_ten"]
    )
    with pytest.raises(ValueError, match="rescaling=none"):
        run(cfg, tmp_path)
