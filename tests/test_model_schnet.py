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
