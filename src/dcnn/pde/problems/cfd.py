"""PDEBench's 1D compressible flow as a PINN problem (the inviscid Euler equations)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.problems.base import mean_square_per_channel
from dcnn.pde.problems.pdebench import PeriodicProblem1D
from dcnn.pde.residuals import euler_1d_residuals

if TYPE_CHECKING:
    from dcnn.data.pdebench import PdeSample

# Viscosities above this make the inviscid Euler residual the wrong physics for a CFD file.
EULER_VISCOSITY_TOLERANCE = 1e-6


class CfdProblem(PeriodicProblem1D):
    """1D compressible flow as the inviscid Euler equations, outputs (density, Vx, pressure).

    Terms: "pde" = SUM of the mean squared mass, momentum and energy residuals (correct
    conservation form, see `euler_1d_residuals`); initial and periodic boundary terms for every
    field. PDEBench's PINN also drops viscosity (its files use eta = zeta = 1e-8).
    """

    name = "cfd"
    channels = ("density", "Vx", "pressure")
    required_params = ("gamma",)
    physics_term_names = (
        "pde",
        "ic_density",
        "ic_velocity",
        "ic_pressure",
        "bc_density",
        "bc_velocity",
        "bc_pressure",
    )

    def __init__(self, sample: PdeSample, **kwargs) -> None:
        super().__init__(sample, **kwargs)
        viscosities = {key: sample.params.get(key, 0.0) for key in ("eta", "zeta")}
        if any(abs(value) > EULER_VISCOSITY_TOLERANCE for value in viscosities.values()):
            warnings.warn(
                f"{sample.source}: viscosities {viscosities} are not negligible, but the CFD "
                f"residual is the inviscid Euler system (as in PDEBench's PINN baseline)",
                stacklevel=2,
            )

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        mass, momentum, energy = euler_1d_residuals(jets["domain"], self.params["gamma"])
        ic_density, ic_velocity, ic_pressure = mean_square_per_channel(
            outputs["initial"] - points["initial_target"]
        )
        bc_density, bc_velocity, bc_pressure = self._periodic_mismatch(outputs)
        return {
            "pde": mass.square().mean() + momentum.square().mean() + energy.square().mean(),
            "ic_density": ic_density,
            "ic_velocity": ic_velocity,
            "ic_pressure": ic_pressure,
            "bc_density": bc_density,
            "bc_velocity": bc_velocity,
            "bc_pressure": bc_pressure,
        }
