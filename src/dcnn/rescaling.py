"""Label rescaling: paired transforms around the model, fitted on the training split only.

The model learns ``E' = (E - shift * n_atoms) / scale`` and ``F' = F / scale``. Forces share the
scale of the energy because F = -dE/dx is linear in E, and the shift (per atom) drops out of F.
Predictions are mapped back with the inverse before any metric is computed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

RESCALINGS = ("none", "power_of_ten", "fixed", "standardize")


class LabelScaler(nn.Module):
    def __init__(self, scale: float = 1.0, shift_per_atom: float = 0.0) -> None:
        super().__init__()
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"label scale must be a positive finite number, got {scale}")
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.register_buffer(
            "shift_per_atom", torch.tensor(float(shift_per_atom), dtype=torch.float64)
        )

    # Encoded labels are float64: the caller casts them to the model's precision only after the
    # shift (MD17 energies of -4e5 kcal/mol in float32 carry steps of 1/32 kcal/mol).
    def encode_energy(self, energy: Tensor, n_atoms: Tensor) -> Tensor:
        shifted = energy.double() - self.shift_per_atom * n_atoms.double()
        return shifted / self.scale

    def decode_energy(self, energy: Tensor, n_atoms: Tensor) -> Tensor:
        return energy.double() * self.scale + self.shift_per_atom * n_atoms.double()

    def encode_forces(self, forces: Tensor) -> Tensor:
        return forces.double() / self.scale

    def decode_forces(self, forces: Tensor) -> Tensor:
        return forces.double() * self.scale

    def describe(self) -> dict[str, float]:
        return {"scale": float(self.scale), "shift_per_atom": float(self.shift_per_atom)}


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


def fit_label_scaler(
    name: str,
    energy: np.ndarray,
    forces: np.ndarray,
    n_atoms: np.ndarray,
    scale: float | None = None,
) -> LabelScaler:
    """Build the scaler ``name`` from training-split labels (energy (B,), forces (N, 3))."""
    if name == "none":
        return LabelScaler()
    if name == "power_of_ten":
        return LabelScaler(scale=power_of_ten(energy, forces))
    if name == "fixed":
        if scale is None:
            raise ValueError("rescaling=fixed needs rescaling.scale (e.g. rescaling.scale=1e4)")
        return LabelScaler(scale=float(scale))
    if name == "standardize":
        shift = float(np.mean(energy / n_atoms))
        spread = float(np.std(energy - shift * n_atoms))
        if not spread > 0:
            raise ValueError(
                "rescaling=standardize needs training energies that vary; "
                f"got a standard deviation of {spread} over {len(energy)} structures"
            )
        return LabelScaler(scale=spread, shift_per_atom=shift)
    raise ValueError(f"unknown rescaling {name!r}; expected one of {', '.join(RESCALINGS)}")
