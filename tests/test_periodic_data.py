"""Periodic catalyst data as OC20/OC22 users expect it: fixed atoms out of the force loss and
metrics (S2EF), splits by trajectory, per-element reference energies, and the oc experiments."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train

from dcnn.data.atoms import DataError, split_indices
from dcnn.data.datamodules import AtomsDataModule
from dcnn.data.readers import read_ase, read_rmd17
from dcnn.models.schnet import SchNet
from dcnn.rescaling import fit_label_scaler
from dcnn.tasks.potential import PotentialTask
from dcnn.tasks.weighting import FixedWeights
from dcnn.train import run

SMALL_SCHNET = [
    "model.hidden_channels=16",
    "model.num_filters=16",
    "model.num_interactions=1",
    "model.num_gaussians=8",
    "model.cutoff=4.0",
]


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def oc20_folder(data_root, tmp_path_factory):
    """Ten of the shared OC20 trajectories (about 1,500 frames), linked into a folder."""
    folder = tmp_path_factory.mktemp("oc20")
    for file in sorted((data_root / "oc20").glob("*.traj"))[:10]:
        (folder / file.name).symlink_to(file)
    return folder


@pytest.fixture(scope="module")
def oc20(oc20_folder):
    return read_ase(oc20_folder)


def test_oc20_marks_fixed_atoms_and_names_one_system_per_trajectory(oc20, oc20_folder):
    files = sorted(oc20_folder.glob("*.traj"))
    assert len(np.unique(oc20.systems)) == len(files) == 10
    first = read_ase(files[0])
    assert first.systems is None  # one file: nothing says which frames belong together
    import ase.io

    atoms = ase.io.read(files[0], index=0)
    (constraint,) = atoms.constraints
    held = np.zeros(len(atoms), dtype=bool)
    held[constraint.get_indices()] = True
    np.testing.assert_array_equal(first.fixed[: len(atoms)], held)
    assert 0 < held.sum() < len(atoms)


def test_trajectories_never_share_a_split_and_md_frames_are_split_one_by_one(
    oc20, oc20_folder, data_root
):
    module = AtomsDataModule(
        path=str(oc20_folder),
        root=None,
        n_train=300,
        n_test=400,
        batch_size=4,
        eval_batch_size=8,
        cutoff=4.0,
    )
    assert module.describe()["split"] == "systems"
    systems = {name: set(oc20.systems[index]) for name, index in module.splits.items()}
    assert not systems["train"] & systems["test"] and not systems["train"] & systems["val"]
    assert not systems["val"] & systems["test"]
    assert [len(module.splits[name]) for name in ("train", "val", "test")] == [300, 200, 400]
    by_frame = split_indices(len(oc20), 300, 200, 400, seed=0)
    assert set(oc20.systems[by_frame[0]]) & set(oc20.systems[by_frame[2]])  # what it avoids
    md = AtomsDataModule(
        path="rmd17",
        root=str(data_root),
        molecule="ethanol",
        n_train=100,
        batch_size=10,
        eval_batch_size=10,
        cutoff=4.0,
    )
    assert md.describe()["split"] == "frames"
    with pytest.raises(DataError, match="split=systems, but .* does not say which system"):
        AtomsDataModule(
            path="rmd17",
            root=str(data_root),
            molecule="ethanol",
            n_train=100,
            batch_size=10,
            eval_batch_size=10,
            cutoff=4.0,
            split="systems",
        )
    with pytest.raises(DataError, match="leaves 0 systems, too few for a test"):
        split_indices(len(oc20), len(oc20) - 2, 1, 1, seed=0, systems=oc20.systems)


@pytest.mark.parametrize("n_train", [10, 300, 1000])
def test_default_split_sizes_work_by_system(oc20_folder, n_train):
    # The defaults ask for frame counts that whole trajectories rarely match: test and
    # validation take what training leaves, never training frames.
    module = AtomsDataModule(
        path=str(oc20_folder),
        root=None,
        n_train=n_train,
        batch_size=4,
        eval_batch_size=8,
        cutoff=4.0,
    )
    sizes = {name: len(index) for name, index in module.splits.items()}
    assert sizes["train"] == n_train and sizes["val"] > 0 and sizes["test"] > 0
    systems = {name: set(module.data.systems[index]) for name, index in module.splits.items()}
    assert not (systems["train"] & systems["test"]) and not (systems["val"] & systems["test"])
    assert not systems["train"] & systems["val"]


def _force_mae(datamodule, exclude: bool) -> tuple[float, float]:
    """The test force MAE the task reports, and the MAE over the free atoms computed here."""
    torch.manual_seed(0)
    model = SchNet(
        hidden_channels=16, num_filters=16, num_interactions=1, num_gaussians=8, cutoff=4.0
    )
    train = datamodule.split("train")
    scaler = fit_label_scaler("none", train.energy, train.forces, train.n_atoms())
    task = PotentialTask(
        model,
        scaler,
        1.0,
        1.0,
        "mae",
        FixedWeights(),
        torch.optim.Adam,
        exclude_fixed_atoms=exclude,
    )
    trainer = pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        inference_mode=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    (result,) = trainer.test(task, datamodule=datamodule, verbose=False)
    errors, fixed = [], []
    for batch in datamodule.test_dataloader():
        with torch.enable_grad():
            _, forces = task.model(batch)
        errors.append((forces.detach().double() - batch["forces"]).abs())
        fixed.append(batch["fixed"])
    errors, fixed = torch.cat(errors), torch.cat(fixed)
    return result["test/force_mae"], float(errors[~fixed].mean())


def test_forces_of_fixed_atoms_are_left_out_of_metrics_unless_asked(oc20_folder):
    datamodule = AtomsDataModule(
        path=str(oc20_folder),
        root=None,
        n_train=20,
        n_val=4,
        n_test=8,
        batch_size=4,
        eval_batch_size=4,
        cutoff=4.0,
    )
    reported, free_only = _force_mae(datamodule, exclude=True)
    assert reported == pytest.approx(free_only, rel=1e-5)
    with_fixed, _ = _force_mae(datamodule, exclude=False)
    assert abs(with_fixed - free_only) > 1e-3 * free_only  # counting them changes the metric


def test_mixed_compositions_get_per_element_reference_energies(oc20, data_root):
    frames = oc20.subset(np.arange(0, len(oc20), 5))
    per_atom = fit_label_scaler("standardize", frames.energy, frames.forces, frames.n_atoms())
    per_element = fit_label_scaler(
        "standardize", frames.energy, frames.forces, frames.n_atoms(), numbers=frames.numbers
    )
    assert float(per_atom.scale) > 100  # eV: one mean per atom leaves the composition spread
    assert float(per_element.scale) < 0.1 * float(per_atom.scale)
    assert set(per_element.describe()["element_energies"]) == set(np.unique(frames.numbers))
    batch_frame = torch.as_tensor(np.repeat(np.arange(len(frames)), frames.n_atoms()))
    numbers, n_atoms = torch.as_tensor(frames.numbers), torch.as_tensor(frames.n_atoms())
    energy = torch.as_tensor(frames.energy)
    encoded = per_element.encode_energy(energy, n_atoms, numbers, batch_frame)
    assert float(encoded.std(unbiased=False)) == pytest.approx(1.0, rel=1e-9)
    decoded = per_element.decode_energy(encoded, n_atoms, numbers, batch_frame)
    torch.testing.assert_close(decoded, energy, rtol=1e-13, atol=1e-9)
    with pytest.raises(ValueError, match="per-element reference energies: pass the atomic"):
        per_element.encode_energy(energy, n_atoms)
    # One composition (MD17): exactly the per-atom mean of before.
    aspirin = read_rmd17(data_root / "rmd17", "aspirin").subset(np.arange(300))
    old = fit_label_scaler("standardize", aspirin.energy, aspirin.forces, aspirin.n_atoms())
    new = fit_label_scaler(
        "standardize", aspirin.energy, aspirin.forces, aspirin.n_atoms(), numbers=aspirin.numbers
    )
    assert old.describe() == new.describe() and "element_energies" not in new.describe()


@pytest.mark.parametrize("experiment", ["oc_baseline", "oc_dc"])
def test_the_oc_experiments_train_on_periodic_data(tmp_path, oc20_folder, experiment):
    overrides = [
        f"experiment={experiment}",
        f"dataset.path={oc20_folder}",
        *SMALL_SCHNET,
        "dataset.n_train=12",
        "dataset.n_val=4",
        "dataset.n_test=8",
        "dataset.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    result = run(compose_train(overrides), tmp_path)
    assert result["status"] == "ok" and result["units"]["energy"] == "eV"
    data = json.loads((tmp_path / "metrics.json").read_text())["info"]["data"]
    assert data["periodic"] and data["split"] == "systems" and "fixed_atoms" in data


def test_joined_data_keep_their_systems_apart(oc20):
    first, second = oc20.subset(np.arange(0, 300)), oc20.subset(np.arange(300, 600))
    joined = type(oc20).concatenate([first, second])
    assert len(np.unique(joined.systems)) == len(np.unique(first.systems)) + len(
        np.unique(second.systems)
    )
    independent = type(oc20).concatenate([first, replace(second, systems=None)])
    assert len(np.unique(independent.systems)) == len(np.unique(first.systems)) + 300
    assert type(oc20).concatenate([replace(first, systems=None)]).systems is None


@pytest.mark.parametrize("fixed_atoms", ["exclude", "include"])
def test_a_run_builds_per_element_references_and_honours_fixed_atoms(oc20_folder, fixed_atoms):
    from dcnn.tasks.potential import build_potential_run
    from dcnn.train import task_parts

    cfg = compose_train(
        [
            "experiment=oc_baseline",
            "rescaling=standardize",
            f"dataset.path={oc20_folder}",
            f"dataset.fixed_atoms={fixed_atoms}",
            "dataset.n_train=450",  # three or more trajectories: several compositions
            "dataset.n_val=150",
            "dataset.n_test=150",
        ]
    )
    datamodule, task, _, _, info = build_potential_run(cfg, task_parts(cfg))
    assert task.exclude_fixed_atoms is (fixed_atoms == "exclude")
    assert info["data"]["fixed_atoms"].startswith(fixed_atoms)
    elements = set(np.unique(datamodule.split("train").numbers))
    assert len(elements) > 1 and set(info["label_scaler"]["element_energies"]) == elements
