"""Wang, Teng & Perdikaris' Klein-Gordon problem: u_tt + alpha u_xx + beta u + gamma u^k = f.

On (t, x) in [0, 1]^2 with alpha = -1, beta = 0, gamma = 1, k = 3 and the exact solution
u = x cos(5 pi t) + (x t)^3, f derived from it; initial data u(0, x) and u_t(0, x) = 0, Dirichlet
data at x = 0 and x = 1. Terms: "pde", "ic" (mean squared u mismatch + mean squared u_t at
t = 0) and "bc" (the sum over both edges), grouped under one weight each as in their code.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.problems.base import JetRequest, mean_square_per_channel
from dcnn.pde.problems.box import BoxProblem
from dcnn.pde.residuals import klein_gordon_operator

T, X = 0, 1


class KleinGordonProblem(BoxProblem):
    name = "klein_gordon"
    channels = ("u",)
    input_names = ("t", "x")
    lows = (0.0, 0.0)
    highs = (1.0, 1.0)
    faces = {"initial": (T, 0.0), "left": (X, 0.0), "right": (X, 1.0)}
    term_names = ("pde", "ic", "bc")

    def __init__(
        self,
        *,
        alpha: float = -1.0,
        beta: float = 0.0,
        gamma: float = 1.0,
        k: int = 3,
        **options,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Klein-Gordon power k must be a positive integer, got {k!r}")
        self.alpha, self.beta, self.gamma, self.k = float(alpha), float(beta), float(gamma), k
        super().__init__(**options)

    @staticmethod
    def exact(points: np.ndarray) -> np.ndarray:
        t, x = points[:, T], points[:, X]
        return x * np.cos(5 * math.pi * t) + (x * t) ** 3

    def forcing(self, points: np.ndarray) -> np.ndarray:
        t, x = points[:, T], points[:, X]
        u_tt = -25 * math.pi**2 * x * np.cos(5 * math.pi * t) + 6 * t * x**3
        u_xx = 6 * x * t**3
        u = self.exact(points)
        return u_tt + self.alpha * u_xx + self.beta * u + self.gamma * u**self.k

    def _targets(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        targets = {"domain_target": self.forcing(raw["domain"])}
        targets |= {f"{face}_target": self.exact(raw[face])[:, None] for face in self.faces}
        return targets

    def jet_requests(self) -> dict[str, JetRequest]:
        # u_tt and u_xx on the residual points; u_t on the initial line.
        return {"domain": self.axis_request(second_order=(T, X)), "initial": self.axis_request()}

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        operator = klein_gordon_operator(jets["domain"], self.alpha, self.beta, self.gamma, self.k)
        initial = jets["initial"]
        initial_mismatch = mean_square_per_channel(outputs["initial"] - points["initial_target"])
        return {
            "pde": (operator - points["domain_target"]).square().mean(),
            "ic": initial_mismatch.sum() + initial.first(0, T).square().mean(),
            "bc": sum(
                mean_square_per_channel(outputs[face] - points[f"{face}_target"]).sum()
                for face in ("left", "right")
            ),
        }

    def reference(self, physical: np.ndarray) -> np.ndarray:
        return self.exact(physical)[:, None]
