"""DimeNet++ through the checks every energy model passes (tests/model_checks.py), plus its own:
the cosine-built spherical basis equals PyG's, collinear atoms give finite forces, OCP's detached
angles (opt-in) break -dE/dx, and the activation surgery reaches the output blocks only."""

from __future__ import annotations

import helpers
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from model_checks import (
    atoms_data,
    batch_of,
    check_forces_match_finite_differences,
    check_invariances,
    check_periodic_images,
    check_training_lowers_the_loss,
    energies,
)
from torch_geometric.nn.models import dimenet as pyg_dimenet
from torch_geometric.nn.models.dimenet import SphericalBasisLayer

import dcnn.models.dimenet_pp as dimenet_pp
from dcnn.activations import IReLU
from dcnn.build import build_model
from dcnn.data.readers import read_rmd17
from dcnn.models.dimenet_pp import DimeNetPlusPlus
from dcnn.models.forces import EnergyForceModel
from dcnn.models.triplets import cosine_between, dimenet_triplets, edge_vectors

CUTOFF = 4.0
N_SPHERICAL, N_RADIAL = 4, 4  # the small preset's basis sizes (sympy builds them once)


def make(**options) -> DimeNetPlusPlus:
    torch.manual_seed(0)
    # A random last output layer: with PyG's/OCP's zero init the energy would be identically 0.
    return DimeNetPlusPlus(
        hidden_channels=16,
        num_blocks=2,
        int_emb_size=8,
        basis_emb_size=4,
        out_emb_channels=16,
        num_spherical=N_SPHERICAL,
        num_radial=N_RADIAL,
        cutoff=CUTOFF,
        output_initializer="glorot_orthogonal",
        **options,
    )


@pytest.fixture(scope="module")
def aspirin(data_root):
    return read_rmd17(data_root / "rmd17", "aspirin")


def autograd_and_finite_difference_forces(model, batch, atoms, step=1e-5):
    with torch.enable_grad():
        _, forces = EnergyForceModel(model)(batch)
    expected = torch.zeros(len(atoms), 3, dtype=torch.float64)
    for row, atom in enumerate(atoms):
        for axis in range(3):
            values = []
            for sign in (1, -1):
                shifted = batch["positions"].clone()
                shifted[atom, axis] += sign * step
                values.append(float(energies(model, {**batch, "positions": shifted}).sum()))
            expected[row, axis] = -(values[0] - values[1]) / (2 * step)
    return forces[atoms].detach(), expected


def test_forces_are_finite_differences_of_the_energy(aspirin):
    batch = batch_of(aspirin, [0, 3], CUTOFF)
    check_forces_match_finite_differences(make, batch, atoms=[0, 11, 25])


def test_energy_is_invariant_to_rotation_translation_and_permutation(aspirin):
    check_invariances(make, aspirin, CUTOFF)


def test_periodic_images_count_as_the_same_atoms():
    check_periodic_images(make, bulk("Cu", "fcc", a=3.6, cubic=True), CUTOFF)


def test_a_few_training_steps_lower_the_loss(aspirin):
    check_training_lowers_the_loss(make, aspirin, CUTOFF)


def test_spherical_basis_equals_pygs_away_from_collinear_triplets(aspirin):
    batch = batch_of(aspirin, [0], CUTOFF)
    positions = batch["positions"]
    t = dimenet_triplets(batch["edge_index"], batch["edge_shift"], len(positions))
    vectors, dist = edge_vectors(batch)
    cosine = cosine_between(vectors[t.ji], vectors[t.kj])
    # Away from collinear triplets (aspirin has a few nearly straight ones).
    keep = cosine.abs() < 0.999
    assert int(keep.sum()) > 0.9 * len(cosine) > 100
    t = type(t)(t.kj[keep], t.ji[keep], t.i[keep], t.j[keep], t.k[keep])
    cosine = cosine[keep]
    # PyG's DimeNet++ angle (since 2.5, = OCP's): atan2 of (i - j) x (j - k) and (i - j).(j - k).
    pos_ij, pos_jk = positions[t.i] - positions[t.j], positions[t.j] - positions[t.k]
    angle = torch.atan2(torch.cross(pos_ij, pos_jk, dim=1).norm(dim=-1), (pos_ij * pos_jk).sum(-1))
    torch.testing.assert_close(torch.cos(angle), cosine, rtol=0, atol=1e-12)

    ours = make().double().sbf(dist, cosine, t.kj)
    pyg = SphericalBasisLayer(N_SPHERICAL, N_RADIAL, CUTOFF, envelope_exponent=5)
    assert ours.shape == (len(cosine), N_SPHERICAL * N_RADIAL)
    torch.testing.assert_close(ours, pyg(dist, angle, t.kj), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours, pyg(dist, torch.arccos(cosine), t.kj), rtol=1e-10, atol=1e-12)


def test_energy_equals_pygs_dimenet_pp_forward_on_our_graph(aspirin, monkeypatch):
    """PyG's own forward (atan2 angles, its SphericalBasisLayer), fed our graph and triplets in
    its convention (edge j -> i: row = source j, col = target i), gives our energy."""
    batch = batch_of(aspirin, [0, 1], CUTOFF)
    t = dimenet_triplets(batch["edge_index"], batch["edge_shift"], len(batch["numbers"]))
    source, target = batch["edge_index"]
    monkeypatch.setattr(pyg_dimenet, "radius_graph", lambda *args, **kw: batch["edge_index"])
    monkeypatch.setattr(
        pyg_dimenet, "triplets", lambda *args, **kw: (target, source, t.i, t.j, t.k, t.kj, t.ji)
    )
    ours = make(output_up_bias=False).double().eval()  # PyG's OutputPPBlock has no lin_up bias
    pyg = pyg_dimenet.DimeNetPlusPlus(
        16, 1, 2, 8, 4, 16, N_SPHERICAL, N_RADIAL, cutoff=CUTOFF, envelope_exponent=5
    ).double()
    pyg.load_state_dict(ours.state_dict())
    with torch.no_grad():
        expected = pyg(batch["numbers"], batch["positions"], batch["batch"]).squeeze(-1)
        torch.testing.assert_close(ours(batch), expected, rtol=1e-10, atol=1e-10)


def test_collinear_atoms_give_finite_forces():
    line = Atoms("OCO", positions=[[0.0, 0.0, 0.0], [1.16, 0.0, 0.0], [2.32, 0.0, 0.0]])
    batch = batch_of(atoms_data([line]), [0], CUTOFF)
    t = dimenet_triplets(batch["edge_index"], batch["edge_shift"], 3)
    vectors, _ = edge_vectors(batch)
    cosine = cosine_between(vectors[t.ji], vectors[t.kj])
    assert {round(float(c), 12) for c in cosine} == {1.0, -1.0}  # both collinear extremes
    # The angle itself has an infinite gradient there: the reason for building from the cosine.
    leaf = cosine.detach().clone().requires_grad_(True)
    torch.arccos(leaf).sum().backward()
    assert not torch.isfinite(leaf.grad).any()
    check_forces_match_finite_differences(make, batch, atoms=[0, 1, 2])


def test_ocp_detached_angles_break_the_forces_and_are_off_by_default(aspirin):
    batch = batch_of(aspirin, [0], CUTOFF)
    atoms = [0, 13]
    true_model = make().double().eval()
    detached = make(detach_angles=True).double().eval()
    assert not true_model.detach_angles
    torch.testing.assert_close(energies(detached, batch), energies(true_model, batch))

    forces, expected = autograd_and_finite_difference_forces(true_model, batch, atoms)
    torch.testing.assert_close(forces, expected, rtol=1e-5, atol=1e-7)
    forces, expected_detached = autograd_and_finite_difference_forces(detached, batch, atoms)
    torch.testing.assert_close(expected_detached, expected)  # same energy surface
    error = (forces - expected).abs().max()
    assert error > 0.05 * expected.abs().max(), (error, expected.abs().max())


def test_irelu_surgery_replaces_exactly_the_output_block_activations():
    cfg = helpers.compose_train(["model=dimenet_pp", "activation=irelu"])
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    n_outputs = cfg.model.num_blocks + 1
    assert {line.split(":")[0] for line in report.replaced} == {
        f"output_blocks.{i}.act" for i in range(n_outputs)
    }
    assert report.removed == []
    assert "output_blocks.0.act: swish (function) -> IReLU" in report.replaced
    assert all(isinstance(block.act, IReLU) for block in model.output_blocks)
    assert not isinstance(model.emb.act, torch.nn.Module)
    assert not isinstance(model.interaction_blocks[0].act, torch.nn.Module)
    assert not isinstance(model.interaction_blocks[0].layers_after_skip[0].act, torch.nn.Module)


def test_paper_preset_has_ocps_parameter_count(monkeypatch):
    # The sympy basis functions hold no parameters; skip building the 7 x 6 ones (seconds).
    monkeypatch.setattr(dimenet_pp, "_pyg_basis_functions", lambda n, k: ((), ()))
    cfg = helpers.compose_train(["model=dimenet_pp_paper", "activation=original"])
    assert cfg.dataset.cutoff == cfg.model.cutoff == 6.0
    model, _ = build_model(cfg.model, cfg.activation, "original")
    assert sum(p.numel() for p in model.parameters()) == 1_810_182
    # PyG's OutputPPBlock has no lin_up bias: 1,809,414 without it.
    biases = sum(block.lin_up.bias.numel() for block in model.output_blocks)
    assert 1_810_182 - biases == 1_809_414
    assert make(output_up_bias=False).output_blocks[0].lin_up.bias is None
