"""Readers for PDEBench HDF5 files (real downloads and files written by ``dcnn-data``).

Layouts (see ``shared/reference/pinn.md``):

- advection: dataset ``tensor`` (samples, t, x), ``x-coordinate`` (x,), ``t-coordinate``
  (one longer than t), file attribute ``beta``.
- cfd: datasets ``density``, ``Vx``, ``pressure`` (samples, t, x), ``x-coordinate``,
  ``t-coordinate`` (one longer than t), file attributes ``eta`` and ``zeta``; gamma = 5/3.
- diffreact: one group per sample ("0000", "0001", ...) with ``data`` (t, y, x, 2),
  ``grid/x``, ``grid/y``, ``grid/t`` and a group attribute ``config`` (YAML with a ``sim``
  block holding Du, Dv, k).

Grids are always read from the file; anything missing or inconsistent raises
:class:`PdeDataError` naming the file, the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

CFD_GAMMA = 5.0 / 3.0
PDE_CHANNELS: dict[str, tuple[str, ...]] = {
    "advection": ("u",),
    "cfd": ("density", "Vx", "pressure"),
    "diffreact": ("u", "v"),
}


class PdeDataError(ValueError):
    """A PDE data file is malformed or does not hold what was asked for."""


@dataclass
class PdeSample:
    pde: str  # "advection" | "cfd" | "diffreact"
    grids: dict[str, np.ndarray]  # "x": (nx,), "t": (nt,), and "y": (ny,) for 2D
    fields: np.ndarray  # float64; 1D: (nt, nx, C); 2D: (nt, ny, nx, C)
    channels: tuple[str, ...]
    params: dict[str, float]
    domain: dict[str, tuple[float, float]]  # cell faces in space, first/last time in t
    source: str
    sample_index: int  # as given (negative allowed, like Python)


def read_pdebench_sample(path: str | Path, pde: str, sample_index: int = -10) -> PdeSample:
    """Read one sample of a PDEBench file; ``sample_index`` counts like a Python index."""
    if pde not in PDE_CHANNELS:
        raise ValueError(f"unknown pde {pde!r}; expected one of {sorted(PDE_CHANNELS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PDE data file not found: {path}")
    expected = (
        f"expected a PDEBench HDF5 file, as `dcnn-data {pde}` writes or PDEBench's downloads are"
    )
    with open(path, "rb") as handle:
        start = handle.read(8)
    if start != b"\x89HDF\r\n\x1a\n":
        raise PdeDataError(f"{path}: not an HDF5 file (it starts with {start!r}); {expected}")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise PdeDataError(
            f"{path}: not a readable HDF5 file ({error}; damaged or cut short?); {expected}"
        ) from error
    with handle:
        reader = {"advection": _read_advection, "cfd": _read_cfd, "diffreact": _read_diffreact}
        grids, fields, params = reader[pde](handle, path, sample_index)
    if not np.all(np.isfinite(fields)):
        raise PdeDataError(f"{path}: sample {sample_index} holds non-finite values")
    domain = {name: _cell_faces(grid) for name, grid in grids.items() if name != "t"}
    domain["t"] = (float(grids["t"][0]), float(grids["t"][-1]))
    return PdeSample(
        pde=pde,
        grids=grids,
        fields=fields,
        channels=PDE_CHANNELS[pde],
        params=params,
        domain=domain,
        source=str(path),
        sample_index=sample_index,
    )


def _cell_faces(centres: np.ndarray) -> tuple[float, float]:
    half_spacing = 0.5 * (centres[-1] - centres[0]) / (len(centres) - 1)
    return float(centres[0] - half_spacing), float(centres[-1] + half_spacing)


def _dataset(group: h5py.Group, key: str, path: Path, expected: str) -> h5py.Dataset:
    item = group.get(key)
    where = f"{group.name.rstrip('/')}/{key}"
    if item is None:
        raise PdeDataError(f"{path}: missing dataset '{where}' (expected {expected})")
    if not isinstance(item, h5py.Dataset):
        raise PdeDataError(f"{path}: '{where}' is not a dataset (expected {expected})")
    return item


def _array(dataset: h5py.Dataset, path: Path, ndim: int, expected: str) -> h5py.Dataset:
    if dataset.ndim != ndim:
        raise PdeDataError(
            f"{path}: dataset '{dataset.name}' has shape {dataset.shape}, expected {expected}"
        )
    return dataset


def _coordinate(group: h5py.Group, key: str, path: Path, min_length: int) -> np.ndarray:
    """A strictly increasing 1D coordinate with at least ``min_length`` entries (float64)."""
    expected = f"a 1D coordinate with >= {min_length} entries"
    dataset = _array(_dataset(group, key, path, expected), path, 1, expected)
    values = dataset[()].astype(np.float64)
    if len(values) < min_length:
        raise PdeDataError(
            f"{path}: dataset '{dataset.name}' has shape {dataset.shape}, expected {expected}"
        )
    if not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0.0):
        raise PdeDataError(
            f"{path}: coordinate '{dataset.name}' must be finite and strictly increasing"
        )
    return values


def _float_attribute(obj: h5py.HLObject, name: str, path: Path) -> float:
    if name not in obj.attrs:
        raise PdeDataError(
            f"{path}: missing attribute '{name}' on '{obj.name}' (expected a number)"
        )
    try:
        return float(np.asarray(obj.attrs[name]).item())
    except (TypeError, ValueError) as error:
        raise PdeDataError(
            f"{path}: attribute '{name}' on '{obj.name}' is {obj.attrs[name]!r}, expected a number"
        ) from error


def _position(sample_index: int, n_samples: int, path: Path, what: str) -> int:
    if not -n_samples <= sample_index < n_samples:
        raise PdeDataError(
            f"{path}: sample_index {sample_index} is out of range for {n_samples} samples "
            f"in {what} (valid: {-n_samples} .. {n_samples - 1})"
        )
    return sample_index % n_samples


def _time_grid(group: h5py.Group, key: str, path: Path, n_steps: int) -> np.ndarray:
    """The first ``n_steps`` times (PDEBench's 1D files store one more time than steps)."""
    return _coordinate(group, key, path, max(n_steps, 2))[:n_steps]


def _read_advection(handle: h5py.File, path: Path, sample_index: int):
    expected = "shape (samples, t, x)"
    tensor = _array(_dataset(handle, "tensor", path, expected), path, 3, expected)
    n_samples, n_steps, n_x = tensor.shape
    x = _coordinate(handle, "x-coordinate", path, 2)
    _check_length(x, n_x, "x-coordinate", path, "tensor")
    t = _time_grid(handle, "t-coordinate", path, n_steps)
    position = _position(sample_index, n_samples, path, "'tensor'")
    fields = tensor[position].astype(np.float64)[..., None]
    params = {"beta": _float_attribute(handle, "beta", path)}
    return {"x": x, "t": t}, fields, params


def _read_cfd(handle: h5py.File, path: Path, sample_index: int):
    expected = "shape (samples, t, x)"
    datasets = [
        _array(_dataset(handle, key, path, expected), path, 3, expected)
        for key in PDE_CHANNELS["cfd"]
    ]
    shape = datasets[0].shape
    for dataset in datasets[1:]:
        if dataset.shape != shape:
            raise PdeDataError(
                f"{path}: dataset '{dataset.name}' has shape {dataset.shape}, expected {shape} "
                f"like '{datasets[0].name}'"
            )
    n_samples, n_steps, n_x = shape
    x = _coordinate(handle, "x-coordinate", path, 2)
    _check_length(x, n_x, "x-coordinate", path, "density")
    t = _time_grid(handle, "t-coordinate", path, n_steps)
    position = _position(sample_index, n_samples, path, "'density'")
    fields = np.stack([dataset[position].astype(np.float64) for dataset in datasets], axis=-1)
    params = {
        "eta": _float_attribute(handle, "eta", path),
        "zeta": _float_attribute(handle, "zeta", path),
        "gamma": CFD_GAMMA,
    }
    return {"x": x, "t": t}, fields, params


def _read_diffreact(handle: h5py.File, path: Path, sample_index: int):
    names = sorted(name for name, item in handle.items() if isinstance(item, h5py.Group))
    if not names:
        raise PdeDataError(f"{path}: no sample groups ('0000', '0001', ...) in the file")
    group = handle[names[_position(sample_index, len(names), path, "the sample groups")]]
    expected = "shape (t, y, x, 2)"
    data = _array(_dataset(group, "data", path, expected), path, 4, expected)
    n_steps, n_y, n_x, n_channels = data.shape
    if n_channels != 2:
        raise PdeDataError(f"{path}: dataset '{data.name}' has shape {data.shape}, {expected}")
    x = _coordinate(group, "grid/x", path, 2)
    y = _coordinate(group, "grid/y", path, 2)
    _check_length(x, n_x, f"{group.name}/grid/x", path, f"{data.name} (axis 2)")
    _check_length(y, n_y, f"{group.name}/grid/y", path, f"{data.name} (axis 1)")
    t = _time_grid(group, "grid/t", path, n_steps)
    fields = data[()].astype(np.float64)
    return {"x": x, "y": y, "t": t}, fields, _diffreact_params(group, path)


def _diffreact_params(group: h5py.Group, path: Path) -> dict[str, float]:
    if "config" not in group.attrs:
        raise PdeDataError(
            f"{path}: missing attribute 'config' on group '{group.name}' "
            "(expected a YAML string with a 'sim' block)"
        )
    text = group.attrs["config"]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        config = yaml.safe_load(str(text))
    except yaml.YAMLError as error:
        raise PdeDataError(
            f"{path}: attribute 'config' on group '{group.name}' is not valid YAML ({error})"
        ) from error
    sim = config.get("sim") if isinstance(config, dict) else None
    if not isinstance(sim, dict):
        raise PdeDataError(
            f"{path}: attribute 'config' on group '{group.name}' has no 'sim' mapping"
        )
    params = {}
    for key in ("Du", "Dv", "k"):
        try:
            # float() also accepts YAML 1.1 strings such as "1E-3" that PyYAML leaves unparsed.
            params[key] = float(sim[key])
        except KeyError:
            raise PdeDataError(
                f"{path}: config 'sim' block of group '{group.name}' lacks '{key}'"
            ) from None
        except (TypeError, ValueError):
            raise PdeDataError(
                f"{path}: config 'sim.{key}' of group '{group.name}' is {sim[key]!r}, "
                "expected a number"
            ) from None
    return params


def _check_length(grid: np.ndarray, length: int, key: str, path: Path, against: str) -> None:
    if len(grid) != length:
        raise PdeDataError(
            f"{path}: '{key}' has {len(grid)} entries, expected {length} to match '{against}'"
        )
