"""dcnn.ase.DcnnCalculator: a run's model as an ASE calculator, giving the run's own numbers."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import make_supercell
from ase.calculators.fd import calculate_numerical_forces
from ase.optimize import BFGS
from helpers import TINY, compose_train, record
from omegaconf import OmegaConf

from dcnn.ase import DcnnCalculator
from dcnn.data.datamodules import AtomsDataModule
from dcnn.train import run


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A tiny standardized SchNet on aspirin (per-atom shift and scale to undo)."""
    folder = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DCNN_DATA_ROOT", str(data_root))
        assert run(compose_train([*TINY, "trainer.max_epochs=1"]), folder)["status"] == "ok"
    return folder


def _frames(folder):
    config = OmegaConf.load(folder / "config_resolved.yaml")
    datamodule = AtomsDataModule(**OmegaConf.to_container(config.dataset, resolve=True))
    test = datamodule.split("test")
    for k in range(len(test)):
        atoms = slice(test.offsets[k], test.offsets[k + 1])
        structure = Atoms(numbers=test.numbers[atoms], positions=test.positions[atoms])
        yield structure, test.energy[k], test.forces[atoms]


def test_the_calculator_reproduces_the_runs_test_metrics(trained):
    calc = DcnnCalculator.from_run(trained)
    energy_errors, force_errors = [], []
    for atoms, energy, forces in _frames(trained):
        atoms.calc = calc
        energy_errors.append(abs(atoms.get_potential_energy() - energy))
        force_errors.append(np.abs(atoms.get_forces() - forces))
    test = record(trained)["test"]
    assert np.mean(energy_errors) == pytest.approx(test["energy_mae"], rel=1e-5)
    assert np.concatenate(force_errors).mean() == pytest.approx(test["force_mae"], rel=1e-5)
    assert calc.units["energy"] == "kcal/mol"


def test_float64_forces_are_the_negative_gradient_of_its_energy(trained):
    atoms, _, _ = next(_frames(trained))
    atoms.calc = DcnnCalculator.from_run(trained, dtype="float64")
    expected = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), expected, rtol=1e-5, atol=1e-6)


def test_periodic_structures_and_relaxation(tmp_path, data_root):
    folder = tmp_path / "oc"
    files = sorted((data_root / "oc20").glob("*.traj"))[:4]
    (tmp_path / "data").mkdir()
    for file in files:
        (tmp_path / "data" / file.name).symlink_to(file)
    overrides = [
        "experiment=oc_dc",
        f"dataset.path={tmp_path / 'data'}",
        "dataset.n_train=12",
        "dataset.n_val=4",
        "dataset.n_test=4",
        "dataset.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "model.hidden_channels=16",
        "model.num_filters=16",
        "model.num_interactions=1",
        "model.num_gaussians=8",
        "model.cutoff=4.0",
    ]
    assert run(compose_train(overrides), folder)["status"] == "ok"
    import ase.io

    slab = ase.io.read(files[0], index=0)
    slab.calc = DcnnCalculator.from_run(folder, dtype="float64")
    energy = slab.get_potential_energy()
    double = make_supercell(slab, np.diag([2, 1, 1]))
    double.calc = slab.calc
    assert double.get_potential_energy() == pytest.approx(2 * energy, rel=1e-8)
    molecule = slab.copy()
    molecule.calc = slab.calc
    molecule.rattle(0.05, seed=1)
    start = molecule.get_potential_energy()
    BFGS(molecule, logfile=None).run(fmax=1e-3, steps=5)
    assert molecule.get_potential_energy() < start


def test_a_folder_without_a_run_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config_resolved\.yaml is missing"):
        DcnnCalculator.from_run(tmp_path)
