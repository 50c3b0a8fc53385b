"""Container, splits, dataset and collate function for atomistic energy/force data.

Frames of different sizes are stored packed: per-atom arrays are concatenated over frames and
``offsets[k]:offsets[k + 1]`` selects the atoms of frame ``k``. Everything here is plain numpy /
torch so that models and scripts can use it without Hydra or Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dcnn.data.neighbors import batched_neighbor_list, neighbor_list, reverse_edges

# Highest atomic number known to the periodic table; anything else is a corrupt label.
_MAX_ATOMIC_NUMBER = 118


class DataError(ValueError):
    """A data file or data container is not what the framework expects.

    Messages name the file (or source), the key and what was expected, so that the user can fix
    the file without reading the code.
    """


def _as_array(source: str, key: str, value: object, dtype: type) -> np.ndarray:
    """Converts ``value`` to ``dtype`` but refuses lossy float -> integer conversions."""
    array = np.asarray(value)
    if (
        np.issubdtype(dtype, np.integer)
        and array.size
        and not np.issubdtype(array.dtype, np.integer)
    ):
        raise DataError(f"{source}: key '{key}' must hold integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


@dataclass
class AtomsData:
    """Packed frames (structures) with energy and force labels.

    Shapes (``F`` frames, ``N`` atoms over all frames): ``numbers`` (N,), ``positions`` (N, 3),
    ``offsets`` (F + 1,), ``energy`` (F,), ``forces`` (N, 3), ``cell`` (F, 3, 3) (zeros when a
    frame has no cell), ``pbc`` (F, 3), ``frame_ids`` (F,) identity of each frame in its source.
    """

    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    frame_ids: np.ndarray
    units: dict[str, str] = field(default_factory=dict)
    source: str = ""
    unit_origin: str = ""
    fixed: np.ndarray | None = None
    systems: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.numbers = _as_array(self.source, "numbers", self.numbers, np.int64)
        self.positions = _as_array(self.source, "positions", self.positions, np.float64)
        self.offsets = _as_array(self.source, "offsets", self.offsets, np.int64)
        self.energy = _as_array(self.source, "energy", self.energy, np.float64)
        self.forces = _as_array(self.source, "forces", self.forces, np.float64)
        self.cell = _as_array(self.source, "cell", self.cell, np.float64)
        self.pbc = _as_array(self.source, "pbc", self.pbc, np.bool_)
        self.frame_ids = _as_array(self.source, "frame_ids", self.frame_ids, np.int64)
        if self.fixed is None:
            self.fixed = np.zeros(len(self.numbers), dtype=bool)
        self.fixed = _as_array(self.source, "fixed", self.fixed, np.bool_)
        if self.systems is not None:
            self.systems = _as_array(self.source, "systems", self.systems, np.int64)
        self.units = dict(self.units)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def n_atoms(self) -> np.ndarray:
        """Number of atoms of each frame, shape (F,)."""
        return np.diff(self.offsets)

    def subset(self, indices: Sequence[int] | np.ndarray) -> AtomsData:
        """New container with the frames ``indices`` (in that order; repeats allowed)."""
        indices = np.asarray(indices)
        if indices.size == 0:
            indices = indices.astype(np.int64)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise DataError(
                f"{self.source}: subset indices must be a 1-D integer array, got shape "
                f"{indices.shape} and dtype {indices.dtype}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise DataError(
                f"{self.source}: subset indices must lie in [0, {len(self)}), got "
                f"min {indices.min()} and max {indices.max()}"
            )
        counts = self.n_atoms()[indices]
        starts = self.offsets[:-1][indices]
        # Atom index of every selected atom: frame start + position inside the frame.
        new_offsets = np.concatenate([[0], np.cumsum(counts)])
        within_frame = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], counts)
        atom_index = np.repeat(starts, counts) + within_frame
        return AtomsData(
            numbers=self.numbers[atom_index],
            positions=self.positions[atom_index],
            offsets=new_offsets,
            energy=self.energy[indices],
            forces=self.forces[atom_index],
            cell=self.cell[indices],
            pbc=self.pbc[indices],
            frame_ids=self.frame_ids[indices],
            units=self.units,
            source=self.source,
            unit_origin=self.unit_origin,
            fixed=self.fixed[atom_index],
            systems=None if self.systems is None else self.systems[indices],
        )

    def validate(self) -> None:
        """Checks shapes, offsets, atomic numbers and that all values are finite.

        Raises DataError naming the source, the key and the first bad frame.
        """
        if self.offsets.ndim != 1 or self.offsets.size == 0:
            raise DataError(
                f"{self.source}: key 'offsets' must have shape (n_frames + 1,), got "
                f"{self.offsets.shape}"
            )
        n_frames = len(self)
        if self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0):
            raise DataError(
                f"{self.source}: key 'offsets' must start at 0 and never decrease, got "
                f"{self.offsets[:5]}..."
            )
        n_total = int(self.offsets[-1])
        expected_shapes = {
            "numbers": (n_total,),
            "fixed": (n_total,),
            "positions": (n_total, 3),
            "forces": (n_total, 3),
            "energy": (n_frames,),
            "cell": (n_frames, 3, 3),
            "pbc": (n_frames, 3),
            "frame_ids": (n_frames,),
        }
        if self.systems is not None:
            expected_shapes["systems"] = (n_frames,)
        for key, expected in expected_shapes.items():
            got = getattr(self, key).shape
            if got != expected:
                raise DataError(
                    f"{self.source}: key '{key}' has shape {got}, expected {expected} "
                    f"({n_frames} frames, {n_total} atoms)"
                )
        bad_numbers = (self.numbers < 1) | (self.numbers > _MAX_ATOMIC_NUMBER)
        if bad_numbers.any():
            atom = int(np.argmax(bad_numbers))
            raise DataError(
                f"{self.source}: key 'numbers' must hold atomic numbers 1..{_MAX_ATOMIC_NUMBER}, "
                f"got {self.numbers[atom]} in frame {self._frame_of_atom(atom)}"
            )
        for key in ("positions", "forces"):
            finite_atoms = np.isfinite(getattr(self, key)).all(axis=1)
            if not finite_atoms.all():
                frame = self._frame_of_atom(int(np.argmin(finite_atoms)))
                raise DataError(
                    f"{self.source}: key '{key}' has a NaN or Inf value in frame {frame}"
                )
        per_frame = {"energy": self.energy[:, None], "cell": self.cell.reshape(n_frames, 9)}
        for key, values in per_frame.items():
            finite_frames = np.isfinite(values).all(axis=1)
            if not finite_frames.all():
                raise DataError(
                    f"{self.source}: key '{key}' has a NaN or Inf value in frame "
                    f"{int(np.argmin(finite_frames))}"
                )

    def _frame_of_atom(self, atom: int) -> int:
        return int(np.searchsorted(self.offsets, atom, side="right") - 1)

    @classmethod
    def concatenate(cls, parts: Sequence[AtomsData]) -> AtomsData:
        """Joins containers frame-wise; all parts must share the same units.

        ``frame_ids`` are kept as they are: callers that join different sources and need unique
        ids must offset them first.
        """
        if not parts:
            raise DataError("AtomsData.concatenate: got an empty list, expected at least one part")
        units = parts[0].units
        for part in parts[1:]:
            if part.units != units:
                raise DataError(
                    f"AtomsData.concatenate: units of '{part.source}' are {part.units}, expected "
                    f"{units} as in '{parts[0].source}'"
                )
        atom_starts = np.cumsum([0] + [int(part.offsets[-1]) for part in parts[:-1]])
        offsets = np.concatenate(
            [[0]]
            + [part.offsets[1:] + start for part, start in zip(parts, atom_starts, strict=True)]
        )
        sources = list(dict.fromkeys(part.source for part in parts))
        systems = None
        if any(part.systems is not None for part in parts):
            # Systems of different parts are different systems; a part without them has
            # independent frames, each a system of its own.
            codes, start = [], 0
            for part in parts:
                own = part.systems if part.systems is not None else np.arange(len(part))
                codes.append(own + start)
                start += int(own.max(initial=-1)) + 1
            systems = np.concatenate(codes)
        return cls(
            numbers=np.concatenate([part.numbers for part in parts]),
            positions=np.concatenate([part.positions for part in parts]),
            offsets=offsets,
            energy=np.concatenate([part.energy for part in parts]),
            forces=np.concatenate([part.forces for part in parts]),
            cell=np.concatenate([part.cell for part in parts]),
            pbc=np.concatenate([part.pbc for part in parts]),
            frame_ids=np.concatenate([part.frame_ids for part in parts]),
            units=units,
            source="; ".join(sources),
            unit_origin=parts[0].unit_origin,
            fixed=np.concatenate([part.fixed for part in parts]),
            systems=systems,
        )


def _take_systems(frames_of: list[np.ndarray], count: int) -> tuple[np.ndarray, int]:
    """Frames of whole systems, taken in turn until ``count`` frames (the last one cut short)
    or until the systems run out; returns them and how many systems were used."""
    taken: list[np.ndarray] = []
    have = used = 0
    while have < count and used < len(frames_of):
        frames = frames_of[used][: count - have]
        taken.append(frames)
        have += len(frames)
        used += 1
    return (np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)), used


def split_indices(
    n_frames: int,
    n_train: int,
    n_val: int,
    n_test: int | None,
    seed: int,
    systems: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random disjoint train/val/test frame indices (each sorted).

    One permutation of the frames (drawn with ``seed``) is cut from both ends: training takes its
    first ``n_train`` frames, test its last ``n_test``, validation the ``n_val`` before those. For
    a given seed and evaluation sizes, the validation and test frames therefore do not depend on
    ``n_train``, and a smaller training set is part of every larger one (a training-set-size study
    compares like with like). ``n_test=None`` puts all frames not used for training or validation
    into the test split.

    With ``systems`` (the structure or trajectory of each frame) whole systems are permuted
    instead, so that no system has frames in two splits: training takes its ``n_train`` frames
    from the first systems, validation and then test take theirs from the last systems that
    training left, and get fewer frames when those run out (never none). The last system a
    split takes may be cut short; its other frames are used by no split.
    """
    requested = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    for name, count in requested.items():
        if count is not None and (int(count) != count or count < 0):
            raise DataError(f"split_indices: {name} must be a non-negative integer, got {count}")
    n_train, n_val = int(n_train), int(n_val)
    n_test_used = n_frames - n_train - n_val if n_test is None else int(n_test)
    total = n_train + n_val + max(n_test_used, 0)
    if n_test_used < 0 or total > n_frames:
        raise DataError(
            f"split_indices: {n_frames} frames available, but requested n_train={n_train}, "
            f"n_val={n_val}, n_test={n_test} ({n_train + n_val + (n_test or 0)} frames)"
        )
    rng = np.random.default_rng(seed)
    if systems is None:
        order = rng.permutation(n_frames)
        evaluation_start = n_frames - n_test_used - n_val
        train = np.sort(order[:n_train])
        val = np.sort(order[evaluation_start : evaluation_start + n_val])
        test = np.sort(order[evaluation_start + n_val :])
        return train, val, test
    names = np.unique(systems)
    frames_of = [np.flatnonzero(systems == name) for name in names[rng.permutation(len(names))]]
    train, n_train_systems = _take_systems(frames_of, n_train)
    left = frames_of[n_train_systems:][::-1]  # from the last system on
    val, n_val_systems = _take_systems(left, n_val)
    test, _ = _take_systems(left[n_val_systems:], n_test_used)
    if len(test) == 0 or (n_val > 0 and len(val) == 0):
        raise DataError(
            f"split_indices: training takes {n_train_systems} of the {len(frames_of)} systems "
            f"for n_train={n_train}, which leaves {len(left)} systems, too few for a test and a "
            "validation split; lower dataset.n_train, or split by frame (dataset.split=frames)"
        )
    return np.sort(train), np.sort(val), np.sort(test)


class AtomsDataset(torch.utils.data.Dataset):
    """Torch dataset over an AtomsData; an item is one frame as a dict of tensors.

    Item keys: ``numbers`` (n,) int64, ``positions`` (n, 3), ``energy`` (), ``forces`` (n, 3),
    ``cell`` (3, 3), ``pbc`` (3,) bool, ``fixed`` (n,) bool. Positions and cells are in
    ``dtype``; the labels stay in float64, so that the label transform (a shift of ~4e5 kcal/mol
    for MD17) is exact before anything is cast to the model's precision.

    With ``graph_cutoff``, items also hold the frame's neighbour list (``edge_index``,
    ``edge_shift``, ``edge_reverse``, frame-local, and the ``graph_cutoff`` it was built with,
    which ``AtomsCollate`` checks against its own), built on the frame's first use and kept:
    a frame's positions never change, and joining kept lists costs a fifth of building them
    (0.3 against 1.6 ms for 20 aspirin frames, README "Benchmarks").
    """

    def __init__(
        self, data: AtomsData, dtype: torch.dtype = torch.float32, graph_cutoff: float | None = None
    ) -> None:
        if not dtype.is_floating_point:
            raise DataError(f"AtomsDataset: dtype must be a floating point dtype, got {dtype}")
        self.data = data
        self.dtype = dtype
        self.graph_cutoff = graph_cutoff
        self._graphs: list[dict | None] = [None] * len(data)
        # Converted once; items are cheap views into these tensors.
        self._offsets = data.offsets.tolist()
        self._numbers = torch.from_numpy(data.numbers)
        self._positions = torch.from_numpy(data.positions).to(dtype)
        self._energy = torch.from_numpy(data.energy)
        self._forces = torch.from_numpy(data.forces)
        self._cell = torch.from_numpy(data.cell).to(dtype)
        self._pbc = torch.from_numpy(data.pbc)
        self._fixed = torch.from_numpy(data.fixed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"AtomsDataset index {index} out of range for {len(self)} frames")
        index = index % len(self)
        atoms = slice(self._offsets[index], self._offsets[index + 1])
        item = {
            "numbers": self._numbers[atoms],
            "positions": self._positions[atoms],
            "energy": self._energy[index],
            "forces": self._forces[atoms],
            "cell": self._cell[index],
            "pbc": self._pbc[index],
            "fixed": self._fixed[atoms],
        }
        if self.graph_cutoff is not None:
            if self._graphs[index] is None:
                self._graphs[index] = frame_graph(
                    item["positions"], item["cell"], item["pbc"], self.graph_cutoff
                )
            item.update(self._graphs[index])
        return item


def frame_graph(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> dict[str, torch.Tensor]:
    """One frame's neighbour list and the reverse of each edge (frame-local indices)."""
    edge_index, edge_shift = neighbor_list(positions, cell, pbc, cutoff)
    return {
        "edge_index": edge_index,
        "edge_shift": edge_shift,
        "edge_reverse": reverse_edges(edge_index, edge_shift, len(positions)),
        "graph_cutoff": float(cutoff),
    }


class AtomsCollate:
    """Collates AtomsDataset items into one batch with a radius-graph neighbour list.

    Batch keys: ``numbers`` (N,), ``positions`` (N, 3), ``batch`` (N,) frame of each atom,
    ``n_atoms`` (B,), ``energy`` (B,), ``forces`` (N, 3), ``cell`` (B, 3, 3), ``pbc`` (B, 3),
    ``fixed`` (N,) atoms held by a constraint,
    ``edge_index`` (2, E) global atom indices and ``edge_shift`` (E, 3) so that the vector from
    atom ``edge_index[0]`` to atom ``edge_index[1]`` is ``positions[j] - positions[i] + shift``,
    and ``edge_reverse`` (E,) the index of each edge's reverse (models share per-pair work).
    A plain object holding only the cutoff, so it pickles into DataLoader worker processes.
    """

    def __init__(self, cutoff: float) -> None:
        if not np.isfinite(cutoff) or cutoff <= 0:
            raise ValueError(f"AtomsCollate: cutoff must be a positive finite number, got {cutoff}")
        self.cutoff = float(cutoff)

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("AtomsCollate: got an empty list of items")
        n_atoms = torch.tensor([len(item["numbers"]) for item in items], dtype=torch.int64)
        batch = {
            "numbers": torch.cat([item["numbers"] for item in items]),
            "positions": torch.cat([item["positions"] for item in items]),
            "batch": torch.repeat_interleave(torch.arange(len(items)), n_atoms),
            "n_atoms": n_atoms,
            "energy": torch.stack([item["energy"] for item in items]),
            "forces": torch.cat([item["forces"] for item in items]),
            "cell": torch.stack([item["cell"] for item in items]),
            "pbc": torch.stack([item["pbc"] for item in items]),
            "fixed": torch.cat([item["fixed"] for item in items]),
        }
        if all(item.get("graph_cutoff") == self.cutoff for item in items):  # built and kept
            batch.update(self._joined_graphs(items, n_atoms))
            return batch
        batch["edge_index"], batch["edge_shift"] = batched_neighbor_list(
            batch["positions"], batch["cell"], batch["pbc"], n_atoms, self.cutoff
        )
        batch["edge_reverse"] = reverse_edges(
            batch["edge_index"], batch["edge_shift"], len(batch["numbers"])
        )
        return batch

    def _joined_graphs(self, items, n_atoms: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frames' own lists with batch-wide atom and edge indices (the same edges, in the
        same order, as ``batched_neighbor_list`` gives)."""
        n_edges = torch.tensor([item["edge_index"].shape[1] for item in items])
        atom_start = (torch.cumsum(n_atoms, 0) - n_atoms).tolist()
        edge_start = (torch.cumsum(n_edges, 0) - n_edges).tolist()
        pieces = list(zip(items, atom_start, edge_start, strict=True))
        return {
            "edge_index": torch.cat([item["edge_index"] + a for item, a, _ in pieces], dim=1),
            "edge_shift": torch.cat([item["edge_shift"] for item in items]),
            "edge_reverse": torch.cat([item["edge_reverse"] + e for item, _, e in pieces]),
        }
