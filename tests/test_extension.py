"""A user extends dcnn with one YAML file per new piece, pointing at their own classes."""

from __future__ import annotations

import json

import numpy as np
import torch
from helpers import compose_train
from torch import nn

from dcnn.data.readers import read_rmd17
from dcnn.train import run


class SquaredSoftsign(nn.Module):
    """A user's activation: x * softsign(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.softsign(x)


class PairPotential(nn.Module):
    """A user's energy model: a learned radial pair energy summed over the neighbour list."""

    activation_scopes = {"all": [""]}
    default_activation_scope = "all"

    def __init__(self, hidden: int = 16, cutoff: float = 4.0) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.radial = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        source, target = batch["edge_index"]
        vectors = batch["positions"][target] - batch["positions"][source] + batch["edge_shift"]
        pair_energy = self.radial(vectors.norm(dim=-1, keepdim=True)).squeeze(-1)
        per_atom = torch.zeros_like(batch["positions"][:, 0]).index_add(0, source, pair_energy)
        return torch.zeros(len(batch["n_atoms"]), dtype=per_atom.dtype).index_add(
            0, batch["batch"], per_atom
        )


def read_first_frames(path, molecule):
    """A user's reader: any callable returning AtomsData (here: 120 ethanol frames)."""
    return read_rmd17(path, molecule).subset(np.arange(120))


def test_user_activation_model_and_reader_from_yaml_files(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    user_conf = tmp_path / "user_conf"
    for group, text in {
        "activation/squared_softsign.yaml": (
            "name: squared_softsign\nmodule:\n  _target_: test_extension.SquaredSoftsign\n"
            "  _partial_: true\nscope: null\n"
        ),
        "model/pair.yaml": "_target_: test_extension.PairPotential\nhidden: 8\ncutoff: 4.0\n",
        "dataset/my_ethanol.yaml": (
            "defaults:\n  - md17\n  - _self_\nformat: test_extension.read_first_frames\n"
            "molecule: ethanol\nlabel_source: null\nn_train: 60\nn_val: 20\nn_test: 40\n"
        ),
    }.items():
        (user_conf / group).parent.mkdir(parents=True, exist_ok=True)
        (user_conf / group).write_text(text)

    cfg = compose_train(
        [
            "activation=squared_softsign",
            "model=pair",
            "dataset=my_ethanol",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
        ],
        searchpath=[user_conf],
    )
    out = tmp_path / "run"
    run(cfg, out)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "ok"
    assert record["info"]["data"]["frames"] == 120
    assert "radial.1: Tanh -> SquaredSoftsign" in (out / "surgery.txt").read_text()
    assert record["test"]["force_mae"] > 0


def read_without_units(path, molecule):
    """A user's reader that builds AtomsData itself and says nothing of units."""
    from dataclasses import replace

    return replace(read_rmd17(path, molecule).subset(np.arange(30)), units={})


def test_a_reader_without_units_is_asked_for_them(data_root):
    import pytest

    from dcnn.data.atoms import DataError
    from dcnn.data.sources import read_frames

    reader = "test_extension.read_without_units"
    with pytest.raises(
        DataError, match=r"unit the energy are; set it, e\.g\. dataset\.energy_unit"
    ):
        read_frames(data_root / "rmd17", reader, molecule="ethanol")
    frames = read_frames(
        data_root / "rmd17", reader, "ethanol", energy_unit="kcal/mol", length_unit="Angstrom"
    )
    assert frames.units.energy == "kcal/mol" and len(frames.data) == 30
