"""Reading the atomistic data a run is pointed at: which reader, which molecule, which units and
how many frames go to each split. What was found is logged and recorded with the run.

- Reader: ``format: auto`` detects it from the file's keys or extension (``detect_format``); the
  explicit formats and a user's own reader function (a dotted name) keep working.
- Molecule: a single rMD17 file names its molecule; for a folder of rMD17 files of several
  molecules, ``dataset.molecule`` chooses (aspirin when unset). A molecule set explicitly that
  contradicts the file is an error that names the fix.
- Units: ``energy_unit`` / ``length_unit`` state them; otherwise the file's own (sGDML e_unit,
  r_unit), otherwise the format's convention (MD17: kcal/mol; ASE: eV; both Angstrom).
  Positions are converted to Angstrom, energies to ``report_energy_unit`` when given.
- Splits: ``n_val`` and ``n_test`` default to what the training split leaves: validation
  min(200, 20 % of it), test the rest up to ``max_eval_frames``. Frames of one system (a
  relaxation trajectory: one file of a folder, or an ``sid`` key) stay in one split
  (``split: auto`` does so whenever the data names systems; MD frames are split one by one, as
  the paper did).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from ase.data import chemical_symbols

from dcnn.data.atoms import AtomsData, DataError
from dcnn.data.readers import (
    detect_format,
    read_ase,
    read_md17_npz,
    read_rmd17,
    rmd17_molecule_of,
    rmd17_molecules,
)
from dcnn.data.units import Units, canonical_unit, convert

log = logging.getLogger("dcnn")

DEFAULT_MOLECULE = "aspirin"
_MD17_FILE_NAME = re.compile(r"md17_(?P<molecule>[a-z_]+?)(?:\d{4})?\.npz")  # md17_benzene2017.npz
MAX_DEFAULT_VAL = 200
DEFAULT_VAL_FRACTION = 0.2


@dataclass
class Frames:
    """The frames of a data set with what is known about them."""

    data: AtomsData
    format: str
    molecule: str | None
    units: Units
    label_source: str | None = None  # rMD17 files: md17 (original labels) or rmd17

    def facts(self) -> dict:
        counts = self.data.n_atoms()
        atoms = (
            f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
        )
        return {
            "source": self.data.source,
            "format": self.format,
            "molecule": self.molecule,
            **({"label_source": self.label_source} if self.label_source else {}),
            "frames": len(self.data),
            "atoms": atoms,
            "elements": [chemical_symbols[z] for z in np.unique(self.data.numbers)],
            "periodic": bool(self.data.pbc.any()),
            "units": self.units.label_units(),
            "units_origin": self.units.origin,
        }


def _rmd17_molecule(path: Path, molecule: str | None) -> str | None:
    if path.is_file():
        return molecule or rmd17_molecule_of(path)  # a contradiction is the reader's error
    if molecule is not None:
        return molecule
    present = sorted(rmd17_molecules(path))
    if len(present) == 1:
        return present[0]
    if DEFAULT_MOLECULE in present:
        log.info(
            "dataset.molecule not set: %s of the %d molecules in %s",
            DEFAULT_MOLECULE,
            len(present),
            path,
        )
        return DEFAULT_MOLECULE
    raise DataError(
        f"{path} holds rMD17 files of the molecules {present}; choose one with dataset.molecule=..."
    )


def _read(path: Path, format: str, molecule: str | None, label_source: str | None):
    if "." in format:  # a user's own reader: reader(path, **options) -> AtomsData
        options = {"molecule": molecule, "label_source": label_source}
        data = hydra.utils.get_method(format)(path, **{k: v for k, v in options.items() if v})
        data.validate()
        return data, format, molecule
    chosen = detect_format(path) if format == "auto" else format
    if chosen == "rmd17":
        molecule = _rmd17_molecule(path, molecule)
        return read_rmd17(path, molecule, label_source or "md17"), chosen, molecule
    if label_source is not None:
        raise DataError(
            f"dataset.label_source={label_source} chooses between the two label sets of rMD17 "
            f"files, but {path} is read as {chosen}; drop dataset.label_source"
        )
    if chosen == "md17":
        named = _MD17_FILE_NAME.fullmatch(path.name)
        return read_md17_npz(path), chosen, molecule or (named["molecule"] if named else None)
    if chosen == "ase":
        return read_ase(path), chosen, molecule
    raise DataError(
        f"dataset.format={format!r} is not known; expected auto, rmd17, md17, ase or the dotted "
        "name of a reader function"
    )


def read_frames(
    path: Path,
    format: str = "auto",
    molecule: str | None = None,
    label_source: str | None = None,
    energy_unit: str | None = None,
    length_unit: str | None = None,
    report_energy_unit: str | None = None,
) -> Frames:
    """The frames at ``path`` in the units a run works in (see the module docstring)."""
    data, chosen, molecule = _read(path, format, molecule, label_source)
    labels = (label_source or "md17") if chosen == "rmd17" else label_source
    for key, given, setting in (
        ("energy", energy_unit, "dataset.energy_unit=eV"),
        ("positions", length_unit, "dataset.length_unit=Angstrom"),
    ):
        if given is None and key not in data.units:
            raise DataError(
                f"{path}: the reader ({chosen}) does not say in which unit the {key} are; "
                f"set it, e.g. {setting}, or return AtomsData(units={{'energy': ..., "
                "'positions': ...}}) from the reader"
            )
    found = Units(
        canonical_unit(energy_unit or data.units["energy"], "energy", "dataset.energy_unit"),
        canonical_unit(length_unit or data.units["positions"], "length", "dataset.length_unit"),
        "given (dataset.energy_unit, dataset.length_unit)"
        if energy_unit or length_unit
        else data.unit_origin or "given by the reader",
    )
    if (energy_unit or length_unit) and data.unit_origin.startswith("from the file"):
        log.warning(
            "%s states its units (%s, %s); dataset.energy_unit / length_unit override them",
            path,
            data.units["energy"],
            data.units["positions"],
        )
    report = None
    if report_energy_unit is not None:
        report = canonical_unit(report_energy_unit, "energy", "dataset.report_energy_unit")
    data, units = convert(data, found, report)
    frames = Frames(data, chosen, molecule, units, labels)
    facts = frames.facts()
    log.info(
        "read %d frames (%s atoms; %s; %s) from %s as %s%s; units %s and Angstrom (%s)%s",
        facts["frames"],
        facts["atoms"],
        " ".join(facts["elements"]),
        "periodic" if facts["periodic"] else "not periodic",
        path,
        chosen,
        f", molecule {molecule}" if molecule else "",
        found.energy,
        found.origin,
        f", reported in {units.energy}" if report else "",
    )
    return frames


SPLITS = ("auto", "frames", "systems")


def split_kind(split: str, data: AtomsData, source: str) -> str:
    """``frames`` or ``systems``: how the frames of ``data`` are dealt out to the splits."""
    if split not in SPLITS:
        raise DataError(f"dataset.split={split!r}; expected one of {', '.join(SPLITS)}")
    if split == "systems" and data.systems is None:
        raise DataError(
            f"dataset.split=systems, but {source} does not say which system each frame belongs "
            "to (several trajectory files, or an sid / system_id info key); use split=frames"
        )
    if split == "auto":
        return "frames" if data.systems is None else "systems"
    return split


def split_sizes(
    n_frames: int,
    n_train: int,
    n_val: int | None,
    n_test: int | None,
    max_eval_frames: int,
    source: str,
) -> tuple[int, int, int]:
    """Frames for training, validation and test (see the module docstring)."""
    if n_frames < 3:
        raise DataError(
            f"{source} holds {n_frames} frame(s); a run needs at least 3, one each to train, "
            "validate and test on"
        )
    if n_train < 1:
        raise DataError(
            f"dataset.n_train={n_train}: a run needs training frames; set dataset.n_train to at "
            f"least 1 ({source} holds {n_frames} frames)"
        )
    if n_train > n_frames - 2:
        raise DataError(
            f"dataset.n_train={n_train}, but {source} holds {n_frames} frames; set "
            f"dataset.n_train to at most {max(n_frames - 2, 0)}, which leaves frames to validate "
            "and test on"
        )
    left = n_frames - n_train
    if n_val is None:
        n_val = min(MAX_DEFAULT_VAL, max(1, int(DEFAULT_VAL_FRACTION * left)))
    if n_test is None:
        n_test = min(max_eval_frames, left - n_val)
    if n_test < 1 or n_train + n_val + n_test > n_frames:
        raise DataError(
            f"{source} holds {n_frames} frames, but dataset.n_train={n_train}, "
            f"dataset.n_val={n_val} and dataset.n_test={n_test} ask for "
            f"{n_train + n_val + n_test} (and at least 1 test frame); lower them, or leave "
            "n_val and n_test unset to use what training leaves"
        )
    return n_train, n_val, n_test
