"""Atomistic data layer on the real shared data: readers, container, splits, dataset, collate."""

from __future__ import annotations

import pickle
import re
from dataclasses import replace
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list

from dcnn.data.atoms import AtomsCollate, AtomsData, AtomsDataset, DataError, split_indices
from dcnn.data.readers import (
    DEFAULT_UNITS,
    DataNotFoundError,
    load_atoms,
    read_ase,
    read_md17_npz,
    read_rmd17,
    resolve_data_path,
)

# Small OC20 trajectories keep the tests fast.
OC20_FILES = ("random1000156.traj", "random1000163.traj")


@pytest.fixture(scope="module")
def aspirin(data_root) -> AtomsData:
    return load_atoms("rmd17", data_root / "rmd17", molecule="aspirin")


@pytest.fixture(scope="module")
def oc20_folder(data_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("oc20_subset")
    for name in OC20_FILES:
        (folder / name).symlink_to(data_root / "oc20" / name)
    return folder


@pytest.fixture(scope="module")
def oc20(oc20_folder) -> AtomsData:
    return load_atoms("ase", oc20_folder)


def frame_atoms(data: AtomsData, index: int) -> Atoms:
    """One frame as an ASE Atoms with a SinglePointCalculator carrying its labels."""
    atoms_slice = slice(data.offsets[index], data.offsets[index + 1])
    atoms = Atoms(
        numbers=data.numbers[atoms_slice],
        positions=data.positions[atoms_slice],
        cell=data.cell[index],
        pbc=data.pbc[index],
    )
    atoms.calc = SinglePointCalculator(
        atoms, energy=data.energy[index], forces=data.forces[atoms_slice]
    )
    return atoms


def write_md17_npz(path: Path, data: AtomsData, **overrides) -> Path:
    """Original-MD17 layout (sgdml.org) from frames of one molecule."""
    n_frames = len(data)
    arrays = {
        "R": data.positions.reshape(n_frames, -1, 3),
        "E": data.energy[:, None],
        "F": data.forces.reshape(n_frames, -1, 3),
        "z": data.numbers[: data.n_atoms()[0]].astype(np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def assert_same_frames(actual: AtomsData, expected: AtomsData, atol: float = 0.0) -> None:
    np.testing.assert_array_equal(actual.numbers, expected.numbers)
    np.testing.assert_array_equal(actual.offsets, expected.offsets)
    np.testing.assert_array_equal(actual.pbc, expected.pbc)
    for key in ("positions", "energy", "forces", "cell"):
        np.testing.assert_allclose(getattr(actual, key), getattr(expected, key), rtol=0, atol=atol)


# --- rMD17 / MD17 -------------------------------------------------------------------------


def test_rmd17_pools_all_files_and_deduplicates(aspirin, data_root):
    files = sorted((data_root / "rmd17").glob("rmd17_aspirin_*.npz"))
    assert len(files) == 10
    old_indices = [np.load(file)["old_indices"] for file in files]
    raw_total = sum(len(indices) for indices in old_indices)
    unique = np.unique(np.concatenate(old_indices))
    assert len(aspirin) == len(unique) < raw_total
    np.testing.assert_array_equal(aspirin.frame_ids, unique)
    assert aspirin.units == DEFAULT_UNITS["rmd17"]
    assert not aspirin.pbc.any() and not aspirin.cell.any()
    np.testing.assert_array_equal(aspirin.n_atoms(), 21)


def test_md17_labels_have_the_papers_energy_scale_and_zero_net_force(aspirin):
    assert aspirin.energy.mean() == pytest.approx(-406737, abs=5)
    net_force = aspirin.forces.reshape(len(aspirin), -1, 3).sum(axis=1)
    assert np.abs(net_force).max() < 1e-3


def test_rmd17_label_source_selects_recomputed_labels(aspirin, data_root):
    file = data_root / "rmd17" / "rmd17_aspirin_test_01.npz"
    revised = read_rmd17(file, "aspirin", label_source="rmd17")
    original = read_rmd17(file, "aspirin", label_source="md17")
    raw = np.load(file)
    order = np.argsort(raw["old_indices"])
    np.testing.assert_array_equal(revised.energy, raw["energies"][order])
    np.testing.assert_array_equal(original.energy, raw["old_energies"][order])
    np.testing.assert_array_equal(revised.positions, raw["coords"][order].reshape(-1, 3))
    # The single file's frames appear unchanged in the pooled data.
    assert_same_frames(
        original, aspirin.subset(np.searchsorted(aspirin.frame_ids, original.frame_ids))
    )


def test_md17_npz_round_trip_from_real_frames(aspirin, tmp_path):
    frames = aspirin.subset([0, 5, 17, 400])
    read_back = read_md17_npz(write_md17_npz(tmp_path / "md17_aspirin.npz", frames))
    assert_same_frames(read_back, frames)
    np.testing.assert_array_equal(read_back.frame_ids, np.arange(4))
    flat_energy = write_md17_npz(tmp_path / "flat.npz", frames, E=frames.energy)
    assert_same_frames(load_atoms("md17", flat_energy), frames)


# --- ASE files (OC20) ----------------------------------------------------------------------


def test_oc20_folder_is_periodic_with_raw_forces_on_fixed_atoms(oc20, oc20_folder):
    trajectories = [ase.io.read(oc20_folder / name, index=":") for name in OC20_FILES]
    assert len(oc20) == sum(len(frames) for frames in trajectories)
    np.testing.assert_array_equal(oc20.frame_ids, np.arange(len(oc20)))
    assert oc20.pbc.all() and (np.abs(np.linalg.det(oc20.cell)) > 1.0).all()
    assert oc20.units == DEFAULT_UNITS["ase"]
    first_of_second_file = len(trajectories[0])
    atoms = trajectories[1][0]
    atom_range = slice(oc20.offsets[first_of_second_file], oc20.offsets[first_of_second_file + 1])
    np.testing.assert_array_equal(oc20.positions[atom_range], atoms.positions)
    assert oc20.energy[first_of_second_file] == atoms.get_potential_energy()
    fixed_atoms = atoms.constraints[0].get_indices()
    assert np.abs(atoms.get_forces()[fixed_atoms]).max() == 0.0  # what a naive reader would get
    assert np.abs(oc20.forces[atom_range][fixed_atoms]).max() > 1e-3


@pytest.mark.parametrize("suffix", ["extxyz", "db"])
def test_ase_round_trip_of_periodic_frames(oc20, aspirin, tmp_path, suffix):
    # Periodic frames of two sizes plus a molecule without a cell.
    frames = [frame_atoms(oc20, 0), frame_atoms(oc20, len(oc20) - 1), frame_atoms(aspirin, 3)]
    path = tmp_path / f"frames.{suffix}"
    ase.io.write(path, frames)
    expected = AtomsData.concatenate(
        [oc20.subset([0, len(oc20) - 1]), replace(aspirin.subset([3]), units=oc20.units)]
    )
    read_back = read_ase(path)
    assert_same_frames(read_back, expected, atol=1e-7)  # extxyz stores 8 decimals
    assert read_back.source == str(path)


# --- errors -------------------------------------------------------------------------------


def test_missing_key_and_wrong_shape_name_file_key_and_shape(aspirin, tmp_path):
    frames = aspirin.subset([0, 1, 2])
    missing = write_md17_npz(tmp_path / "no_forces.npz", frames, F=None)
    with pytest.raises(DataError, match=r"no_forces\.npz: missing key 'F'"):
        read_md17_npz(missing)
    wrong = write_md17_npz(tmp_path / "wrong.npz", frames, F=np.zeros((3, 20, 3)))
    with pytest.raises(DataError, match=r"wrong\.npz: key 'F' has shape \(3, 20, 3\), expected"):
        read_md17_npz(wrong)
    raw = {key: np.zeros(1) for key in ("energies", "old_indices")}
    rmd17_file = tmp_path / "rmd17_water_train_01.npz"
    np.savez(rmd17_file, nuclear_charges=np.array([8, 1, 1]), coords=np.zeros((1, 3, 3)), **raw)
    with pytest.raises(DataError, match=r"rmd17_water_train_01\.npz: missing key 'forces'"):
        read_rmd17(tmp_path, "water")


def test_nan_labels_name_source_key_and_frame(aspirin, tmp_path):
    frames = aspirin.subset([0, 1, 2, 3, 4])
    energy = frames.energy.copy()
    energy[3] = np.nan
    file = write_md17_npz(tmp_path / "nan.npz", frames, E=energy[:, None])
    with pytest.raises(DataError, match=r"nan\.npz: key 'E' has a NaN or Inf value in frame 3"):
        read_md17_npz(file)
    frames.forces[frames.offsets[2] + 4, 1] = np.inf
    expected = re.escape(f"{frames.source}: key 'forces' has a NaN or Inf value in frame 2")
    with pytest.raises(DataError, match=expected):
        frames.validate()


def test_missing_paths_and_data_root_explain_how_to_get_data(tmp_path):
    with pytest.raises(DataNotFoundError) as not_found:
        load_atoms("rmd17", "rmd17", data_root=tmp_path, molecule="aspirin")
    message = str(not_found.value)
    assert str(tmp_path / "rmd17") in message
    assert "DCNN_DATA_ROOT" in message and "figshare.com" in message and "sgdml.org" in message
    with pytest.raises(DataNotFoundError, match="DCNN_DATA_ROOT") as no_root:
        resolve_data_path("rmd17", None)
    assert "fair-chem.github.io" in str(no_root.value) and "'rmd17' is relative" in str(
        no_root.value
    )
    with pytest.raises(DataNotFoundError, match=r"md17_ethanol\.npz"):
        read_md17_npz(tmp_path / "md17_ethanol.npz")


def test_resolve_data_path_joins_relative_and_keeps_absolute(data_root):
    assert resolve_data_path("rmd17", data_root) == (data_root / "rmd17").absolute()
    absolute = (data_root / "oc20").absolute()
    assert resolve_data_path(absolute, "/nonexistent/root") == absolute


def test_bad_options_name_the_value_and_the_choices(data_root, tmp_path):
    with pytest.raises(DataError, match=r"label_source='dft'.*\['md17', 'rmd17'\]"):
        read_rmd17(data_root / "rmd17", "aspirin", label_source="dft")
    with pytest.raises(DataError, match=r"molecule 'caffeine'; molecules present: .*'aspirin'"):
        read_rmd17(data_root / "rmd17", "caffeine")
    with pytest.raises(DataError, match=r"format='xyz' is not known; expected one of auto, rmd17"):
        load_atoms("xyz", data_root)
    no_labels = tmp_path / "no_labels.extxyz"
    ase.io.write(no_labels, [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])])
    with pytest.raises(DataError, match=r"no_labels\.extxyz: frame 0 has no energy or forces"):
        read_ase(no_labels)


def test_rmd17_files_of_different_molecules_are_refused(data_root, tmp_path):
    raw = dict(np.load(data_root / "rmd17" / "rmd17_aspirin_test_01.npz"))
    np.savez(tmp_path / "rmd17_mix_train_01.npz", **raw)
    raw["nuclear_charges"] = raw["nuclear_charges"][::-1]
    np.savez(tmp_path / "rmd17_mix_train_02.npz", **raw)
    with pytest.raises(DataError, match=r"rmd17_mix_train_02\.npz: key 'nuclear_charges'"):
        read_rmd17(tmp_path, "mix")


# --- container and splits -----------------------------------------------------------------


def test_subset_and_concatenate_keep_frames_intact(oc20):
    indices = [5, 0, len(oc20) - 1]
    picked = oc20.subset(indices)
    assert len(picked) == 3
    np.testing.assert_array_equal(picked.n_atoms(), oc20.n_atoms()[indices])
    last = slice(oc20.offsets[-2], oc20.offsets[-1])
    np.testing.assert_array_equal(picked.forces[picked.offsets[2] :], oc20.forces[last])
    joined = AtomsData.concatenate([oc20.subset([5]), oc20.subset([0, len(oc20) - 1])])
    assert_same_frames(joined, picked)
    np.testing.assert_array_equal(joined.frame_ids, oc20.frame_ids[indices])
    with pytest.raises(DataError, match=r"subset indices must lie in \[0, "):
        oc20.subset([len(oc20)])


def test_concatenate_refuses_mixed_units(oc20, aspirin):
    with pytest.raises(DataError, match="units of .* are .*kcal/mol"):
        AtomsData.concatenate([oc20.subset([0]), aspirin.subset([0])])


def test_evaluation_frames_do_not_depend_on_the_training_size_and_training_sets_nest():
    small = split_indices(1000, 100, 50, 200, seed=3)
    large = split_indices(1000, 700, 50, 200, seed=3)
    np.testing.assert_array_equal(small[1], large[1])
    np.testing.assert_array_equal(small[2], large[2])
    assert set(small[0]) < set(large[0])


def test_split_indices_disjoint_sized_and_seeded():
    train, val, test = split_indices(100, 50, 10, None, seed=7)
    assert (len(train), len(val), len(test)) == (50, 10, 40)
    assert len(np.unique(np.concatenate([train, val, test]))) == 100
    again = split_indices(100, 50, 10, None, seed=7)
    for first, second in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(train, split_indices(100, 50, 10, None, seed=8)[0])
    assert len(split_indices(100, 50, 10, 5, seed=7)[2]) == 5
    with pytest.raises(DataError, match=r"100 frames available.*n_train=90, n_val=20"):
        split_indices(100, 90, 20, None, seed=0)
    with pytest.raises(DataError, match=r"100 frames available.*n_test=41 \(101 frames\)"):
        split_indices(100, 50, 10, 41, seed=0)


# --- dataset and collate ------------------------------------------------------------------


def test_dataset_items_are_single_frames_in_the_chosen_dtype(oc20):
    item = AtomsDataset(oc20, dtype=torch.float64)[2]
    n_atoms = int(oc20.n_atoms()[2])
    assert item["numbers"].dtype == torch.int64 and item["numbers"].shape == (n_atoms,)
    assert item["positions"].dtype == torch.float64 and item["forces"].shape == (n_atoms, 3)
    assert item["energy"].shape == () and item["energy"].item() == oc20.energy[2]
    assert item["cell"].shape == (3, 3) and item["pbc"].dtype == torch.bool
    assert AtomsDataset(oc20)[2]["positions"].dtype == torch.float32
    with pytest.raises(IndexError):
        AtomsDataset(oc20)[len(oc20)]


def test_collate_mixed_molecules_and_periodic_slabs(aspirin, oc20):
    cutoff = 5.0
    items = [AtomsDataset(aspirin, torch.float64)[index] for index in (0, 1, 2)]
    items += [AtomsDataset(oc20, torch.float64)[index] for index in (0, len(oc20) - 1)]
    collate = pickle.loads(pickle.dumps(AtomsCollate(cutoff)))  # as in DataLoader workers
    batch = collate(items)
    counts = [len(item["numbers"]) for item in items]
    n_total = sum(counts)
    assert batch["positions"].shape == batch["forces"].shape == (n_total, 3)
    assert batch["energy"].shape == (5,) and batch["cell"].shape == (5, 3, 3)
    assert batch["pbc"].tolist() == [[False] * 3] * 3 + [[True] * 3] * 2
    assert batch["n_atoms"].tolist() == counts
    assert torch.equal(
        batch["batch"], torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    )
    edge_index, edge_shift = batch["edge_index"], batch["edge_shift"]
    assert edge_index.dtype == torch.int64 and edge_shift.dtype == torch.float64
    assert torch.equal(batch["batch"][edge_index[0]], batch["batch"][edge_index[1]])
    positions = batch["positions"]
    lengths = (positions[edge_index[1]] - positions[edge_index[0]] + edge_shift).norm(dim=1)
    assert lengths.max() <= cutoff + 1e-9
    edges_per_frame = torch.bincount(batch["batch"][edge_index[0]], minlength=5).tolist()
    for frame, item in enumerate(items[:3]):
        distances = torch.cdist(item["positions"], item["positions"])
        assert edges_per_frame[frame] == int((distances <= cutoff).sum()) - counts[frame]
    for frame, oc20_index in ((3, 0), (4, len(oc20) - 1)):
        reference_pairs = ase_neighbor_list("i", frame_atoms(oc20, oc20_index), cutoff)
        assert edges_per_frame[frame] == len(reference_pairs) > 0


def test_kept_frame_graphs_give_the_batches_built_from_scratch(aspirin, oc20):
    cutoff = 5.0
    kept = {
        "aspirin": AtomsDataset(aspirin, torch.float64, graph_cutoff=cutoff),
        "oc20": AtomsDataset(oc20, torch.float64, graph_cutoff=cutoff),
    }
    plain = {
        name: AtomsDataset(data, torch.float64)
        for name, data in [("aspirin", aspirin), ("oc20", oc20)]
    }
    frames = [("aspirin", 0), ("oc20", 0), ("aspirin", 5), ("oc20", len(oc20) - 1)]
    collate = AtomsCollate(cutoff)
    built = collate([plain[name][index] for name, index in frames])
    for _ in range(2):  # the second time from the kept lists
        joined = collate([kept[name][index] for name, index in frames])
        assert joined.keys() == built.keys()
        for key, value in built.items():
            assert torch.equal(joined[key], value), key
    # Built once per frame: a later item holds the same tensors.
    assert kept["oc20"][0]["edge_index"] is kept["oc20"][0]["edge_index"]
    # A collate with another cutoff does not use lists built for this one.
    shorter = AtomsCollate(3.0)
    other = shorter([kept[name][index] for name, index in frames])["edge_index"]
    assert torch.equal(other, shorter([plain[name][index] for name, index in frames])["edge_index"])
    assert other.shape[1] < built["edge_index"].shape[1]


def test_collate_works_in_a_dataloader(oc20):
    loader = torch.utils.data.DataLoader(
        AtomsDataset(oc20), batch_size=4, collate_fn=AtomsCollate(4.0)
    )
    batch = next(iter(loader))
    assert batch["positions"].dtype == torch.float32 and batch["edge_shift"].dtype == torch.float32
    assert batch["energy"].dtype == batch["forces"].dtype == torch.float64  # labels stay exact
    assert batch["n_atoms"].sum() == len(batch["numbers"])
    with pytest.raises(ValueError, match="cutoff must be a positive finite number"):
        AtomsCollate(-1.0)
