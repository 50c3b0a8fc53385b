"""Checks every energy model must pass (used by the tests of each model):

- forces equal central finite differences of the energy (float64);
- the energy is invariant to rotation, translation and permutation of the atoms;
- periodic images: a structure and its 2x1x1 supercell give energies in ratio 2, and moving an
  atom by a lattice vector changes nothing;
- a few training steps on real aspirin frames lower the loss.

A model is given as a function ``make() -> nn.Module`` (a fresh, seeded model) and the cutoff
its graph needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms
from ase.build import make_supercell
from torch import nn

from dcnn.data.atoms import AtomsCollate, AtomsData, AtomsDataset
from dcnn.models.forces import EnergyForceModel


def batch_of(data: AtomsData, frames, cutoff: float) -> dict[str, torch.Tensor]:
    dataset = AtomsDataset(data.subset(np.asarray(frames)), dtype=torch.float64)
    return AtomsCollate(cutoff)([dataset[i] for i in range(len(frames))])


def atoms_data(images: list[Atoms]) -> AtomsData:
    """AtomsData of ASE structures (labels zero: only positions, cells and numbers matter)."""
    counts = [len(atoms) for atoms in images]
    return AtomsData(
        numbers=np.concatenate([atoms.numbers for atoms in images]),
        positions=np.concatenate([atoms.positions for atoms in images]),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        energy=np.zeros(len(images)),
        forces=np.zeros((sum(counts), 3)),
        cell=np.stack([atoms.cell.array for atoms in images]),
        pbc=np.stack([atoms.pbc for atoms in images]),
        frame_ids=np.arange(len(images)),
    )


def energies(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.enable_grad():
        energy, _ = EnergyForceModel(model)(batch)
    return energy.detach()


def check_forces_match_finite_differences(
    make: Callable[[], nn.Module],
    batch: dict[str, torch.Tensor],
    atoms: list[int],
    step: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    model = make().double().eval()
    wrapped = EnergyForceModel(model)
    with torch.enable_grad():
        _, forces = wrapped(batch)
    expected = torch.zeros(len(atoms), 3, dtype=torch.float64)
    for row, atom in enumerate(atoms):
        for axis in range(3):
            values = []
            for sign in (1, -1):
                shifted = batch["positions"].clone()
                shifted[atom, axis] += sign * step
                values.append(float(energies(model, {**batch, "positions": shifted}).sum()))
            expected[row, axis] = -(values[0] - values[1]) / (2 * step)
    assert torch.isfinite(forces).all()
    torch.testing.assert_close(forces[atoms].detach(), expected, rtol=rtol, atol=atol)


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def check_invariances(
    make: Callable[[], nn.Module], data: AtomsData, cutoff: float, rtol: float = 1e-9
) -> None:
    """Rotation, translation and permutation of one molecule leave the energy unchanged."""
    model = make().double().eval()
    frame = data.subset(np.array([0]))
    reference = energies(model, batch_of(frame, [0], cutoff))
    rotated = frame.subset(np.array([0]))
    rotated.positions = frame.positions @ _rotation(3).T + np.array([1.5, -2.0, 0.7])
    permuted = frame.subset(np.array([0]))
    order = np.random.default_rng(4).permutation(len(frame.numbers))
    permuted.numbers, permuted.positions = frame.numbers[order], frame.positions[order]
    permuted.forces = frame.forces[order]
    for moved, what in ((rotated, "rotation and translation"), (permuted, "permutation")):
        energy = energies(model, batch_of(moved, [0], cutoff))
        torch.testing.assert_close(energy, reference, rtol=rtol, atol=1e-9, msg=what)


def check_periodic_images(
    make: Callable[[], nn.Module], structure: Atoms, cutoff: float, rtol: float = 1e-6
) -> None:
    """A periodic structure and its 2x1x1 supercell: energies in ratio 2; an atom moved by a
    lattice vector: the same energy."""
    model = make().double().eval()
    supercell = make_supercell(structure, np.diag([2, 1, 1]))
    moved = structure.copy()
    moved.positions[0] += structure.cell.array[1]
    batch = batch_of(atoms_data([structure, supercell, moved]), [0, 1, 2], cutoff)
    single, double, translated = energies(model, batch)
    assert math.isfinite(float(single)) and abs(float(single)) > 0
    torch.testing.assert_close(double, 2 * single, rtol=rtol, atol=1e-9)
    torch.testing.assert_close(translated, single, rtol=rtol, atol=1e-9)


def check_training_lowers_the_loss(
    make: Callable[[], nn.Module],
    data: AtomsData,
    cutoff: float,
    steps: int = 8,
    lr: float = 1e-3,
) -> None:
    """Energy + force training on standardized labels of a few real frames lowers the loss."""
    torch.manual_seed(0)
    model = make()
    wrapped = EnergyForceModel(model).train()
    frames = data.subset(np.arange(4))
    batch = AtomsCollate(cutoff)([AtomsDataset(frames)[i] for i in range(4)])
    n_atoms = batch["n_atoms"].double()
    shift = float(np.mean(frames.energy / frames.n_atoms()))
    scale = float(np.std(frames.energy - shift * frames.n_atoms())) or 1.0
    target_e = ((batch["energy"] - shift * n_atoms) / scale).float()
    target_f = (batch["forces"] / scale).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        energy, forces = wrapped(batch, create_graph=True)
        loss = (energy - target_e).abs().mean() + 10 * (forces - target_f).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < 0.9 * losses[0], losses
