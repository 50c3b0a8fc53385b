"""Triplets of edges, reverse edges and angle harmonics against brute-force enumeration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import eval_legendre

from dcnn.data.neighbors import batched_neighbor_list, reverse_edges
from dcnn.models.triplets import (
    cosine_between,
    dimenet_triplets,
    edge_vectors,
    gemnet_triplets,
    legendre_harmonics,
)


def _graph(periodic: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    n = [5, 4]
    positions = torch.rand(sum(n), 3, generator=generator, dtype=torch.float64) * 3.0
    cell = torch.stack([torch.eye(3, dtype=torch.float64) * 3.2] * 2)
    pbc = torch.tensor([[periodic] * 3, [False] * 3])
    edge_index, edge_shift = batched_neighbor_list(
        positions, cell, pbc, torch.tensor(n), cutoff=2.0
    )
    return positions, edge_index, edge_shift, sum(n)


@pytest.mark.parametrize("periodic", [False, True])
def test_dimenet_triplets_are_every_k_j_i_chain_but_returns(periodic):
    positions, edge_index, edge_shift, n_atoms = _graph(periodic)
    triplets = dimenet_triplets(edge_index, edge_shift, n_atoms)
    found = sorted(zip(triplets.kj.tolist(), triplets.ji.tolist(), strict=True))
    s, t = edge_index.tolist()
    shift = edge_shift.tolist()
    expected = sorted(
        (kj, ji)
        for ji in range(len(s))
        for kj in range(len(s))
        if t[kj] == s[ji]
        and not (
            s[kj] == t[ji] and all(a + b == 0 for a, b in zip(shift[kj], shift[ji], strict=True))
        )
    )
    assert found == expected and len(found) > 0
    assert torch.equal(triplets.j, edge_index[0][triplets.ji])
    assert torch.equal(triplets.k, edge_index[0][triplets.kj])
    if periodic:  # an atom's own image through a neighbour is a distinct neighbour, and kept
        assert bool((triplets.k == triplets.i).any())


@pytest.mark.parametrize("periodic", [False, True])
def test_gemnet_triplets_pair_distinct_edges_into_one_atom(periodic):
    _, edge_index, _, n_atoms = _graph(periodic, seed=1)
    triplets = gemnet_triplets(edge_index, n_atoms)
    t = edge_index[1].tolist()
    expected = sorted(
        (ba, ca) for ca in range(len(t)) for ba in range(len(t)) if ba != ca and t[ba] == t[ca]
    )
    assert sorted(zip(triplets.ba.tolist(), triplets.ca.tolist(), strict=True)) == expected
    for edge in range(len(t)):  # ranks count 0, 1, ... within each edge's group
        ranks = triplets.rank[triplets.ca == edge].tolist()
        assert ranks == list(range(len(ranks)))
    assert triplets.max_per_edge == max(np.bincount(triplets.ca.numpy()))


@pytest.mark.parametrize("periodic", [False, True])
def test_reverse_edges_run_the_other_way(periodic):
    _, edge_index, edge_shift, n_atoms = _graph(periodic, seed=2)
    reverse = reverse_edges(edge_index, edge_shift, n_atoms)
    assert torch.equal(edge_index[0][reverse], edge_index[1])
    assert torch.equal(edge_index[1][reverse], edge_index[0])
    torch.testing.assert_close(edge_shift[reverse], -edge_shift)
    assert torch.equal(reverse[reverse], torch.arange(edge_index.shape[1]))
    with pytest.raises(ValueError, match="lacks the reverse"):
        reverse_edges(edge_index[:, :-1], edge_shift[:-1], n_atoms)


def test_cosines_and_harmonics_match_their_definitions_and_stay_smooth_when_collinear():
    positions, edge_index, edge_shift, _ = _graph(False)
    batch = {"positions": positions, "edge_index": edge_index, "edge_shift": edge_shift}
    vectors, lengths = edge_vectors(batch)
    torch.testing.assert_close(lengths, vectors.norm(dim=-1))
    first, second = vectors[:-1], vectors[1:]
    angles = np.arccos(
        np.clip((first * second).sum(-1).numpy() / (lengths[:-1] * lengths[1:]).numpy(), -1, 1)
    )
    np.testing.assert_allclose(cosine_between(first, second).numpy(), np.cos(angles), atol=1e-12)
    cos = torch.linspace(-1, 1, 11, dtype=torch.float64)
    harmonics = legendre_harmonics(cos, 7)
    for degree in range(7):
        expected = math.sqrt((2 * degree + 1) / (4 * math.pi)) * eval_legendre(degree, cos.numpy())
        np.testing.assert_allclose(harmonics[:, degree].numpy(), expected, atol=1e-12)
    # Collinear vectors: finite gradients (an arccos-based angle would give inf * 0 = NaN).
    u = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    legendre_harmonics(cosine_between(u, v), 7).sum().backward()
    assert torch.isfinite(u.grad).all()
