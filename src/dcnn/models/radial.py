"""Radial bases and smooth cutoffs shared by the models (distances in Angstrom).

- ``GaussianBasis``: Gaussians of the distance (CGCNN, ForceNet, GemNet-T's RBF on d / cutoff);
- ``polynomial_envelope``: GemNet's and DimeNet's polynomial cutoff that goes smoothly to zero
  with its first two derivatives at the cutoff;
- ``cosine_cutoff``: ForceNet's cos(pi d / 2c) edge weight.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianBasis(nn.Module):
    """exp(-(x - mu_k)^2 / (2 width^2)) for ``n`` centres mu_k evenly spaced on [start, stop];
    ``width`` defaults to the spacing of the centres."""

    def __init__(self, start: float, stop: float, n: int, width: float | None = None) -> None:
        super().__init__()
        if n < 1 or not stop > start:
            raise ValueError(
                f"GaussianBasis: need n >= 1 and stop > start, got {n}, {start}, {stop}"
            )
        centres = torch.linspace(start, stop, n)
        spacing = float(centres[1] - centres[0]) if n > 1 else stop - start
        self.register_buffer("centres", centres)
        self.coefficient = -0.5 / (width if width is not None else spacing) ** 2

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(self.coefficient * (x[..., None] - self.centres) ** 2)


def polynomial_envelope(x: Tensor, exponent: int) -> Tensor:
    """1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) for x < 1, else 0 (x = d / c)."""
    p = exponent
    value = (
        1
        - (p + 1) * (p + 2) / 2 * x**p
        + p * (p + 2) * x ** (p + 1)
        - p * (p + 1) / 2 * x ** (p + 2)
    )
    return torch.where(x < 1, value, torch.zeros_like(x))


def cosine_cutoff(distance: Tensor, cutoff: float) -> Tensor:
    """cos(pi d / 2c): 1 at d = 0, 0 at the cutoff (ForceNet's edge weight)."""
    return torch.cos(math.pi * distance / (2 * cutoff))
