"""PDEBench's 2D diffusion-reaction as a PINN problem."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.problems.base import JetRequest, mean_square_per_channel
from dcnn.pde.problems.pdebench import PdeProblem
from dcnn.pde.residuals import diffusion_reaction_residuals


class DiffReactProblem(PdeProblem):
    """2D diffusion-reaction (FitzHugh-Nagumo) on a rectangle with zero-flux boundaries.

    Terms: "pde" = SUM of the mean squared u and v residuals; "bc" = SUM over u and v of the
    mean squared outward normal derivative on the four edges (boundary points are uniform along
    the perimeter); "ic_u", "ic_v"; plus "data" when data_fraction > 0.
    """

    name = "diffreact"
    channels = ("u", "v")
    input_names = ("x", "y", "t")
    required_params = ("Du", "Dv", "k")
    physics_term_names = ("pde", "bc", "ic_u", "ic_v")
    boundary_input_keys = ("boundary",)

    def jet_requests(self) -> dict[str, JetRequest]:
        # Laplacian in (x, y) on the domain; zero-flux (normal derivative) on the boundary.
        return {"domain": JetRequest(second_order=(0, 1)), "boundary": JetRequest()}

    def _boundary_point_sets(
        self, times: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        (x_low, x_high), (y_low, y_high) = self.sample.domain["x"], self.sample.domain["y"]
        # Edges x = x_low, x = x_high, y = y_low, y = y_high, picked in proportion to their length.
        edge_lengths = np.array([y_high - y_low, y_high - y_low, x_high - x_low, x_high - x_low])
        edge = rng.choice(4, size=len(times), p=edge_lengths / edge_lengths.sum())
        along = rng.uniform(0.0, 1.0, size=len(times))
        x = np.select([edge == 0, edge == 1], [x_low, x_high], x_low + along * (x_high - x_low))
        y = np.select([edge == 2, edge == 3], [y_low, y_high], y_low + along * (y_high - y_low))
        outward_normals = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0]], dtype=np.float64)
        return {
            "boundary": np.stack([x, y, times], axis=1),
            "boundary_normal": outward_normals[edge],
        }

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        residual_u, residual_v = diffusion_reaction_residuals(
            jets["domain"], self.params["Du"], self.params["Dv"], self.params["k"]
        )
        normal_derivative = (jets["boundary"].d1 * points["boundary_normal"][:, None, :]).sum(-1)
        ic_u, ic_v = mean_square_per_channel(outputs["initial"] - points["initial_target"])
        return {
            "pde": residual_u.square().mean() + residual_v.square().mean(),
            "bc": mean_square_per_channel(normal_derivative).sum(),
            "ic_u": ic_u,
            "ic_v": ic_v,
        }
