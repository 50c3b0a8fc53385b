"""Any file a user has, with one setting (`dataset.path`): format detection, molecule from the
file, splits that fit the file, units stated or converted, exact labels, and bad files named."""

from __future__ import annotations

import json
import shutil
import zipfile

import ase.io
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from ase import Atoms
from ase import units as ase_units
from ase.calculators.singlepoint import SinglePointCalculator
from helpers import TINY, compose_train, dcnn_train, record

from dcnn.data.atoms import AtomsData, DataError
from dcnn.data.datamodules import AtomsDataModule
from dcnn.data.pdebench import PdeDataError, read_pdebench_sample
from dcnn.data.readers import read_rmd17
from dcnn.data.sources import read_frames, split_sizes
from dcnn.rescaling import fit_label_scaler
from dcnn.tasks.potential import PotentialTask
from dcnn.tasks.weighting import FixedWeights
from dcnn.train import run

KCAL_IN_EV = ase_units.kcal / ase_units.mol


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def aspirin(data_root) -> AtomsData:
    """1,000 real aspirin frames (original MD17 labels, kcal/mol)."""
    return read_rmd17(data_root / "rmd17" / "rmd17_aspirin_train_01.npz", "aspirin")


def write_sgdml(path, frames: AtomsData, **metadata) -> None:
    """An sGDML/MD17 npz as sgdml.org serves it: E shaped (N, 1), 0-d metadata keys."""
    n = len(frames)
    np.savez(
        path,
        R=frames.positions.reshape(n, -1, 3),
        E=frames.energy[:, None],
        F=frames.forces.reshape(n, -1, 3),
        z=frames.numbers[: frames.n_atoms()[0]].astype(np.uint8),
        name=np.array("aspirin"),
        theory=np.array("DFT: PBE+TS"),
        md5=np.array("0123456789abcdef"),
        **{key: np.array(value) for key, value in metadata.items()},
    )


def write_extxyz(path, frames: AtomsData, energy_factor=1.0, cell=None, pbc=False) -> None:
    images = []
    for k in range(len(frames)):
        atoms_slice = slice(frames.offsets[k], frames.offsets[k + 1])
        atoms = Atoms(
            numbers=frames.numbers[atoms_slice],
            positions=frames.positions[atoms_slice],
            cell=cell,
            pbc=pbc,
        )
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=frames.energy[k] * energy_factor,
            forces=frames.forces[atoms_slice] * energy_factor,
        )
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")


def _train(tmp_path, *overrides: str) -> dict:
    result = run(compose_train([*TINY, "trainer.max_epochs=1", *overrides]), tmp_path / "run")
    assert result["status"] == "ok"
    return record(tmp_path / "run")


def test_an_sgdml_file_needs_only_its_path(tmp_path, aspirin):
    path = tmp_path / "md17_aspirin.npz"
    write_sgdml(path, aspirin.subset(np.arange(300)), e_unit="kcal/mol", r_unit="Ang")
    done = _train(tmp_path, f"dataset.path={path}")
    data = done["info"]["data"]
    assert (data["format"], data["molecule"], data["frames"]) == ("md17", "aspirin", 300)
    assert data["units_origin"] == "from the file (e_unit, r_unit)"
    assert done["units"] == {
        "energy": "kcal/mol",
        "forces": "kcal/mol/Angstrom",
        "positions": "Angstrom",
    }
    assert (data["atoms"], data["elements"], data["periodic"]) == ("21", ["H", "C", "O"], False)


def test_extxyz_files_with_and_without_a_cell_and_the_units_they_assume(tmp_path, aspirin):
    frames = aspirin.subset(np.arange(200))
    boxed, bare = tmp_path / "boxed.extxyz", tmp_path / "bare.xyz"
    write_extxyz(boxed, frames, cell=np.eye(3) * 30.0, pbc=False)
    assert 'pbc="F F F"' in boxed.read_text().splitlines()[1]
    assert "Lattice=" in boxed.read_text().splitlines()[1]
    write_extxyz(bare, frames)
    for path in (boxed, bare):
        facts = read_frames(path).facts()
        assert (facts["format"], facts["periodic"], facts["frames"]) == ("ase", False, 200)
        assert facts["units"]["energy"] == "eV"
        assert facts["units_origin"] == "assumed: ASE's eV and Angstrom"
    done = _train(tmp_path, f"dataset.path={boxed}", "dataset.n_train=100")
    assert done["info"]["data"]["n_test"] == 40 and done["units"]["energy"] == "eV"


def test_a_mev_file_states_its_unit_and_can_be_reported_in_another(tmp_path, aspirin):
    frames = aspirin.subset(np.arange(200))
    path = tmp_path / "frames_meV.extxyz"
    write_extxyz(path, frames, energy_factor=KCAL_IN_EV * 1000)  # kcal/mol -> meV
    stated = read_frames(path, energy_unit="meV")
    assert stated.units.label_units()["forces"] == "meV/Angstrom"
    np.testing.assert_allclose(stated.data.energy, frames.energy * KCAL_IN_EV * 1000)
    in_kcal = read_frames(path, energy_unit="meV", report_energy_unit="kcal/mol")
    np.testing.assert_allclose(in_kcal.data.energy, frames.energy, rtol=1e-12)
    # extxyz keeps forces to 8 decimals (of meV/A here)
    np.testing.assert_allclose(in_kcal.data.forces, frames.forces, rtol=1e-6, atol=1e-8)
    done = _train(
        tmp_path,
        f"dataset.path={path}",
        "dataset.energy_unit=meV",
        "dataset.report_energy_unit=kcal/mol",
    )
    assert done["units"]["energy"] == "kcal/mol"
    assert done["info"]["data"]["units_origin"].startswith("given")
    assert 0.1 < done["test"]["force_mae"] < 200  # kcal/mol/A, not 1e4 x that
    with pytest.raises(DataError, match=r"dataset.energy_unit='kcalmol' is not a known energy"):
        read_frames(path, energy_unit="kcalmol")


def test_bohr_and_hartree_files_are_converted_to_angstrom(tmp_path, aspirin):
    frames = aspirin.subset(np.arange(20))
    path = tmp_path / "md17_aspirin.npz"
    bohr = frames.subset(np.arange(20))
    bohr.positions = frames.positions / ase_units.Bohr
    write_sgdml(path, bohr, e_unit="kcal/mol", r_unit="Bohr")
    read = read_frames(path)
    np.testing.assert_allclose(read.data.positions, frames.positions, rtol=1e-12)
    # Forces in kcal/mol/Bohr become kcal/mol/Angstrom.
    np.testing.assert_allclose(read.data.forces, frames.forces / ase_units.Bohr, rtol=1e-12)


def test_an_rmd17_file_names_its_molecule(tmp_path, data_root):
    benzene = data_root / "rmd17" / "rmd17_benzene_train_01.npz"
    done = _train(tmp_path, f"dataset.path={benzene}")
    assert done["info"]["data"]["molecule"] == "benzene"
    with pytest.raises(
        DataError,
        match=r"for molecule 'benzene', but dataset.molecule=aspirin"
        r".*dataset.molecule=benzene",
    ):
        run(
            compose_train([*TINY, f"dataset.path={benzene}", "dataset.molecule=aspirin"]),
            tmp_path / "other",
        )


def test_splits_default_to_what_the_file_holds(tmp_path, aspirin):
    path = tmp_path / "thousand.extxyz"
    write_extxyz(path, aspirin)
    frames = AtomsDataModule(
        path=str(path), root=None, n_train=200, batch_size=10, eval_batch_size=50, cutoff=5.0
    )
    facts = frames.describe()
    assert (facts["n_train"], facts["n_val"], facts["n_test"]) == (200, 160, 640)
    assert split_sizes(9633, 1000, None, None, 1000, "x") == (1000, 200, 1000)
    assert split_sizes(50, 10, 5, None, 1000, "x") == (10, 5, 35)
    with pytest.raises(DataError, match=r"n_train=1000, but .* holds 900 frames.*at most 898"):
        split_sizes(900, 1000, None, None, 1000, "frames.extxyz")
    with pytest.raises(DataError, match=r"holds 100 frames, but .*n_val=50.*n_test=60"):
        split_sizes(100, 10, 50, 60, 1000, "frames.extxyz")
    with pytest.raises(DataError, match=r"holds 2 frame\(s\); a run needs at least 3"):
        split_sizes(2, 1, None, None, 1000, "two.extxyz")


def test_label_source_belongs_to_rmd17_files(tmp_path, aspirin):
    path = tmp_path / "f.extxyz"
    write_extxyz(path, aspirin.subset(np.arange(10)))
    with pytest.raises(DataError, match="label_source=rmd17 chooses between .* drop"):
        read_frames(path, label_source="rmd17")


# ----------------------------------------------------------------------------- bad files


def test_a_damaged_or_cut_archive_is_named(tmp_path, aspirin):
    good = tmp_path / "md17_aspirin.npz"
    write_sgdml(good, aspirin.subset(np.arange(50)))
    flipped = tmp_path / "flipped.npz"
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("R.npy")
    middle = info.header_offset + 200  # inside R.npy's stored bytes
    raw[middle : middle + 16] = bytes(b ^ 0xFF for b in raw[middle : middle + 16])
    flipped.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"flipped\.npz: key 'R' cannot be read .*damaged"):
        read_frames(flipped)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"cut\.npz: .*damaged or cut short"):
        read_frames(cut)


def test_a_text_file_where_an_npz_was_expected_says_so(tmp_path):
    text = tmp_path / "frames.npz"
    text.write_text("3\nwater\nO 0 0 0\n")
    with pytest.raises(DataError, match=r"frames\.npz: not an \.npz archive .*a text file\?"):
        read_frames(text)


def test_an_npz_of_another_kind_lists_its_keys_and_the_expected_ones(tmp_path):
    other = tmp_path / "weights.npz"
    np.savez(other, w=np.zeros(3))
    with pytest.raises(DataError, match=r"keys \['w'\], which is neither an rMD17 file"):
        read_frames(other)


def test_hdf5_files_that_are_not_what_was_expected(tmp_path, aspirin):
    fake = tmp_path / "1D_Advection_Sols_beta0.1.hdf5"
    fake.write_text("not hdf5")
    with pytest.raises(PdeDataError, match=r"beta0\.1\.hdf5: not an HDF5 file.*dcnn-data"):
        read_pdebench_sample(fake, "advection")
    import h5py

    real = tmp_path / "frames.h5"
    with h5py.File(real, "w") as handle:
        handle["positions"] = np.zeros((2, 3))
    with pytest.raises(DataError, match=r"frames\.h5: an HDF5 file; atomistic data are read"):
        read_frames(real)
    unknown = tmp_path / "frames.dat"
    unknown.write_bytes(b"\x00\x01\x02 binary")
    with pytest.raises(
        DataError,
        match=r"frames\.dat: (cannot tell its format|ASE cannot read"
        r" it).*expected .*extxyz",
    ):
        read_frames(unknown)


# ----------------------------------------------------------------------------- exact labels


class _Oracle(torch.nn.Module):
    """Predicts every frame's true energy, as read from the file in float64, encoded the way the
    task trains on it and returned in float32 (a model's precision). Frames are recognised by
    their first atom's position."""

    def __init__(self, frames: AtomsData, scaler) -> None:
        super().__init__()
        first_atoms = frames.positions[frames.offsets[:-1]].astype(np.float32)
        self.energy_of = {
            atom.tobytes(): energy for atom, energy in zip(first_atoms, frames.energy, strict=True)
        }
        self.scaler = scaler
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        starts = torch.cumsum(batch["n_atoms"], 0) - batch["n_atoms"]
        first = batch["positions"][starts].detach().numpy().astype(np.float32)
        true = torch.tensor([self.energy_of[atom.tobytes()] for atom in first], dtype=torch.float64)
        encoded = self.scaler.encode_energy(true, batch["n_atoms"]).float()
        position_term = torch.zeros_like(encoded).index_add(
            0, batch["batch"], batch["positions"].sum(-1) * 0.0
        )
        return encoded + position_term + 0.0 * self.unused


def test_a_model_predicting_the_exact_labels_scores_an_energy_mae_of_zero(data_root):
    datamodule = AtomsDataModule(
        path="rmd17",
        root=str(data_root),
        molecule="aspirin",
        n_train=1000,
        batch_size=20,
        eval_batch_size=100,
        cutoff=5.0,
    )
    train = datamodule.split("train")
    scaler = fit_label_scaler("standardize", train.energy, train.forces, train.n_atoms())
    oracle = _Oracle(datamodule.split("test"), scaler)
    task = PotentialTask(oracle, scaler, 1.0, 1.0, "mae", FixedWeights(), torch.optim.Adam)
    trainer = pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        inference_mode=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    (result,) = trainer.test(task, datamodule=datamodule, verbose=False)
    assert result["test/energy_mae"] < 1e-6  # kcal/mol; float32 labels before the shift: 0.008


def test_the_command_line_needs_only_dataset_path(tmp_path, aspirin):
    path = tmp_path / "my_frames.extxyz"
    write_extxyz(path, aspirin.subset(np.arange(120)))
    shutil.copy(path, tmp_path / "copy.extxyz")
    done = dcnn_train(
        [
            f"dataset.path={path}",
            "dataset.n_train=60",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    facts = json.loads((tmp_path / "run" / "metrics.json").read_text())["info"]["data"]
    assert facts["format"] == "ase" and facts["n_test"] == 48
    assert "energy_mae" in done.stdout and "eV" in done.stdout
    assert "as ase" in done.stdout and "assumed: ASE's eV and Angstrom" in done.stdout
