"""GemNet-T through the checks every energy model passes (tests/model_checks.py), plus its own:
fixed published scale factors, collinear atoms, the paper's activation scope and the size of
the paper preset."""

from __future__ import annotations

import math

import hydra
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from helpers import compose_train
from model_checks import (
    atoms_data,
    batch_of,
    check_forces_match_finite_differences,
    check_invariances,
    check_periodic_images,
    check_training_lowers_the_loss,
)

from dcnn.activations import IReLU
from dcnn.build import build_model
from dcnn.data.atoms import AtomsCollate, AtomsDataset
from dcnn.data.readers import read_rmd17
from dcnn.models.forces import EnergyForceModel
from dcnn.models.gemnet_blocks import CircularBasisDownProjection, EfficientBilinear, ScaledSiLU
from dcnn.models.gemnet_t import GemNetT
from dcnn.models.triplets import gemnet_triplets
from dcnn.surgery import replace_activations

CUTOFF = 4.0
NUM_BLOCKS = 2
NUM_ATOM = 1

# models.md section 4 (OCP's gemnet-dT.json): interaction blocks 1..3 and output blocks 0..3.
PUBLISHED = {
    "int_blocks.{}.trip_interaction.scale_rbf.scale_factor": (18.87, 16.11, 15.02),
    "int_blocks.{}.trip_interaction.scale_cbf_sum.scale_factor": (8.00, 7.61, 7.03),
    "int_blocks.{}.atom_update.scale_sum.scale_factor": (1.22, 0.97, 0.89),
    "out_blocks.{}.scale_sum.scale_factor": (1.64, 1.11, 0.95, 0.91),
}


def make() -> GemNetT:
    torch.manual_seed(0)
    return GemNetT(
        num_spherical=3,
        num_radial=8,
        num_blocks=NUM_BLOCKS,
        emb_size_atom=16,
        emb_size_edge=16,
        emb_size_trip=8,
        emb_size_rbf=4,
        emb_size_cbf=4,
        emb_size_bil_trip=8,
        num_after_skip=1,
        num_atom=NUM_ATOM,
        cutoff=CUTOFF,
    )


def output_activations(num_blocks: int, num_atom: int) -> set[str]:
    """The activations the paper replaced: out_blocks[i].layers[0] and
    layers[1..num_atom].dense_mlp[0, 1], each a ``._activation``."""
    names = set()
    for block in range(num_blocks + 1):
        names.add(f"out_blocks.{block}.layers.0._activation")
        for layer in range(1, num_atom + 1):
            for dense in (0, 1):
                names.add(f"out_blocks.{block}.layers.{layer}.dense_mlp.{dense}._activation")
    return names


def changed_names(lines: list[str]) -> set[str]:
    return {line.split(":")[0] for line in lines}


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


def test_collinear_atoms_give_finite_forces():
    # CO2-like line plus a bent molecule: cos(phi) = -1 and +1 exactly (b -> a, c -> a with b, c
    # on the same or opposite sides of a), where an arccos would give NaN gradients.
    line = Atoms("OCO", positions=[[0.0, 0.0, 0.0], [1.16, 0.0, 0.0], [2.32, 0.0, 0.0]])
    chain = Atoms("CCC", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.3], [0.0, 0.0, 2.7]])
    batch = batch_of(atoms_data([line, chain]), [0, 1], CUTOFF)
    check_forces_match_finite_differences(make, batch, atoms=[0, 1, 2, 4])


def test_scale_factors_are_the_published_constants_and_not_trained(aspirin):
    model = make()
    buffers = dict(model.named_buffers())
    expected = {}
    for pattern, values in PUBLISHED.items():
        blocks = NUM_BLOCKS + 1 if pattern.startswith("out_blocks") else NUM_BLOCKS
        for block in range(blocks):
            expected[pattern.format(block)] = values[block]
    scale_buffers = {name for name in buffers if name.endswith("scale_factor")}
    assert scale_buffers == set(expected)
    for name, value in expected.items():
        assert float(buffers[name]) == pytest.approx(value, abs=1e-6), name
    parameter_ids = {id(p) for p in model.parameters()}
    assert not any(id(buffers[name]) in parameter_ids for name in expected)
    assert all(name in model.state_dict() for name in expected)

    # One optimizer step changes the weights but not the scale factors.
    before = {name: buffers[name].clone() for name in expected}
    weight_before = model.out_blocks[0].out_energy.linear.weight.detach().clone()
    batch = AtomsCollate(CUTOFF)([AtomsDataset(aspirin.subset(np.arange(2)))[i] for i in (0, 1)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    energy, forces = EnergyForceModel(model).train()(batch, create_graph=True)
    (energy.abs().mean() + forces.abs().mean()).backward()
    optimizer.step()
    after = dict(model.named_buffers())
    for name in expected:
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(model.out_blocks[0].out_energy.linear.weight, weight_before)


def test_irelu_replaces_exactly_the_output_block_activations():
    cfg = compose_train(["model=gemnet_t", "activation=irelu"])
    assert cfg.dataset.cutoff == cfg.model.cutoff
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    assert isinstance(model, GemNetT)
    expected = output_activations(cfg.model.num_blocks, cfg.model.num_atom)
    assert changed_names(report.replaced) == expected
    assert len(report.replaced) == len(expected)
    assert all(line.endswith("ScaledSiLU -> IReLU") for line in report.replaced)
    assert report.removed == []  # GemNet has no normalization layers
    modules = dict(model.named_modules())
    assert all(isinstance(modules[name], IReLU) for name in expected)
    # The interactions and embeddings keep their ScaledSiLU.
    remaining = [name for name, module in modules.items() if isinstance(module, ScaledSiLU)]
    assert remaining and not any(name.startswith("out_blocks") for name in remaining)


def test_scope_all_replaces_every_scaled_silu():
    model = make()
    scaled = {name for name, module in model.named_modules() if isinstance(module, ScaledSiLU)}
    report = replace_activations(model, IReLU, scope=model.activation_scopes["all"])
    assert changed_names(report.replaced) == scaled
    assert not any(isinstance(module, ScaledSiLU) for module in model.modules())


def test_padded_bilinear_equals_the_sum_over_triplets():
    """The zero-padded (E, Kmax, .) bilinear layer is sum_k sum_{t,c,l,r} of
    rbf(d_ca)_r W_down[l, r, c] Y_l(k) x_t(k) W[t, c, o] over the triplets k of each edge ca."""
    torch.manual_seed(1)
    molecule = Atoms("COHHN", positions=np.random.default_rng(2).normal(size=(5, 3)))
    batch = batch_of(atoms_data([molecule]), [0], cutoff=10.0)
    triplets = gemnet_triplets(batch["edge_index"], 5)
    n_edges, n_triplets = batch["edge_index"].shape[1], len(triplets.ca)
    assert n_edges == 20 and n_triplets == 5 * 4 * 3 and triplets.max_per_edge == 3
    down = CircularBasisDownProjection(num_spherical=3, num_radial=5, emb_size_cbf=4).double()
    bilinear = EfficientBilinear(emb_size=6, emb_size_cbf=4, units_out=7).double()
    rbf = torch.randn(n_edges, 5, dtype=torch.float64)
    harmonics = torch.randn(n_triplets, 3, dtype=torch.float64)
    x = torch.randn(n_triplets, 6, dtype=torch.float64)
    basis = down(rbf, harmonics, triplets.ca, triplets.rank, triplets.max_per_edge)
    out = bilinear(basis, x, triplets.ca, triplets.rank, triplets.max_per_edge)
    expected = torch.zeros(n_edges, 7, dtype=torch.float64)
    for k in range(n_triplets):
        e = int(triplets.ca[k])
        expected[e] += torch.einsum(
            "r,lrc,l,t,tco->o", rbf[e], down.weight, harmonics[k], x[k], bilinear.weight
        )
    torch.testing.assert_close(out, expected)


def test_scaled_silu_is_silu_over_0_6():
    x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    torch.testing.assert_close(ScaledSiLU()(x), torch.nn.functional.silu(x) / 0.6)


def test_paper_preset_has_the_published_size():
    cfg = compose_train(["model=gemnet_t_paper"])
    assert (cfg.model.cutoff, cfg.model.num_blocks, cfg.model.emb_size_edge) == (6.0, 3, 512)
    model = hydra.utils.instantiate(cfg.model)
    n_parameters = sum(p.numel() for p in model.parameters())
    assert n_parameters == 24_296_960  # models.md section 7, gradient forces
    assert all(p.requires_grad for p in model.parameters())
    scale_factors = [name for name, _ in model.named_buffers() if name.endswith("scale_factor")]
    assert len(scale_factors) == 13
    assert math.isclose(float(model.out_blocks[3].scale_sum.scale_factor), 0.91, rel_tol=1e-6)
