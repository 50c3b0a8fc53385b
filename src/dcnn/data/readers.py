"""Readers for the atomistic file formats users actually have, returning validated AtomsData.

- rMD17 npz (``rmd17_<molecule>_{train,test}_NN.npz`` of andersx/rmd17-npz, or the figshare
  ``rmd17_<molecule>.npz``), with either the original MD17 or the revised labels;
- original MD17 npz as downloaded from sgdml.org (keys R, E, F, z);
- anything ASE can read with energies and forces (extxyz, traj, db), e.g. OC20 trajectories.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError

from dcnn.data.atoms import AtomsData, DataError

_KCAL_UNITS = {"energy": "kcal/mol", "forces": "kcal/mol/Angstrom", "positions": "Angstrom"}
_EV_UNITS = {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"}
DEFAULT_UNITS: dict[str, dict[str, str]] = {
    "rmd17": dict(_KCAL_UNITS),
    "md17": dict(_KCAL_UNITS),
    "ase": dict(_EV_UNITS),
}

DOWNLOAD_ADVICE = (
    "Set the environment variable DCNN_DATA_ROOT (or the config value data_root=...) to the "
    "folder holding rmd17/ (and oc20/). Downloads: rMD17 from "
    "https://figshare.com/articles/dataset/Revised_MD17_dataset_rMD17_/12672038 (or the npz "
    "files of github.com/andersx/rmd17-npz), original MD17 from http://www.sgdml.org/#datasets, "
    "OC20 from https://fair-chem.github.io/core/datasets/oc20.html."
)

# Label keys of an rMD17 file for each label_source.
_RMD17_LABEL_KEYS = {"md17": ("old_energies", "old_forces"), "rmd17": ("energies", "forces")}
# rmd17_<molecule>_<split>_<NN>.npz (andersx/rmd17-npz) or rmd17_<molecule>.npz (figshare).
_RMD17_FILE_NAME = re.compile(r"rmd17_(?P<molecule>.+?)(?:_(?:train|test)_\d+)?\.npz")
_ASE_SUFFIXES = (".traj", ".extxyz", ".xyz", ".db")


class DataNotFoundError(DataError):
    """A data file or folder does not exist or cannot be located (no data root)."""


def resolve_data_path(
    path: str | Path, data_root: str | Path | None, advice: str = DOWNLOAD_ADVICE
) -> Path:
    """Absolute paths are used as they are; relative ones are joined to ``data_root``.

    ``advice`` (where to get the data) ends the message when the path does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_absolute():
        if data_root is None:
            raise DataNotFoundError(
                f"The data path '{path}' is relative, but no data root is set. {advice}"
            )
        path = Path(data_root).expanduser() / path
    return _require_exists(path.absolute(), advice)


def _require_exists(path: Path, advice: str = DOWNLOAD_ADVICE) -> Path:
    if not path.exists():
        raise DataNotFoundError(f"Data path not found: {path.absolute()}. {advice}")
    return path


@contextmanager
def _open_npz(file: Path) -> Iterator[np.lib.npyio.NpzFile]:
    _require_exists(file)
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{file}: cannot be read as a numpy .npz archive ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{file}: holds a single array, expected an .npz archive of named arrays")
    with archive:
        yield archive


def _read_key(
    archive: np.lib.npyio.NpzFile, file: Path, key: str, expected: tuple[int | str, ...]
) -> np.ndarray:
    """Array ``key`` of ``archive``; ``expected`` gives its shape, strings mark free sizes."""
    if key not in archive.files:
        raise DataError(f"{file}: missing key '{key}' (keys present: {sorted(archive.files)})")
    array = archive[key]
    matches = array.ndim == len(expected) and all(
        isinstance(size, str) or size == got
        for size, got in zip(expected, array.shape, strict=True)
    )
    if not matches:
        expected_text = "(" + ", ".join(str(size) for size in expected) + ")"
        raise DataError(
            f"{file}: key '{key}' has shape {array.shape}, expected shape {expected_text}"
        )
    return array


def _require_finite(file: Path, key: str, values: np.ndarray) -> None:
    finite_frames = np.isfinite(values).reshape(len(values), int(np.prod(values.shape[1:]))).all(1)
    if not finite_frames.all():
        raise DataError(
            f"{file}: key '{key}' has a NaN or Inf value in frame {int(np.argmin(finite_frames))}"
        )


def _pack_molecule_frames(
    numbers: np.ndarray,
    coords: np.ndarray,
    energy: np.ndarray,
    forces: np.ndarray,
    frame_ids: np.ndarray,
    units: dict[str, str],
    source: Path,
) -> AtomsData:
    """AtomsData of frames that all share the same atoms and have no cell."""
    n_frames, n_atoms = coords.shape[:2]
    data = AtomsData(
        numbers=np.tile(numbers, n_frames),
        positions=coords.reshape(-1, 3),
        offsets=np.arange(n_frames + 1) * n_atoms,
        energy=energy,
        forces=forces.reshape(-1, 3),
        cell=np.zeros((n_frames, 3, 3)),
        pbc=np.zeros((n_frames, 3), dtype=bool),
        frame_ids=frame_ids,
        units=units,
        source=str(source),
    )
    data.validate()
    return data


def _rmd17_files(folder: Path, molecule: str | None) -> list[Path]:
    """rMD17 files of ``molecule`` in ``folder`` (or in its figshare subfolder npz_data/)."""
    candidates = [path for path in (folder, folder / "npz_data") if path.is_dir()]
    files_by_molecule: dict[str, list[Path]] = {}
    for candidate in candidates:
        for file in sorted(candidate.glob("rmd17_*.npz")):
            match = _RMD17_FILE_NAME.fullmatch(file.name)
            if match:
                files_by_molecule.setdefault(match["molecule"], []).append(file)
    if molecule is None or molecule not in files_by_molecule:
        raise DataError(
            f"{folder}: no rMD17 files rmd17_{molecule}_{{train,test}}_NN.npz or "
            f"rmd17_{molecule}.npz for molecule '{molecule}'; molecules present: "
            f"{sorted(files_by_molecule) or 'none'}"
        )
    return files_by_molecule[molecule]


def read_rmd17(
    folder: str | Path, molecule: str | None = None, label_source: str = "md17"
) -> AtomsData:
    """Pools all rMD17 files of one molecule, de-duplicated by ``old_indices``.

    Args:
        folder: folder with ``rmd17_<molecule>_{train,test}_NN.npz`` files, or one such file.
        molecule: e.g. "aspirin"; required for a folder.
        label_source: "md17" for the original MD17 labels (old_energies/old_forces, the paper's
            benchmark) or "rmd17" for the recomputed labels (energies/forces).

    Frames are ordered by their MD17 index, which becomes ``frame_ids``.
    """
    if label_source not in _RMD17_LABEL_KEYS:
        raise DataError(
            f"read_rmd17: label_source='{label_source}' is not known, expected one of "
            f"{sorted(_RMD17_LABEL_KEYS)}"
        )
    folder = _require_exists(Path(folder))
    if folder.is_file():
        match = _RMD17_FILE_NAME.fullmatch(folder.name)
        if molecule is not None and match and match["molecule"] != molecule:
            raise DataError(
                f"{folder}: file is for molecule '{match['molecule']}', not '{molecule}'"
            )
        files = [folder]
    else:
        files = _rmd17_files(folder, molecule)
    energy_key, forces_key = _RMD17_LABEL_KEYS[label_source]
    numbers, coords, energies, forces, old_indices, origins = None, [], [], [], [], []
    for file in files:
        with _open_npz(file) as archive:
            file_numbers = _read_key(archive, file, "nuclear_charges", ("atoms",))
            n_atoms = len(file_numbers)
            file_coords = _read_key(archive, file, "coords", ("frames", n_atoms, 3))
            n_frames = len(file_coords)
            labels = {
                key: _read_key(archive, file, key, shape)
                for key, shape in (
                    ("energies", (n_frames,)),
                    ("forces", (n_frames, n_atoms, 3)),
                    ("old_indices", (n_frames,)),
                    ("old_energies", (n_frames,)),
                    ("old_forces", (n_frames, n_atoms, 3)),
                )
            }
        if numbers is None:
            numbers = file_numbers
        elif not np.array_equal(file_numbers, numbers):
            raise DataError(
                f"{file}: key 'nuclear_charges' is {file_numbers.tolist()}, expected "
                f"{numbers.tolist()} as in {files[0]} (files of different molecules?)"
            )
        _require_finite(file, energy_key, labels[energy_key])
        _require_finite(file, forces_key, labels[forces_key])
        coords.append(file_coords)
        energies.append(labels[energy_key])
        forces.append(labels[forces_key])
        old_indices.append(labels["old_indices"])
        origins.extend([file] * n_frames)
    coords_all = np.concatenate(coords)
    old_indices_all = np.concatenate(old_indices)
    unique_ids, first, inverse = np.unique(old_indices_all, return_index=True, return_inverse=True)
    # A frame listed in several files must be the same conformation in all of them.
    differs = np.abs(coords_all - coords_all[first[inverse]]).reshape(len(inverse), -1).max(1)
    if differs.max(initial=0.0) > 1e-6:
        bad = int(np.argmax(differs))
        raise DataError(
            f"{origins[bad]}: frame with old_indices={old_indices_all[bad]} has other 'coords' "
            f"than the same index in {origins[first[inverse[bad]]]}"
        )
    return _pack_molecule_frames(
        numbers,
        coords_all[first],
        np.concatenate(energies)[first],
        np.concatenate(forces)[first],
        unique_ids,
        DEFAULT_UNITS["rmd17"],
        folder,
    )


def read_md17_npz(path: str | Path) -> AtomsData:
    """Original MD17 npz (sgdml.org): R (frames, atoms, 3), E (frames, 1) or (frames,),
    F (frames, atoms, 3), z (atoms,); kcal/mol and Angstrom."""
    file = Path(path)
    with _open_npz(file) as archive:
        numbers = _read_key(archive, file, "z", ("atoms",))
        coords = _read_key(archive, file, "R", ("frames", len(numbers), 3))
        n_frames = len(coords)
        # sgdml files store E as (frames, 1); accept the flat (frames,) layout too.
        two_dimensional = "E" in archive.files and archive["E"].ndim == 2
        energy_shape = (n_frames, 1) if two_dimensional else (n_frames,)
        energy = _read_key(archive, file, "E", energy_shape).reshape(n_frames)
        forces = _read_key(archive, file, "F", (n_frames, len(numbers), 3))
    _require_finite(file, "E", energy)
    _require_finite(file, "F", forces)
    return _pack_molecule_frames(
        numbers, coords, energy, forces, np.arange(n_frames), DEFAULT_UNITS["md17"], file
    )


def _read_ase_file(file: Path, index: str | int | slice) -> list[ase.Atoms]:
    try:
        frames = ase.io.read(file, index=index)
    except Exception as error:  # ASE raises many kinds of errors for unreadable files.
        raise DataError(f"{file}: ASE cannot read it ({type(error).__name__}: {error})") from error
    return [frames] if isinstance(frames, ase.Atoms) else list(frames)


def read_ase(path: str | Path, index: str | int | slice = ":") -> AtomsData:
    """Frames of any ASE-readable file with energies and forces, or of all such files in a folder.

    A folder contributes its *.traj, *.extxyz, *.xyz and *.db files in sorted order; ``index``
    selects frames within each file. Forces are read without constraints (OC20 fixes atoms with
    FixAtoms, and with the constraint applied their forces would read as zero). ``frame_ids``
    count the frames read, so they are unique across files.
    """
    path = _require_exists(Path(path))
    if path.is_dir():
        files = sorted(
            file
            for file in path.iterdir()
            if file.suffix.lower() in _ASE_SUFFIXES and file.is_file()
        )
        if not files:
            raise DataError(f"{path}: folder holds no *{', *'.join(_ASE_SUFFIXES)} file")
    else:
        files = [path]
    numbers, positions, energy, forces, cells, pbcs = [], [], [], [], [], []
    for file in files:
        frames = _read_ase_file(file, index)
        if not frames:
            raise DataError(f"{file}: holds no frames for index {index!r}")
        for frame_index, atoms in enumerate(frames):
            try:
                energy.append(atoms.get_potential_energy())
                forces.append(atoms.get_forces(apply_constraint=False))
            except (RuntimeError, PropertyNotImplementedError) as error:
                raise DataError(
                    f"{file}: frame {frame_index} has no energy or forces ({error}); expected "
                    "every frame to carry both (e.g. from a SinglePointCalculator)"
                ) from error
            numbers.append(atoms.numbers)
            positions.append(atoms.positions)
            cells.append(atoms.cell.array)
            pbcs.append(atoms.pbc)
    counts = [len(frame_numbers) for frame_numbers in numbers]
    data = AtomsData(
        numbers=np.concatenate(numbers),
        positions=np.concatenate(positions),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        energy=np.array(energy, dtype=np.float64),
        forces=np.concatenate(forces),
        cell=np.stack(cells),
        pbc=np.stack(pbcs),
        frame_ids=np.arange(len(counts)),
        units=DEFAULT_UNITS["ase"],
        source=str(path),
    )
    data.validate()
    return data


_READERS = {"rmd17": read_rmd17, "md17": read_md17_npz, "ase": read_ase}


def load_atoms(
    format: str, path: str | Path, data_root: str | Path | None = None, **kwargs
) -> AtomsData:
    """Reads ``path`` with the reader of ``format`` ("rmd17", "md17" or "ase").

    With ``data_root`` given, ``path`` is resolved by resolve_data_path; otherwise it is used as
    it is. ``kwargs`` go to the reader (e.g. molecule=..., label_source=... for rmd17).
    """
    if format not in _READERS:
        raise DataError(
            f"load_atoms: unknown format '{format}', expected one of {sorted(_READERS)}"
        )
    if data_root is not None:
        path = resolve_data_path(path, data_root)
    return _READERS[format](path, **kwargs)
