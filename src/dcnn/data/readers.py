"""Readers for the atomistic file formats users actually have, returning validated AtomsData.

- rMD17 npz (``rmd17_<molecule>_{train,test}_NN.npz`` of andersx/rmd17-npz, or the figshare
  ``rmd17_<molecule>.npz``), with either the original MD17 or the revised labels;
- original MD17 / sGDML npz as downloaded from sgdml.org (keys R, E, F, z; units from its
  ``e_unit`` / ``r_unit`` keys when present);
- anything ASE can read with energies and forces (extxyz, traj, db), e.g. OC20 trajectories.

``detect_format`` tells which from a file's keys or extension (``format: auto``). Each reader
records the units of the numbers it read and whether the file said so or the format's convention
was assumed (``AtomsData.unit_origin``).
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
from ase.constraints import FixAtoms

from dcnn.data.atoms import AtomsData, DataError

_KCAL_UNITS = {"energy": "kcal/mol", "forces": "kcal/mol/Angstrom", "positions": "Angstrom"}
_EV_UNITS = {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"}
DEFAULT_UNITS: dict[str, dict[str, str]] = {
    "rmd17": dict(_KCAL_UNITS),
    "md17": dict(_KCAL_UNITS),
    "ase": dict(_EV_UNITS),
}
_CONVENTIONS = {
    "rmd17": "assumed: rMD17's kcal/mol and Angstrom",
    "md17": "assumed: MD17's kcal/mol and Angstrom",
    "ase": "assumed: ASE's eV and Angstrom",
}
_ZIP_SIGNATURE = b"PK\x03\x04"
_EMPTY_ZIP_SIGNATURE = b"PK\x05\x06"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_RMD17_KEYS = {"nuclear_charges", "coords"}
_MD17_KEYS = {"R", "E", "F", "z"}

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


def _first_bytes(file: Path, count: int = 8) -> bytes:
    with open(file, "rb") as handle:
        return handle.read(count)


@contextmanager
def _open_npz(file: Path) -> Iterator[np.lib.npyio.NpzFile]:
    _require_exists(file)
    start = _first_bytes(file)
    if not start.startswith((_ZIP_SIGNATURE, _EMPTY_ZIP_SIGNATURE)):
        raise DataError(
            f"{file}: not an .npz archive (numpy.savez writes a zip archive of named arrays; this "
            f"file starts with {start!r}{', a text file?' if start.isascii() else ''})"
        )
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{file}: cannot be read as a numpy .npz archive ({error}); the file is damaged or "
            "cut short: copy or download it again"
        ) from error
    with archive:
        yield archive


def _array(archive: np.lib.npyio.NpzFile, file: Path, key: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{file}: key '{key}' cannot be read ({type(error).__name__}: {error}); the archive "
            "is damaged or cut short: copy or download it again"
        ) from error


def _read_key(
    archive: np.lib.npyio.NpzFile, file: Path, key: str, expected: tuple[int | str, ...]
) -> np.ndarray:
    """Array ``key`` of ``archive``; ``expected`` gives its shape, strings mark free sizes."""
    if key not in archive.files:
        raise DataError(f"{file}: missing key '{key}' (keys present: {sorted(archive.files)})")
    array = _array(archive, file, key)
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
    unit_origin: str,
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
        unit_origin=unit_origin,
    )
    data.validate()
    return data


def rmd17_molecules(folder: Path) -> dict[str, list[Path]]:
    """The rMD17 files in ``folder`` (or in its figshare subfolder npz_data/), by molecule."""
    files_by_molecule: dict[str, list[Path]] = {}
    for candidate in (folder, folder / "npz_data"):
        if candidate.is_dir():
            for file in sorted(candidate.glob("rmd17_*.npz")):
                molecule = rmd17_molecule_of(file)
                if molecule:
                    files_by_molecule.setdefault(molecule, []).append(file)
    return files_by_molecule


def _rmd17_files(folder: Path, molecule: str | None) -> list[Path]:
    """rMD17 files of ``molecule`` in ``folder``."""
    files_by_molecule = rmd17_molecules(folder)
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
        named = rmd17_molecule_of(folder)
        if molecule is not None and named is not None and named != molecule:
            raise DataError(
                f"{folder}: an rMD17 file for molecule '{named}', but dataset.molecule={molecule}; "
                f"drop dataset.molecule (the file names its molecule) or set "
                f"dataset.molecule={named}"
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
        _CONVENTIONS["rmd17"],
        folder,
    )


def _metadata_text(archive: np.lib.npyio.NpzFile, file: Path, key: str) -> str | None:
    """A 0-d text entry of an sGDML file (e_unit, r_unit, name), or None."""
    if key not in archive.files:
        return None
    value = _array(archive, file, key)
    return str(value.item()) if value.ndim == 0 else None


def read_md17_npz(path: str | Path) -> AtomsData:
    """Original MD17 / sGDML npz (sgdml.org): R (frames, atoms, 3), E (frames, 1) or (frames,),
    F (frames, atoms, 3), z (atoms,); units from 0-d keys e_unit and r_unit, else kcal/mol and
    Angstrom. Other 0-d keys (name, theory, md5, ...) are metadata and not read."""
    file = Path(path)
    with _open_npz(file) as archive:
        numbers = _read_key(archive, file, "z", ("atoms",))
        coords = _read_key(archive, file, "R", ("frames", len(numbers), 3))
        n_frames = len(coords)
        # sgdml files store E as (frames, 1); accept the flat (frames,) layout too.
        two_dimensional = "E" in archive.files and _array(archive, file, "E").ndim == 2
        energy_shape = (n_frames, 1) if two_dimensional else (n_frames,)
        energy = _read_key(archive, file, "E", energy_shape).reshape(n_frames)
        forces = _read_key(archive, file, "F", (n_frames, len(numbers), 3))
        energy_unit = _metadata_text(archive, file, "e_unit")
        length_unit = _metadata_text(archive, file, "r_unit")
    _require_finite(file, "E", energy)
    _require_finite(file, "F", forces)
    units, origin = dict(DEFAULT_UNITS["md17"]), _CONVENTIONS["md17"]
    if energy_unit or length_unit:
        energy_unit = energy_unit or units["energy"]
        length_unit = length_unit or units["positions"]
        units = {
            "energy": energy_unit,
            "forces": f"{energy_unit}/{length_unit}",
            "positions": length_unit,
        }
        origin = "from the file (e_unit, r_unit)"
    return _pack_molecule_frames(
        numbers, coords, energy, forces, np.arange(n_frames), units, origin, file
    )


def _read_ase_file(file: Path, index: str | int | slice) -> list[ase.Atoms]:
    try:
        frames = ase.io.read(file, index=index)
    except Exception as error:  # ASE raises many kinds of errors for unreadable files.
        raise DataError(
            f"{file}: ASE cannot read it ({type(error).__name__}: {error}); expected a file ASE "
            "reads, with energies and forces (extxyz, traj, db, ...)"
        ) from error
    return [frames] if isinstance(frames, ase.Atoms) else list(frames)


def read_ase(path: str | Path, index: str | int | slice = ":") -> AtomsData:
    """Frames of any ASE-readable file with energies and forces, or of all such files in a folder.

    A folder contributes its *.traj, *.extxyz, *.xyz and *.db files in sorted order; ``index``
    selects frames within each file. Forces are read without constraints (OC20 fixes atoms with
    FixAtoms, and with the constraint applied their forces would read as zero); the atoms a
    FixAtoms constraint holds are marked ``fixed``. ``frame_ids`` count the frames read, so they
    are unique across files. ``systems``: a frame's ``sid`` / ``system_id`` info key when every
    frame has one (OC20/OC22 exports), else its file when there are several files (one
    relaxation trajectory per .traj file); a single file without them gives independent frames.
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
    fixed, file_of_frame, system_ids = [], [], []
    for file_number, file in enumerate(files):
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
            held = np.zeros(len(atoms), dtype=bool)
            for constraint in atoms.constraints:
                if isinstance(constraint, FixAtoms):
                    held[constraint.get_indices()] = True
            fixed.append(held)
            file_of_frame.append(file_number)
            system_ids.append(atoms.info.get("sid", atoms.info.get("system_id")))
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
        unit_origin=_CONVENTIONS["ase"],
        fixed=np.concatenate(fixed),
        systems=_systems(system_ids, file_of_frame, len(files)),
    )
    data.validate()
    return data


def _systems(system_ids: list, file_of_frame: list[int], n_files: int) -> np.ndarray | None:
    if all(sid is not None for sid in system_ids):
        _, codes = np.unique(np.asarray([str(sid) for sid in system_ids]), return_inverse=True)
        return codes
    return np.asarray(file_of_frame) if n_files > 1 else None


_READERS = {"rmd17": read_rmd17, "md17": read_md17_npz, "ase": read_ase}
FORMATS = ("auto", *_READERS)


def rmd17_molecule_of(file: Path) -> str | None:
    """The molecule an rMD17 file is for, from its name (None when the name does not say)."""
    match = _RMD17_FILE_NAME.fullmatch(Path(file).name)
    return match["molecule"] if match else None


def _npz_format(file: Path) -> str:
    with _open_npz(file) as archive:
        keys = set(archive.files)
    if _RMD17_KEYS <= keys:
        return "rmd17"
    if _MD17_KEYS <= keys:
        return "md17"
    raise DataError(
        f"{file}: an .npz archive with keys {sorted(keys)}, which is neither an rMD17 file (keys "
        f"{sorted(_RMD17_KEYS)}, energies, forces, ...) nor an MD17/sGDML file (keys "
        f"{sorted(_MD17_KEYS)}); convert it to one of them or to extxyz"
    )


def detect_format(path: Path) -> str:
    """The reader for ``path`` ("rmd17", "md17" or "ase"), from its keys or its extension."""
    path = _require_exists(Path(path))
    if path.is_dir():
        if any(rmd17_molecule_of(f) for d in (path, path / "npz_data") for f in d.glob("*.npz")):
            return "rmd17"
        if any(f.suffix.lower() in _ASE_SUFFIXES for f in path.iterdir() if f.is_file()):
            return "ase"
        raise DataError(
            f"{path}: a folder without rMD17 files (rmd17_<molecule>_*.npz) or files ASE reads "
            f"(*{', *'.join(_ASE_SUFFIXES)}); point dataset.path at one file or at such a folder"
        )
    if path.suffix.lower() == ".npz" or _first_bytes(path).startswith(_ZIP_SIGNATURE):
        return _npz_format(path)
    if _first_bytes(path).startswith(_HDF5_SIGNATURE):
        raise DataError(
            f"{path}: an HDF5 file; atomistic data are read from npz (rMD17, MD17/sGDML) or from "
            "files ASE reads (extxyz, traj, db). HDF5 files of PDEBench are PDE data: use an "
            "experiment=pinn_* run"
        )
    try:
        ase.io.formats.filetype(str(path))
    except Exception as error:  # ASE raises several kinds for files it does not recognise
        raise DataError(
            f"{path}: cannot tell its format (ASE: {type(error).__name__}: {error}); expected an "
            ".npz (rMD17 or MD17/sGDML) or a file ASE reads with energies and forces (extxyz, "
            "traj, db, ...), or name the reader with dataset.format"
        ) from error
    return "ase"


def load_atoms(
    format: str, path: str | Path, data_root: str | Path | None = None, **kwargs
) -> AtomsData:
    """Reads ``path`` with the reader of ``format`` ("rmd17", "md17", "ase", or "auto" to detect
    it with ``detect_format``).

    With ``data_root`` given, ``path`` is resolved by resolve_data_path; otherwise it is used as
    it is. ``kwargs`` go to the reader (e.g. molecule=..., label_source=... for rmd17).
    """
    if format not in FORMATS:
        raise DataError(
            f"dataset.format={format!r} is not known; expected one of {', '.join(FORMATS)} or "
            "the dotted name of a reader function"
        )
    if data_root is not None:
        path = resolve_data_path(path, data_root)
    if format == "auto":
        format = detect_format(Path(path))
    return _READERS[format](path, **kwargs)
