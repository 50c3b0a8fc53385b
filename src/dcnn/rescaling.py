"""Label rescaling: paired transforms around the model, fitted on the training split only.

The model learns ``E' = (E - reference) / scale`` and ``F' = F / scale``. Forces share the scale
of the energy because F = -dE/dx is linear in E, and the reference, a sum of per-atom terms,
drops out of F. Predictions are mapped back with the inverse before any metric is computed.

The reference is ``shift * n_atoms`` (one energy per atom, whatever the element) or, for
``standardize`` on data of several compositions (OC20, OC22), a sum of per-element reference
energies fitted by least squares on the training split (the usual "atomic reference energies"):
one mean per atom would leave the composition spread in the labels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

RESCALINGS = ("none", "power_of_ten", "fixed", "standardize")


N_ELEMENTS = 119  # atomic numbers 0..118


class LabelScaler(nn.Module):
    def __init__(
        self,
        scale: float = 1.0,
        shift_per_atom: float = 0.0,
        element_energies: dict[int, float] | None = None,
    ) -> None:
        super().__init__()
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"label scale must be a positive finite number, got {scale}")
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.register_buffer(
            "shift_per_atom", torch.tensor(float(shift_per_atom), dtype=torch.float64)
        )
        table = torch.zeros(N_ELEMENTS, dtype=torch.float64)
        for number, value in (element_energies or {}).items():
            table[int(number)] = float(value)
        self.register_buffer("element_energy", table)
        # A Python flag, not a tensor test: checking the table on every step would wait for GPU.
        self.per_element = bool(table.any())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.per_element = bool(self.element_energy.any())

    def reference(
        self, n_atoms: Tensor, numbers: Tensor | None = None, atom_frame: Tensor | None = None
    ) -> Tensor:
        """The energy each structure is measured from: shift * n_atoms + its element terms."""
        reference = self.shift_per_atom * n_atoms.double()
        if self.per_element:
            if numbers is None or atom_frame is None:
                raise ValueError(
                    "this label scaler has per-element reference energies: pass the atomic "
                    "numbers and the frame of each atom"
                )
            terms = self.element_energy[numbers]
            reference = reference.index_add(0, atom_frame, terms)
        return reference

    # Encoded labels are float64: the caller casts them to the model's precision only after the
    # shift (MD17 energies of -4e5 kcal/mol in float32 carry steps of 1/32 kcal/mol).
    def encode_energy(
        self,
        energy: Tensor,
        n_atoms: Tensor,
        numbers: Tensor | None = None,
        atom_frame: Tensor | None = None,
    ) -> Tensor:
        return (energy.double() - self.reference(n_atoms, numbers, atom_frame)) / self.scale

    def decode_energy(
        self,
        energy: Tensor,
        n_atoms: Tensor,
        numbers: Tensor | None = None,
        atom_frame: Tensor | None = None,
    ) -> Tensor:
        return energy.double() * self.scale + self.reference(n_atoms, numbers, atom_frame)

    def encode_forces(self, forces: Tensor) -> Tensor:
        return forces.double() / self.scale

    def decode_forces(self, forces: Tensor) -> Tensor:
        return forces.double() * self.scale

    def describe(self) -> dict:
        described: dict = {"scale": float(self.scale), "shift_per_atom": float(self.shift_per_atom)}
        present = torch.nonzero(self.element_energy).flatten().tolist()
        if present:
            described["element_energies"] = {int(z): float(self.element_energy[z]) for z in present}
        return described


def power_of_ten(energy: np.ndarray, forces: np.ndarray) -> float:
    """Smallest power of ten C with |label| / C <= 1 for every energy and force label (eq. 4)."""
    largest = max(np.abs(energy).max(initial=0.0), np.abs(forces).max(initial=0.0))
    if largest == 0:
        raise ValueError("power_of_ten rescaling needs at least one non-zero label")
    exponent = math.ceil(math.log10(largest))
    # Guard against log10 rounding just below an exact power of ten.
    if largest > 10.0**exponent:
        exponent += 1
    return 10.0**exponent


def _compositions(numbers: np.ndarray, n_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elements present and the count of each in every structure (B, elements)."""
    frame = np.repeat(np.arange(len(n_atoms)), n_atoms)
    elements, column = np.unique(numbers, return_inverse=True)
    counts = np.zeros((len(n_atoms), len(elements)))
    np.add.at(counts, (frame, column), 1)
    return elements, counts


def fit_label_scaler(
    name: str,
    energy: np.ndarray,
    forces: np.ndarray,
    n_atoms: np.ndarray,
    scale: float | None = None,
    numbers: np.ndarray | None = None,
) -> LabelScaler:
    """Build the scaler ``name`` from training-split labels (energy (B,), forces (N, 3)) and,
    for per-element references, the atomic numbers of the structures' atoms (N,)."""
    if name == "none":
        return LabelScaler()
    if name == "power_of_ten":
        return LabelScaler(scale=power_of_ten(energy, forces))
    if name == "fixed":
        if scale is None:
            raise ValueError("rescaling=fixed needs rescaling.scale (e.g. rescaling.scale=1e4)")
        return LabelScaler(scale=float(scale))
    if name == "standardize":
        compositions = None if numbers is None else _compositions(numbers, n_atoms)
        if compositions is None or len(np.unique(compositions[1], axis=0)) == 1:
            # One composition (MD17): a mean energy per atom is the whole reference.
            shift = float(np.mean(energy / n_atoms))
            spread = float(np.std(energy - shift * n_atoms))
            scaler = LabelScaler(scale=spread, shift_per_atom=shift) if spread > 0 else None
        else:
            elements, counts = compositions
            per_element, *_ = np.linalg.lstsq(counts, energy, rcond=None)
            spread = float(np.std(energy - counts @ per_element))
            references = dict(zip(elements.tolist(), per_element.tolist(), strict=True))
            scaler = LabelScaler(scale=spread, element_energies=references) if spread > 0 else None
        if scaler is None:
            raise ValueError(
                "rescaling=standardize needs training energies that vary; "
                f"got a standard deviation of {spread} over {len(energy)} structures"
            )
        return scaler
    raise ValueError(f"unknown rescaling {name!r}; expected one of {', '.join(RESCALINGS)}")
