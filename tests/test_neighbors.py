"""Neighbour lists against brute force (non-periodic) and ASE (periodic, incl. image shifts)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from dcnn.data.neighbors import batched_neighbor_list, neighbor_list

NO_PBC = torch.zeros(3, dtype=torch.bool)
ALL_PBC = torch.ones(3, dtype=torch.bool)


def brute_force_pairs(positions: np.ndarray, cutoff: float) -> set[tuple[int, int]]:
    distances = np.linalg.norm(positions[None, :, :] - positions[:, None, :], axis=-1)
    first, second = np.nonzero((distances <= cutoff) & ~np.eye(len(positions), dtype=bool))
    return set(zip(first.tolist(), second.tolist(), strict=True))


def integer_shifts(edge_shift: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Cell multiples of Cartesian shifts (least squares handles zero non-periodic vectors)."""
    multiples = np.linalg.lstsq(cell.T, edge_shift.T, rcond=None)[0].T
    rounded = np.rint(multiples)
    np.testing.assert_allclose(rounded @ cell, edge_shift, atol=1e-8)
    return rounded.astype(int)


def pair_shift_set(edge_index, shifts) -> set[tuple[int, int, int, int, int]]:
    return {
        (int(i), int(j), *map(int, s))
        for i, j, s in zip(edge_index[0], edge_index[1], shifts, strict=True)
    }


def assert_matches_ase(atoms: Atoms, cutoff: float) -> int:
    """Same (i, j, shift) set as ASE's neighbour list; returns the number of pairs."""
    edge_index, edge_shift = neighbor_list(
        torch.tensor(atoms.positions),
        torch.tensor(atoms.cell.array),
        torch.tensor(atoms.pbc),
        cutoff,
    )
    first, second, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    ours = pair_shift_set(edge_index.numpy(), integer_shifts(edge_shift.numpy(), atoms.cell.array))
    reference = pair_shift_set(np.stack([first, second]), shifts)
    assert ours == reference
    assert edge_index.shape[1] == len(ours)  # no duplicated edges
    return len(ours)


def edge_lengths(positions, edge_index, edge_shift):
    return (positions[edge_index[1]] - positions[edge_index[0]] + edge_shift).norm(dim=1)


@pytest.mark.parametrize("cell", [np.zeros((3, 3)), 4.0 * np.eye(3)])
def test_non_periodic_matches_brute_force(cell):
    # A non-periodic frame may come with or without a cell; neither must matter.
    positions = np.random.default_rng(0).uniform(0.0, 6.0, size=(30, 3))
    edge_index, edge_shift = neighbor_list(torch.tensor(positions), torch.tensor(cell), NO_PBC, 2.5)
    pairs = set(zip(*edge_index.tolist(), strict=True))
    assert pairs == brute_force_pairs(positions, 2.5)
    assert len(pairs) == edge_index.shape[1] > 0
    assert torch.all(edge_shift == 0)


def test_real_oc20_frame_matches_ase(data_root):
    atoms = ase.io.read(data_root / "oc20" / "random1000156.traj", index=0)
    assert atoms.pbc.all()
    n_pairs = assert_matches_ase(atoms, cutoff=6.0)
    assert n_pairs > 10 * len(atoms)


def test_small_cell_cutoff_beyond_half_cell_matches_ase():
    # Cutoff larger than the whole cell: many images per pair, including an atom's own images.
    cell = np.array([[2.6, 0.0, 0.0], [0.9, 2.4, 0.0], [0.4, -0.6, 2.8]])
    scaled_positions = [[0, 0, 0], [0.5, 0.4, 0.3], [0.2, 0.8, 0.6]]
    atoms = Atoms("CuAuO", scaled_positions=scaled_positions, cell=cell, pbc=True)
    n_pairs = assert_matches_ase(atoms, cutoff=4.1)
    assert n_pairs > 3 * 3 * 8


def test_slab_with_zero_vacuum_vector_matches_ase():
    # ASE slabs are often periodic in two directions only and have no third cell vector.
    positions = np.random.default_rng(1).uniform(0.0, 3.0, size=(8, 3)) * [1.0, 1.0, 4.0]
    atoms = Atoms("H8", positions=positions, cell=[[3.0, 0, 0], [1.0, 2.8, 0], [0, 0, 0]])
    atoms.pbc = [True, True, False]
    assert_matches_ase(atoms, cutoff=4.0)


def test_full_list_is_symmetric_without_self_pairs_and_within_cutoff():
    cell = torch.tensor([[3.1, 0.0, 0.0], [0.5, 2.9, 0.0], [0.0, 0.7, 3.3]])
    positions = torch.rand(7, 3, generator=torch.Generator().manual_seed(2)) * 3.0
    edge_index, edge_shift = neighbor_list(positions, cell, ALL_PBC, 3.5)
    assert edge_index.dtype == torch.int64
    assert edge_shift.dtype == torch.float32
    assert edge_lengths(positions, edge_index, edge_shift).max() <= 3.5 + 1e-5
    self_at_zero_shift = (edge_index[0] == edge_index[1]) & (edge_shift.abs().sum(1) == 0)
    assert not self_at_zero_shift.any()
    shifts = integer_shifts(edge_shift.double().numpy(), cell.double().numpy())
    forward = pair_shift_set(edge_index.numpy(), shifts)
    backward = pair_shift_set(edge_index.flip(0).numpy(), -shifts)
    assert forward == backward


def test_batched_offsets_indices_per_frame():
    generator = torch.Generator().manual_seed(3)
    counts = [5, 1, 0, 9]  # an empty frame must not break the batch
    positions = torch.rand(sum(counts), 3, generator=generator, dtype=torch.float64) * 4.0
    cell = torch.stack(
        [torch.zeros(3, 3), 2.5 * torch.eye(3), torch.zeros(3, 3), 4.5 * torch.eye(3)]
    ).double()
    pbc = torch.stack([NO_PBC, ALL_PBC, NO_PBC, ALL_PBC])
    edge_index, edge_shift = batched_neighbor_list(positions, cell, pbc, torch.tensor(counts), 3.0)
    start, expected_index, expected_shift = 0, [], []
    for frame, count in enumerate(counts):
        frame_index, frame_shift = neighbor_list(
            positions[start : start + count], cell[frame], pbc[frame], 3.0
        )
        expected_index.append(frame_index + start)
        expected_shift.append(frame_shift)
        start += count
    assert torch.equal(edge_index, torch.cat(expected_index, dim=1))
    assert torch.equal(edge_shift, torch.cat(expected_shift))
    # The single atom of frame 1 sees its own six nearest periodic images only.
    assert ((edge_index[0] == 5) == (edge_index[1] == 5)).all()
    assert (edge_index[0] == 5).sum() == 6


def test_pair_energy_gradient_through_neighbor_list_matches_finite_differences():
    # Shifts are constants, so autograd forces through positions[j] - positions[i] + shift must
    # equal finite differences of an energy whose neighbour list is rebuilt at every evaluation.
    cutoff = 3.0
    cell = torch.tensor([[2.7, 0.0, 0.0], [0.6, 2.5, 0.0], [0.3, 0.4, 2.9]], dtype=torch.float64)

    def smooth_pair_energy(positions):
        edge_index, edge_shift = neighbor_list(positions, cell, ALL_PBC, cutoff)
        lengths = edge_lengths(positions, edge_index, edge_shift)
        envelope = (torch.cos(torch.pi * lengths / cutoff) + 1.0) ** 2  # C1 at the cutoff
        return (torch.exp(-lengths) * envelope).sum()

    positions = torch.rand(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    positions = (positions * 2.5).requires_grad_()
    assert torch.autograd.gradcheck(smooth_pair_energy, (positions,), eps=1e-6, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    positions = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="linearly independent"):
        neighbor_list(positions, torch.diag(torch.tensor([2.0, 2.0, 0.0])), ALL_PBC, 1.0)
    with pytest.raises(ValueError, match="linearly independent"):
        neighbor_list(positions, torch.zeros(3, 3), torch.tensor([True, True, False]), 1.0)
    with pytest.raises(ValueError, match="cutoff must be positive"):
        neighbor_list(positions, torch.zeros(3, 3), NO_PBC, 0.0)
    with pytest.raises(ValueError, match=r"positions must have shape \(n, 3\)"):
        neighbor_list(torch.zeros(2, 2), torch.zeros(3, 3), NO_PBC, 1.0)
    with pytest.raises(ValueError, match="n_atoms sums to 3"):
        batched_neighbor_list(positions, torch.zeros(1, 3, 3), NO_PBC[None], torch.tensor([3]), 1.0)
