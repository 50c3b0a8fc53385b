"""CGCNN (OCP variant) through the shared model checks, plus its surgery and readout options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, make_supercell
from helpers import compose_train
from model_checks import (
    atoms_data,
    batch_of,
    check_forces_match_finite_differences,
    check_invariances,
    check_periodic_images,
    check_training_lowers_the_loss,
    energies,
)
from torch import nn

from dcnn.build import build_model
from dcnn.data.readers import read_rmd17
from dcnn.models.cgcnn import CGCNN
from dcnn.surgery import RemovedNormalization

CUTOFF = 4.0


def make(readout: str = "sum") -> CGCNN:
    torch.manual_seed(0)
    return CGCNN(
        atom_embedding_size=16,
        num_graph_conv_layers=2,
        fc_feat_size=16,
        num_fc_layers=3,
        num_gaussians=10,
        cutoff=CUTOFF,
        readout=readout,
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
    # CGCNN has no envelope: E jumps when a pair crosses the cutoff. The finite differences
    # are only valid if no pair of a moved atom lies within the step of the cutoff.
    positions = batch["positions"]
    for atom in atoms:
        same_frame = batch["batch"] == batch["batch"][atom]
        distances = (positions[same_frame] - positions[atom]).norm(dim=-1)
        assert float((distances - CUTOFF).abs().min()) > 1e-3
    check_forces_match_finite_differences(make, batch, atoms=atoms)


def test_energy_is_invariant_to_rotation_translation_and_permutation(aspirin):
    check_invariances(make, aspirin, CUTOFF)


def test_periodic_images_count_as_the_same_atoms():
    check_periodic_images(make, bulk("Cu", "fcc", a=3.6, cubic=True), CUTOFF)


def test_mean_readout_gives_intensive_energies():
    structure = bulk("Cu", "fcc", a=3.6, cubic=True)
    supercell = make_supercell(structure, np.diag([2, 1, 1]))
    batch = batch_of(atoms_data([structure, supercell]), [0, 1], CUTOFF)
    single, double = energies(make("mean").double().eval(), batch)
    torch.testing.assert_close(double, single, rtol=1e-9, atol=1e-9)
    single, double = energies(make("sum").double().eval(), batch)
    torch.testing.assert_close(double, 2 * single, rtol=1e-9, atol=1e-9)


def test_a_few_training_steps_lower_the_loss(aspirin):
    # The force term dominates this loss and the tiny CGCNN's initial energy offset is small,
    # so 8 steps cannot lower it by 10%: its forces start to fit after some 40 steps.
    check_training_lowers_the_loss(make, aspirin, CUTOFF, steps=50, lr=3e-3)


def test_normalization_layers_names_its_norm_layers():
    model = make()
    modules = dict(model.named_modules())
    kinds = [type(modules[name]) for name in model.normalization_layers]
    assert kinds == [nn.BatchNorm1d, nn.LayerNorm] * 2


def test_irelu_goes_where_the_paper_put_it_and_no_batchnorm_keeps_the_layernorms():
    cfg = compose_train(["model=cgcnn", "activation=irelu", "normalization=no_batchnorm"])
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    assert report.replaced == [
        "conv_to_fc.1: Softplus -> IReLU",
        "fcs.1: Softplus -> IReLU",
        "fcs.3: Softplus -> IReLU",
    ]
    batch_norms = [name for name in model.normalization_layers if name.endswith("bn1")]
    assert sorted(line.split(":")[0] for line in report.removed) == batch_norms
    modules = dict(model.named_modules())
    for name in model.normalization_layers:
        expected = RemovedNormalization if name.endswith("bn1") else nn.LayerNorm
        assert type(modules[name]) is expected, name


def test_normalization_none_removes_batchnorm_and_layernorm():
    cfg = compose_train(["model=cgcnn", "activation=irelu", "normalization=none"])
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    assert sorted(line.split(":")[0] for line in report.removed) == sorted(
        model.normalization_layers
    )
    assert not any(isinstance(m, nn.BatchNorm1d | nn.LayerNorm) for m in model.modules())
