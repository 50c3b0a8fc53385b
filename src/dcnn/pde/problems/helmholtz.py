"""Wang, Teng & Perdikaris' 2D Helmholtz problem: lap u + lambda u = q on [-1, 1]^2.

Exact solution u = sin(a1 pi x) sin(a2 pi y) (a1 = 1, a2 = 4), q derived from it, Dirichlet
data u = 0 on the four edges. Terms: "pde" (mean squared lap u + lambda u - q) and "bc" (the
SUM over the four edges of the mean squared boundary mismatch, as their code adds them under
one weight).
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.problems.base import JetRequest, mean_square_per_channel
from dcnn.pde.problems.box import BoxProblem
from dcnn.pde.residuals import helmholtz_operator


class HelmholtzProblem(BoxProblem):
    name = "helmholtz"
    channels = ("u",)
    input_names = ("x", "y")
    lows = (-1.0, -1.0)
    highs = (1.0, 1.0)
    faces = {"bottom": (1, -1.0), "right": (0, 1.0), "top": (1, 1.0), "left": (0, -1.0)}
    term_names = ("pde", "bc")

    def __init__(self, *, lam: float = 1.0, a1: float = 1.0, a2: float = 4.0, **options) -> None:
        self.lam, self.a1, self.a2 = float(lam), float(a1), float(a2)
        super().__init__(**options)

    def exact(self, points: np.ndarray) -> np.ndarray:
        return np.sin(self.a1 * math.pi * points[:, 0]) * np.sin(self.a2 * math.pi * points[:, 1])

    def forcing(self, points: np.ndarray) -> np.ndarray:
        """q = lap u + lambda u of the exact solution."""
        curvature = (self.a1 * math.pi) ** 2 + (self.a2 * math.pi) ** 2
        return (self.lam - curvature) * self.exact(points)

    def _targets(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        targets = {"domain_target": self.forcing(raw["domain"])}
        targets |= {f"{face}_target": self.exact(raw[face])[:, None] for face in self.faces}
        return targets

    def jet_requests(self) -> dict[str, JetRequest]:
        return {"domain": self.axis_request(second_order=(0, 1))}

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        residual = helmholtz_operator(jets["domain"], self.lam) - points["domain_target"]
        boundary = sum(
            mean_square_per_channel(outputs[face] - points[f"{face}_target"]).sum()
            for face in self.faces
        )
        return {"pde": residual.square().mean(), "bc": boundary}

    def reference(self, physical: np.ndarray) -> np.ndarray:
        return self.exact(physical)[:, None]
