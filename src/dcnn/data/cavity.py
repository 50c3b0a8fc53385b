"""Reader for lid-driven cavity reference files (written by ``dcnn-data cavity``).

Layout: datasets ``x`` (nx,) and ``y`` (ny,) (node coordinates, walls included, strictly
increasing) and ``u``, ``v``, ``p``, ``psi`` of shape (ny, nx), ``field[j, i]`` at
(x[i], y[j]); file attributes ``Re`` (and ``n``, the solver's facts). Anything missing or
inconsistent raises :class:`~dcnn.data.pdebench.PdeDataError` naming the file and the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcnn.data.pdebench import PdeDataError

CAVITY_FIELDS = ("u", "v", "p", "psi")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def cavity_filename(re: float, n: int) -> str:
    """The file name ``dcnn-data cavity`` writes, e.g. ``cavity_Re100_n128.h5``."""
    return f"cavity_Re{float(re):g}_n{int(n)}.h5"


@dataclass(frozen=True, eq=False)
class CavityReference:
    """A lid-driven cavity reference solution; ``field[j, i]`` is the value at (x[i], y[j])."""

    x: np.ndarray  # (nx,)
    y: np.ndarray  # (ny,)
    u: np.ndarray  # (ny, nx)
    v: np.ndarray
    p: np.ndarray
    psi: np.ndarray
    re: float
    source: str


def _read_dataset(handle: h5py.File, key: str, path: Path, expected: str) -> np.ndarray:
    item = handle.get(key)
    if item is None:
        raise PdeDataError(f"{path}: missing dataset '{key}' (expected {expected})")
    if not isinstance(item, h5py.Dataset):
        raise PdeDataError(f"{path}: '{key}' is not a dataset (expected {expected})")
    try:
        values = np.asarray(item[()], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise PdeDataError(
            f"{path}: dataset '{key}' is not numeric (expected {expected})"
        ) from error
    if not np.all(np.isfinite(values)):
        raise PdeDataError(f"{path}: dataset '{key}' holds non-finite values")
    return values


def read_cavity_reference(path: str | Path) -> CavityReference:
    """Read and validate a lid-driven cavity file (see the module docstring for its layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lid-driven cavity file not found: {path}")
    expected = "expected an HDF5 file as `dcnn-data cavity` writes"
    with open(path, "rb") as handle:
        start = handle.read(8)
    if start != _HDF5_SIGNATURE:
        raise PdeDataError(f"{path}: not an HDF5 file (it starts with {start!r}); {expected}")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise PdeDataError(f"{path}: not a readable HDF5 file ({error}); {expected}") from error
    with handle:
        coordinates = {}
        for key in ("x", "y"):
            values = _read_dataset(handle, key, path, "a 1D node coordinate")
            if values.ndim != 1 or values.size < 2 or np.any(np.diff(values) <= 0.0):
                raise PdeDataError(
                    f"{path}: dataset '{key}' has shape {values.shape}; expected a strictly "
                    "increasing 1D node coordinate with >= 2 entries"
                )
            coordinates[key] = values
        shape = (coordinates["y"].size, coordinates["x"].size)
        fields = {}
        for key in CAVITY_FIELDS:
            values = _read_dataset(handle, key, path, f"shape (ny, nx) = {shape}")
            if values.shape != shape:
                raise PdeDataError(
                    f"{path}: dataset '{key}' has shape {values.shape}, expected (ny, nx) = "
                    f"{shape} from datasets 'y' and 'x'"
                )
            fields[key] = values
        if "Re" not in handle.attrs:
            raise PdeDataError(f"{path}: missing file attribute 'Re' (the Reynolds number)")
        try:
            re = float(np.asarray(handle.attrs["Re"]).item())
        except (TypeError, ValueError) as error:
            raise PdeDataError(
                f"{path}: file attribute 'Re' is {handle.attrs['Re']!r}, expected a number"
            ) from error
    if not np.isfinite(re) or re <= 0.0:
        raise PdeDataError(f"{path}: file attribute 'Re' is {re!r}, expected a number > 0")
    return CavityReference(**coordinates, **fields, re=re, source=str(path))
