"""Label rescaling: the constant of paper eq. 4, exact inverses, training-split statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcnn.data.readers import read_rmd17
from dcnn.rescaling import LabelScaler, fit_label_scaler, power_of_ten


@pytest.fixture(scope="module")
def aspirin(data_root):
    return read_rmd17(data_root / "rmd17", "aspirin", label_source="md17")


def test_power_of_ten_for_md17_aspirin_is_1e6(aspirin):
    scaler = fit_label_scaler("power_of_ten", aspirin.energy, aspirin.forces, aspirin.n_atoms())
    assert float(scaler.scale) == 1e6
    scaled = aspirin.energy / float(scaler.scale)
    assert np.abs(scaled).max() <= 1 and np.abs(scaled).max() > 0.1


@pytest.mark.parametrize(
    "largest,expected",
    [(0.5, 1.0), (1.0, 1.0), (1.0001, 10.0), (999.0, 1e3), (1000.0, 1e3), (406737.0, 1e6)],
)
def test_power_of_ten_is_the_smallest_bound(largest, expected):
    assert power_of_ten(np.array([-largest]), np.zeros((1, 3))) == expected


def test_forces_can_set_the_power_of_ten():
    assert power_of_ten(np.array([3.0]), np.array([[0.0, -250.0, 1.0]])) == 1e3


@pytest.mark.parametrize("name", ["none", "power_of_ten", "fixed", "standardize"])
def test_inverse_restores_labels_exactly(aspirin, name):
    train = aspirin.subset(np.arange(200))
    scaler = fit_label_scaler(name, train.energy, train.forces, train.n_atoms(), scale=1e4)
    energy = torch.as_tensor(aspirin.energy[:50])
    n_atoms = torch.as_tensor(aspirin.n_atoms()[:50])
    forces = torch.as_tensor(aspirin.forces[: 50 * 21])
    roundtrip_e = scaler.decode_energy(scaler.encode_energy(energy, n_atoms), n_atoms)
    roundtrip_f = scaler.decode_forces(scaler.encode_forces(forces))
    torch.testing.assert_close(roundtrip_e, energy, rtol=1e-14, atol=1e-9)
    torch.testing.assert_close(roundtrip_f, forces, rtol=1e-14, atol=1e-12)


def test_standardize_uses_training_statistics_and_shares_the_scale(aspirin):
    train = aspirin.subset(np.arange(300))
    scaler = fit_label_scaler("standardize", train.energy, train.forces, train.n_atoms())
    encoded = scaler.encode_energy(torch.as_tensor(train.energy), torch.as_tensor(train.n_atoms()))
    assert abs(float(encoded.mean())) < 1e-8
    assert float(encoded.std(unbiased=False)) == pytest.approx(1.0, rel=1e-10)
    forces = torch.as_tensor(train.forces)
    torch.testing.assert_close(scaler.encode_forces(forces), forces / float(scaler.scale))
    other = fit_label_scaler(
        "standardize", aspirin.energy[300:600], aspirin.forces, aspirin.n_atoms()[300:600]
    )
    assert float(other.shift_per_atom) != float(scaler.shift_per_atom)


def test_bad_rescaling_options_are_named():
    with pytest.raises(ValueError, match="unknown rescaling 'unit'"):
        fit_label_scaler("unit", np.ones(2), np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="rescaling.scale"):
        fit_label_scaler("fixed", np.ones(2), np.ones((2, 3)), np.ones(2), scale=None)
    with pytest.raises(ValueError, match="positive finite"):
        LabelScaler(scale=0.0)
    with pytest.raises(ValueError, match="vary"):
        fit_label_scaler("standardize", np.ones(3), np.ones((3, 3)), np.ones(3))


def test_per_element_references_survive_a_state_dict_round_trip():
    fitted = LabelScaler(scale=2.0, element_energies={1: -0.5, 8: -3.0})
    loaded = LabelScaler()
    assert not loaded.per_element
    loaded.load_state_dict(fitted.state_dict())
    assert loaded.per_element
    n_atoms, numbers, frame = torch.tensor([3]), torch.tensor([8, 1, 1]), torch.tensor([0, 0, 0])
    assert float(loaded.reference(n_atoms, numbers, frame)) == -4.0
