"""Edge vectors, triplets of edges and angle features of a neighbour graph, in plain torch.

Graph convention (``dcnn.data.neighbors``): edge ``e`` runs from atom ``s = edge_index[0, e]``
to atom ``t = edge_index[1, e]``; its vector ``positions[t] - positions[s] + edge_shift[e]``
is built from the live positions, so every feature below is differentiable with respect to
them (forces by autograd are the true -dE/dx). Index construction replaces torch_sparse's
SparseTensor: edges are sorted by their target once, then each edge is paired with the edges
of the other end by ``repeat_interleave`` arithmetic.

- ``dimenet_triplets``: pairs (k -> j, j -> i) with k != i (DimeNet's message passing);
- ``gemnet_triplets``: pairs (b -> a, c -> a) of edges into the same atom, b != c (GemNet-T);
- ``reverse_edges`` (from ``dcnn.data.neighbors``): the edge running the other way;
- ``cosine_between``: the cosine of the angle between edge vectors, without arccos (smooth at
  collinear atoms, where the gradient of an angle is infinite and gives NaN);
- ``legendre_harmonics``: the real spherical harmonics Y_l^0 of that cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def edge_vectors(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Vectors (E, 3) from each edge's source to its target, and their lengths (E,)."""
    source, target = batch["edge_index"]
    positions = batch["positions"]
    # index_select, not positions[target]: its backward is index_add, not a slow index_put.
    vectors = (
        positions.index_select(0, target) - positions.index_select(0, source) + batch["edge_shift"]
    )
    return vectors, vectors.norm(dim=-1)


def _grouped_by_target(edge_index: Tensor, n_atoms: int) -> tuple[Tensor, Tensor, Tensor]:
    """Edges sorted by target atom, each atom's in-degree, and where its edges start."""
    source, target = edge_index
    order = torch.argsort(target * n_atoms + source)
    degree = torch.bincount(target, minlength=n_atoms)
    start = torch.cumsum(degree, 0) - degree
    return order, degree, start


def _pair_with_group(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For each element e repeated ``counts[e]`` times: e, and the rank within its repeats."""
    repeated = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(repeated), device=counts.device) - offsets[repeated]
    return repeated, rank


@dataclass(frozen=True)
class DimeNetTriplets:
    """Edge pairs (k -> j, j -> i): ``kj`` and ``ji`` index edges, ``i``, ``j``, ``k`` atoms."""

    kj: Tensor
    ji: Tensor
    i: Tensor
    j: Tensor
    k: Tensor


def dimenet_triplets(edge_index: Tensor, edge_shift: Tensor, n_atoms: int) -> DimeNetTriplets:
    """Every pair of an edge k -> j with an edge j -> i, except k == i at the same place
    (a periodic image of i reached through j is a different neighbour and is kept)."""
    source, target = edge_index
    order, degree, start = _grouped_by_target(edge_index, n_atoms)
    ji, rank = _pair_with_group(degree[source])  # edges into j = source of ji
    kj = order[start[source[ji]] + rank]
    i, j, k = target[ji], source[ji], source[kj]
    same_place = (k == i) & (edge_shift[kj] + edge_shift[ji]).abs().sum(-1).eq(0)
    keep = ~same_place
    return DimeNetTriplets(kj[keep], ji[keep], i[keep], j[keep], k[keep])


@dataclass(frozen=True)
class GemNetTriplets:
    """Edge pairs (b -> a, c -> a) into one atom a: ``ba`` and ``ca`` index edges, ``rank`` is
    the position of each pair among those of its ``ca`` edge (for GemNet's padded bilinear
    layer), ``max_per_edge`` the largest such group."""

    ba: Tensor
    ca: Tensor
    rank: Tensor
    max_per_edge: int


def gemnet_triplets(edge_index: Tensor, n_atoms: int) -> GemNetTriplets:
    """Every pair of distinct edges b -> a and c -> a, grouped by the edge c -> a."""
    _, target = edge_index
    order, degree, start = _grouped_by_target(edge_index, n_atoms)
    ca, rank = _pair_with_group(degree[target])  # edges into a = target of ca
    ba = order[start[target[ca]] + rank]
    keep = ba != ca
    ca, ba = ca[keep], ba[keep]
    # Ranks again after dropping the pair of an edge with itself: 0..n-1 within each ca group.
    counts = torch.bincount(ca, minlength=edge_index.shape[1])
    _, rank = _pair_with_group(counts)
    max_per_edge = int(counts.max()) if counts.numel() else 0
    return GemNetTriplets(ba, ca, rank, max_per_edge)


def cosine_between(first: Tensor, second: Tensor) -> Tensor:
    """Cosine of the angle between rows of ``first`` and ``second`` (nonzero vectors)."""
    dot = (first * second).sum(-1)
    return dot / (first.norm(dim=-1) * second.norm(dim=-1))


def legendre_harmonics(cosine: Tensor, n_degrees: int) -> Tensor:
    """Real spherical harmonics Y_l^0, l = 0 .. n_degrees - 1, of the polar angle given by its
    cosine: sqrt((2l + 1) / 4 pi) P_l(cosine), shape (..., n_degrees)."""
    polynomials = [torch.ones_like(cosine), cosine]
    for degree in range(2, n_degrees):
        previous, current = polynomials[-2], polynomials[-1]
        polynomials.append(((2 * degree - 1) * cosine * current - (degree - 1) * previous) / degree)
    stacked = torch.stack(polynomials[:n_degrees], dim=-1)
    factors = torch.tensor(
        [math.sqrt((2 * degree + 1) / (4 * math.pi)) for degree in range(n_degrees)],
        dtype=cosine.dtype,
        device=cosine.device,
    )
    return stacked * factors
