"""SchNet through the checks every energy model passes (tests/model_checks.py)."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk
from model_checks import (
    batch_of,
    check_forces_match_finite_differences,
    check_invariances,
    check_periodic_images,
    check_training_lowers_the_loss,
)

from dcnn.data.readers import read_rmd17
from dcnn.models.schnet import SchNet

CUTOFF = 4.0


def make() -> SchNet:
    torch.manual_seed(0)
    return SchNet(
        hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=10, cutoff=CUTOFF
    )


@pytest.fixture(scope="module")
def aspirin(data_root):
    return read_rmd17(data_root / "rmd17", "aspirin")


def test_forces_are_finite_differences_of_the_energy(aspirin):
    batch = batch_of(aspirin, [0, 3], CUTOFF)
    check_forces_match_finite_differences(make, batch, atoms=[0, 11, 25])


def test_energy_is_invariant_to_rotation_translation_and_permutation(aspirin):
    check_invariances(make, aspirin, CUTOFF)


def test_periodic_images_count_as_the_same_atoms():
    check_periodic_images(make, bulk("Cu", "fcc", a=3.6, cubic=True), CUTOFF)


def test_a_few_training_steps_lower_the_loss(aspirin):
    check_training_lowers_the_loss(make, aspirin, CUTOFF)


def _pyg_energy(model: SchNet, batch) -> torch.Tensor:
    """PyG's own SchNet arithmetic: every edge through its filter network and propagate."""
    source, target = batch["edge_index"]
    positions = batch["positions"]
    weight = (positions[target] - positions[source] + batch["edge_shift"]).norm(dim=-1)
    attr = model.distance_expansion(weight)
    h = model.embedding(batch["numbers"])
    for interaction in model.interactions:
        h = h + interaction(h, batch["edge_index"], weight, attr)
    h = model.lin2(model.act(model.lin1(h)))
    return model.readout(h, batch["batch"], dim=0, dim_size=len(batch["n_atoms"])).squeeze(-1)


def test_filters_shared_by_reverse_edges_give_pygs_energy_and_forces(aspirin):
    from model_checks import atoms_data

    model = make().double()
    crystal = batch_of(atoms_data([bulk("Cu", "fcc", a=3.6, cubic=True)]), [0], CUTOFF)
    for batch in (batch_of(aspirin, [0, 3], CUTOFF), crystal):
        positions = batch["positions"].clone().requires_grad_(True)
        ours = model({**batch, "positions": positions})
        (our_forces,) = torch.autograd.grad(ours.sum(), positions)
        positions = batch["positions"].clone().requires_grad_(True)
        theirs = _pyg_energy(model, {**batch, "positions": positions})
        (their_forces,) = torch.autograd.grad(theirs.sum(), positions)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(our_forces, their_forces, rtol=1e-10, atol=1e-12)
        without = {key: value for key, value in batch.items() if key != "edge_reverse"}
        torch.testing.assert_close(model(without), ours.detach(), rtol=1e-12, atol=1e-12)
