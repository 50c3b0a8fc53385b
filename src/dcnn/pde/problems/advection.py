"""PDEBench's 1D advection as a PINN problem."""

from __future__ import annotations

from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.problems.base import JetRequest, mean_square_per_channel
from dcnn.pde.problems.pdebench import PeriodicProblem1D
from dcnn.pde.residuals import advection_residual


class AdvectionProblem(PeriodicProblem1D):
    """1D advection u_t + beta u_x = 0, periodic. Terms: pde, ic, bc."""

    name = "advection"
    channels = ("u",)
    required_params = ("beta",)
    physics_term_names = ("pde", "ic", "bc")

    def jet_requests(self) -> dict[str, JetRequest]:
        # u_t + beta u_x is the derivative along (beta, 1) in (x, t): one direction, not two axes.
        return {"domain": JetRequest(directions=((self.params["beta"], 1.0),))}

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        residual = advection_residual(jets["domain"], self.params["beta"])
        initial_error = outputs["initial"] - points["initial_target"]
        return {
            "pde": residual.square().mean(),
            "ic": mean_square_per_channel(initial_error).sum(),
            "bc": self._periodic_mismatch(outputs).sum(),
        }
