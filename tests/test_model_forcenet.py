"""ForceNet (OCP, gauss basis, no decoder) through the shared model checks, plus its surgery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from helpers import compose_train
from model_checks import (
    _rotation,
    batch_of,
    check_forces_match_finite_differences,
    check_periodic_images,
    check_training_lowers_the_loss,
    energies,
)
from torch import nn

from dcnn.build import build_model
from dcnn.data.readers import read_rmd17
from dcnn.models.forcenet import DISTANCE_FLOOR, ForceNet, element_feature_table

CUTOFF = 4.0


def make(readout: str = "sum") -> ForceNet:
    torch.manual_seed(0)
    return ForceNet(
        hidden_channels=16, num_interactions=2, cutoff=CUTOFF, num_freqs=8, readout=readout
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def aspirin(data_root):
    return read_rmd17(data_root / "rmd17", "aspirin")


def test_forces_are_finite_differences_of_the_energy(aspirin):
    batch = batch_of(aspirin, [0, 3], CUTOFF)
    atoms = [0, 11, 25]
    # F has kinks where a scaled distance meets the 1e-3 floor and where a pair crosses the
    # cutoff (E is continuous there, F is not): every edge of a moved atom must stay clear of
    # both within the finite-difference step.
    model = make()
    source, target = batch["edge_index"]
    distances = (batch["positions"][target] - batch["positions"][source]).norm(dim=-1)
    r_s = model.atom_radii[batch["numbers"][source]].double()
    r_t = model.atom_radii[batch["numbers"][target]].double()
    touched = torch.isin(source, torch.tensor(atoms)) | torch.isin(target, torch.tensor(atoms))
    for value in (distances, distances - r_s, distances - r_t, distances - r_s - r_t):
        assert float((value[touched] - DISTANCE_FLOOR * CUTOFF).abs().min()) > 1e-3
    positions = batch["positions"]
    for atom in atoms:
        same_frame = batch["batch"] == batch["batch"][atom]
        gap = ((positions[same_frame] - positions[atom]).norm(dim=-1) - CUTOFF).abs().min()
        assert float(gap) > 1e-3
    check_forces_match_finite_differences(make, batch, atoms=atoms)


def test_energy_is_invariant_to_translation_and_permutation_but_not_rotation(aspirin):
    # ForceNet's edge features hold the raw unit vectors, so (as published) it is not
    # rotation invariant; translation and permutation must not change the energy.
    model = make().double().eval()
    frame = aspirin.subset(np.array([0]))
    reference = energies(model, batch_of(frame, [0], CUTOFF))
    translated = frame.subset(np.array([0]))
    translated.positions = frame.positions + np.array([1.5, -2.0, 0.7])
    permuted = frame.subset(np.array([0]))
    order = np.random.default_rng(4).permutation(len(frame.numbers))
    permuted.numbers, permuted.positions = frame.numbers[order], frame.positions[order]
    permuted.forces = frame.forces[order]
    for moved in (translated, permuted):
        energy = energies(model, batch_of(moved, [0], CUTOFF))
        torch.testing.assert_close(energy, reference, rtol=1e-9, atol=1e-9)
    rotated = frame.subset(np.array([0]))
    rotated.positions = frame.positions @ _rotation(3).T
    assert not torch.allclose(energies(model, batch_of(rotated, [0], CUTOFF)), reference)


def test_periodic_images_count_as_the_same_atoms():
    check_periodic_images(make, bulk("Cu", "fcc", a=3.6, cubic=True), CUTOFF)


def test_pooled_readout_adds_the_bias_once_per_structure(aspirin):
    batch = batch_of(aspirin, [0, 3], CUTOFF)
    summed = energies(make("sum").double().eval(), batch)
    pooled_model = make("pooled").double().eval()
    pooled = energies(pooled_model, batch)
    bias = pooled_model.energy_mlp.bias.detach()
    torch.testing.assert_close(summed - pooled, (batch["n_atoms"] - 1) * bias)


def test_a_few_training_steps_lower_the_loss(aspirin):
    # The force term dominates this loss and the tiny ForceNet's initial energy error is small,
    # so 8 steps cannot lower it by 10%: its forces start to fit after some 20 steps.
    check_training_lowers_the_loss(make, aspirin, CUTOFF, steps=30, lr=3e-3)


def test_element_features_are_scaled_and_distinct():
    table = element_feature_table()
    assert table.shape == (101, 9)
    assert float(table[1:].min()) == 0.0 and float(table[1:].max()) == 1.0
    assert len(torch.unique(table[1:], dim=0)) == 100


def test_irelu_everywhere_and_normalization_none_keeps_every_linear():
    cfg = compose_train(["model=forcenet", "activation=irelu", "normalization=none"])
    original = compose_train(["activation=original"]).activation
    reference = build_model(cfg.model, original, "original")[0]
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    blocks = range(cfg.model.num_interactions)
    paper = [f"interactions.{k}.mlp_edge.{i}" for k in blocks for i in (1, 3)]
    paper += [f"interactions.{k}.mlp_trans.2" for k in blocks] + ["activation"]
    assert sorted(line.split(":")[0] for line in report.replaced) == sorted(paper)
    assert all(line.endswith("SiLU -> IReLU") for line in report.replaced)
    removed = sorted(line.split(":")[0] for line in report.removed)
    assert removed == sorted(model.normalization_layers)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())

    def linears(m: nn.Module) -> list[str]:
        return [name for name, child in m.named_modules() if isinstance(child, nn.Linear)]

    assert linears(model) == linears(reference) and len(linears(model)) > 0
    for k in blocks:  # [Linear, (removed BatchNorm), IReLU, Linear]: the authors' defect is absent
        trans = model.interactions[k].mlp_trans
        assert isinstance(trans[0], nn.Linear) and isinstance(trans[3], nn.Linear)
