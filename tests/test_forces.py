"""Forces are -dE/dx: checked against central finite differences in float64, periodic too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcnn.data.atoms import AtomsCollate, AtomsDataset
from dcnn.data.readers import read_ase, read_rmd17
from dcnn.models.forces import EnergyForceModel
from dcnn.models.schnet import SchNet


def _model() -> EnergyForceModel:
    torch.manual_seed(0)
    model = SchNet(
        hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=10, cutoff=5.0
    )
    return EnergyForceModel(model.double()).eval()


def _batch(data, frames) -> dict[str, torch.Tensor]:
    dataset = AtomsDataset(data.subset(np.asarray(frames)), dtype=torch.float64)
    return AtomsCollate(5.0)([dataset[i] for i in range(len(frames))])


def _finite_difference_forces(model, batch, atoms, step=1e-5):
    forces = torch.zeros(len(atoms), 3, dtype=torch.float64)
    for row, atom in enumerate(atoms):
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                shifted = batch["positions"].clone()
                shifted[atom, axis] += sign * step
                with torch.enable_grad():
                    energy, _ = model({**batch, "positions": shifted})
                energies.append(float(energy.sum().detach()))
            forces[row, axis] = -(energies[0] - energies[1]) / (2 * step)
    return forces


def test_forces_match_finite_differences_on_aspirin(data_root):
    data = read_rmd17(data_root / "rmd17", "aspirin")
    model = _model()
    batch = _batch(data, [0, 5])
    _, forces = model(batch)
    atoms = [0, 7, 20, 21, 30]  # atoms of both molecules in the batch
    expected = _finite_difference_forces(model, batch, atoms)
    torch.testing.assert_close(forces[atoms], expected, rtol=1e-6, atol=1e-8)


def test_forces_match_finite_differences_in_a_periodic_cell(data_root):
    files = sorted((data_root / "oc20").glob("*.traj"))
    data = read_ase(files[0], index="0:1")
    model = _model()
    batch = _batch(data, [0])
    assert bool(batch["pbc"].any())
    # Shifts across the cell must enter the graph, otherwise periodic images are ignored.
    assert bool((batch["edge_shift"].abs().sum(dim=1) > 0).any())
    _, forces = model(batch)
    atoms = [0, len(batch["numbers"]) // 2, len(batch["numbers"]) - 1]
    expected = _finite_difference_forces(model, batch, atoms)
    torch.testing.assert_close(forces[atoms], expected, rtol=1e-6, atol=1e-8)


def test_training_mode_keeps_the_graph_for_double_backprop(data_root):
    data = read_rmd17(data_root / "rmd17", "ethanol")
    model = _model().train()
    batch = _batch(data, [0, 1, 2])
    _, forces = model(batch)
    assert forces.requires_grad
    forces.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_forces_refuse_to_run_without_autograd(data_root):
    data = read_rmd17(data_root / "rmd17", "ethanol")
    with torch.no_grad(), pytest.raises(RuntimeError, match="inference_mode=False"):
        _model()(_batch(data, [0]))
