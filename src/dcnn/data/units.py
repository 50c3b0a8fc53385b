"""Units of atomistic labels: names users write, factors between them, and the conversion a run
applies when it reads a file.

Positions always reach the models in Angstrom (their cutoffs are in Angstrom). Energies stay in
the file's unit unless a report unit is asked for; forces are energy per Angstrom.
"""

from __future__ import annotations

from dataclasses import dataclass

from ase import units as ase_units

from dcnn.data.atoms import AtomsData, DataError

# Size of one unit in eV / in Angstrom, by canonical name.
ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kJ/mol": ase_units.kJ / ase_units.mol,
    "Hartree": ase_units.Hartree,
    "Rydberg": ase_units.Rydberg,
}
LENGTH_UNITS = {"Angstrom": 1.0, "Bohr": ase_units.Bohr, "nm": 10.0, "pm": 0.01}
_ALIASES = {
    "ev": "eV",
    "mev": "meV",
    "kcal/mol": "kcal/mol",
    "kcal mol-1": "kcal/mol",
    "kj/mol": "kJ/mol",
    "hartree": "Hartree",
    "ha": "Hartree",
    "eh": "Hartree",
    "au": "Hartree",
    "rydberg": "Rydberg",
    "ry": "Rydberg",
    "angstrom": "Angstrom",
    "ang": "Angstrom",
    "a": "Angstrom",
    "å": "Angstrom",
    "bohr": "Bohr",
    "a0": "Bohr",
    "nm": "nm",
    "pm": "pm",
}


def canonical_unit(name: str, kind: str, setting: str) -> str:
    """The canonical name of an energy or length unit; ``setting`` names where it came from."""
    known = ENERGY_UNITS if kind == "energy" else LENGTH_UNITS
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical not in known:
        raise DataError(
            f"{setting}={name!r} is not a known {kind} unit; expected one of {', '.join(known)}"
        )
    return canonical


@dataclass(frozen=True)
class Units:
    """The units of a file's labels and where they came from ("file", "given" or "assumed")."""

    energy: str
    length: str
    origin: str

    def label_units(self) -> dict[str, str]:
        return {"energy": self.energy, "forces": f"{self.energy}/Angstrom", "positions": "Angstrom"}


def convert(
    data: AtomsData, found: Units, report_energy_unit: str | None
) -> tuple[AtomsData, Units]:
    """``data`` (in ``found`` units) with positions in Angstrom and energies in the report unit
    (the file's energy unit when none is given); returns the units now in force."""
    energy_unit = found.energy if report_energy_unit is None else report_energy_unit
    energy_factor = ENERGY_UNITS[found.energy] / ENERGY_UNITS[energy_unit]
    length_factor = LENGTH_UNITS[found.length]
    if energy_factor != 1.0 or length_factor != 1.0:
        data.positions = data.positions * length_factor
        data.cell = data.cell * length_factor
        data.energy = data.energy * energy_factor
        data.forces = data.forces * (energy_factor / length_factor)
    now = Units(energy_unit, "Angstrom", found.origin)
    data.units = now.label_units()
    return data, now
