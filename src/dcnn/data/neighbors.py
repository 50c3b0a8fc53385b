"""Radius-graph neighbour lists (periodic and non-periodic) computed with vesin-torch.

Convention: for an edge ``(i, j)`` with shift ``s`` the vector from atom ``i`` to atom ``j`` is
``positions[j] - positions[i] + s``. Lists are full (both directions), contain every pair within
the cutoff including periodic images of an atom itself, and never the atom itself at zero shift.
Shifts do not depend on positions, so gradients flow through the position difference only.
"""

from __future__ import annotations

import math

import torch
from vesin_torch import NeighborList


def _vesin_box(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """Box matrix vesin can use for a frame with periodic directions ``pbc``.

    vesin needs an invertible box whenever any direction is periodic (a singular box even crashes
    the process), but non-periodic directions of ASE slabs or wires often have zero cell vectors.
    Non-periodic rows are replaced by an orthonormal complement of the periodic rows: no pair is
    ever shifted along them, so the Cartesian shifts are unchanged.
    """
    periodic_rows = cell[pbc]
    if torch.linalg.matrix_rank(periodic_rows) < len(periodic_rows):
        raise ValueError(
            f"neighbor_list: the cell vectors of the periodic directions (pbc={pbc.tolist()}) "
            f"must be linearly independent, got cell {cell.tolist()}"
        )
    if bool(pbc.all()):
        return cell
    # Right singular vectors beyond the rank span the complement of the periodic rows.
    _, _, right_vectors = torch.linalg.svd(periodic_rows, full_matrices=True)
    box = cell.clone()
    box[~pbc] = right_vectors[len(periodic_rows) :]
    return box


def _no_edges(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.zeros(2, 0, dtype=torch.int64, device=positions.device),
        torch.zeros(0, 3, dtype=positions.dtype, device=positions.device),
    )


def neighbor_list(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full neighbour list of one structure.

    Args:
        positions: (n, 3) Cartesian positions.
        cell: (3, 3) cell vectors as rows (ignored, may be zeros, when no direction is periodic).
        pbc: (3,) bool, periodic boundary conditions per cell vector.
        cutoff: pairs with distance <= cutoff are listed.

    Returns:
        edge_index (2, E) int64 and edge_shift (E, 3) Cartesian shifts in ``positions.dtype``,
        on ``positions.device``.
    """
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"neighbor_list: positions must have shape (n, 3), got {positions.shape}")
    if cell.shape != (3, 3) or pbc.shape != (3,):
        raise ValueError(
            f"neighbor_list: cell must have shape (3, 3) and pbc (3,), got {tuple(cell.shape)} "
            f"and {tuple(pbc.shape)}"
        )
    if not 0 < cutoff < math.inf:
        raise ValueError(f"neighbor_list: cutoff must be positive and finite, got {cutoff}")
    if len(positions) == 0:  # vesin refuses empty inputs
        return _no_edges(positions)
    # float64 so that pairs near the cutoff and image searches in skewed cells are robust.
    points = positions.detach().to(torch.float64)
    cell64 = cell.detach().to(device=points.device, dtype=torch.float64)
    pbc = pbc.detach().to(device=points.device, dtype=torch.bool)
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    if bool(pbc.any()):
        box = _vesin_box(cell64, pbc)
        first, second, shift_counts = calculator.compute(points, box, pbc, quantities="ijS")
        edge_shift = shift_counts.to(torch.float64) @ box
    else:
        no_box = torch.zeros(3, 3, dtype=torch.float64, device=points.device)
        first, second, shift_counts = calculator.compute(points, no_box, False, quantities="ijS")
        edge_shift = torch.zeros(len(first), 3, dtype=torch.float64, device=points.device)
    edge_index = torch.stack([first, second]).to(torch.int64)
    return edge_index, edge_shift.to(positions.dtype)


def batched_neighbor_list(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    n_atoms: torch.Tensor,
    cutoff: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour lists of packed frames with global atom indices.

    Args:
        positions: (N, 3) positions of all frames, frame after frame.
        cell: (B, 3, 3) cells; pbc: (B, 3) periodic flags; n_atoms: (B,) atoms per frame.
        cutoff: pairs with distance <= cutoff are listed.

    Returns:
        edge_index (2, E) int64 indexing ``positions`` and edge_shift (E, 3) as in neighbor_list.
    """
    counts = [int(count) for count in n_atoms]
    if sum(counts) != len(positions) or len(cell) != len(counts) or len(pbc) != len(counts):
        raise ValueError(
            f"batched_neighbor_list: n_atoms sums to {sum(counts)} for {len(counts)} frames, but "
            f"got {len(positions)} positions, {len(cell)} cells and {len(pbc)} pbc rows"
        )
    edge_indices, edge_shifts = [], []
    start = 0
    for frame, count in enumerate(counts):
        frame_positions = positions[start : start + count]
        edge_index, edge_shift = neighbor_list(frame_positions, cell[frame], pbc[frame], cutoff)
        edge_indices.append(edge_index + start)
        edge_shifts.append(edge_shift)
        start += count
    if not edge_indices:
        return _no_edges(positions)
    return torch.cat(edge_indices, dim=1), torch.cat(edge_shifts)


def reverse_edges(edge_index: torch.Tensor, edge_shift: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """For each edge s -> t with shift x, the index of the edge t -> s with shift -x.

    Full neighbour lists hold both directions of every pair; a list that does not is an error.
    """
    source, target = edge_index
    if not bool(edge_shift.any()):
        return _reverse_without_shifts(source, target, n_atoms)
    # Shifts are integer combinations of cell vectors; round them to make them exact keys.
    shift_key = torch.round(edge_shift * 1e4).to(torch.int64)
    forward = torch.cat([(source * n_atoms + target)[:, None], shift_key], dim=1)
    backward = torch.cat([(target * n_atoms + source)[:, None], -shift_key], dim=1)
    keys, inverse = torch.unique(torch.cat([forward, backward]), dim=0, return_inverse=True)
    forward_id, backward_id = inverse[: len(source)], inverse[len(source) :]
    edge_of_key = torch.full((len(keys),), -1, dtype=torch.int64, device=source.device)
    edge_of_key[forward_id] = torch.arange(len(source), device=source.device)
    reverse = edge_of_key[backward_id]
    if bool((reverse < 0).any()):
        raise ValueError(MISSING_REVERSE)
    return reverse


MISSING_REVERSE = (
    "reverse_edges: the neighbour list lacks the reverse of some edges; expected a full list "
    "(both directions of every pair), as dcnn.data.neighbors builds"
)


def _reverse_without_shifts(source: torch.Tensor, target: torch.Tensor, n_atoms: int):
    """``reverse_edges`` when no edge crosses a cell boundary: an atom pair is then one edge, so
    one sorted scalar key per edge finds each reverse (a row-wise ``unique`` is ~10x slower)."""
    key = source * n_atoms + target
    order = torch.argsort(key)
    sorted_key = key[order]
    wanted = target * n_atoms + source
    position = torch.searchsorted(sorted_key, wanted).clamp_(max=max(len(key) - 1, 0))
    if len(key) and not bool((sorted_key[position] == wanted).all()):
        raise ValueError(MISSING_REVERSE)
    return order[position]
