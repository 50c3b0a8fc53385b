"""Wang, Teng & Perdikaris' lid-driven cavity: steady incompressible Navier-Stokes on [0, 1]^2.

The network outputs the stream function psi and the pressure p; u = psi_y and v = -psi_x
satisfy continuity exactly. The lid y = 1 moves with velocity (1, 0), the other walls are at
rest. Terms: "pde", the sum of the mean squared x- and y-momentum residuals
    u u_x + v u_y + p_x - (u_xx + u_yy) / Re,   u v_x + v v_y + p_y - (v_xx + v_yy) / Re,
and "bc", the velocity mismatch on the four walls as their code forms it (the mean over points
and both components of the sum over walls). The momentum residual needs third derivatives of
psi, which only nested autograd gives, so this problem always uses it. The test metric rel_l2
is the relative L2 error of the velocity magnitude |(u, v)| on the reference solution's grid
(their metric), from the project's solver (`dcnn-data cavity`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from dcnn.pde.problems.base import model_device_and_dtype
from dcnn.pde.problems.box import BoxProblem, relative_errors

if TYPE_CHECKING:
    from dcnn.data.cavity import CavityReference

X, Y = 0, 1
PSI, PRESSURE = 0, 1
LID_VELOCITY = (1.0, 0.0)


class CavityProblem(BoxProblem):
    name = "cavity"
    channels = ("psi", "p")
    input_names = ("x", "y")
    lows = (0.0, 0.0)
    highs = (1.0, 1.0)
    faces = {"lid": (Y, 1.0), "left": (X, 0.0), "right": (X, 1.0), "bottom": (Y, 0.0)}
    term_names = ("pde", "bc")

    def __init__(self, reference: CavityReference, *, re: float | None = None, **options) -> None:
        if re is not None and not np.isclose(re, reference.re):
            raise ValueError(
                f"{reference.source}: the reference solution is for Re = {reference.re}, but "
                f"dataset.re = {re}; make one with `dcnn-data cavity --re {re}` or set "
                f"dataset.re={reference.re}"
            )
        self.reference_solution = reference
        self.re = float(reference.re)
        super().__init__(**options)

    def _targets(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wall = {face: np.zeros((len(raw[face]), 2)) for face in self.faces}
        wall["lid"][:] = LID_VELOCITY
        return {f"{face}_target": value for face, value in wall.items()}

    def jet_requests(self) -> dict:
        return {}

    def _velocity(
        self, model: nn.Module, network_inputs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Inputs (made differentiable), outputs (N, 2) and the velocity u = psi_y, v = -psi_x."""
        inputs = network_inputs.detach().requires_grad_(True)
        outputs = model(inputs)
        psi_z = _gradient(outputs[:, PSI], inputs)
        u = psi_z[:, Y] / self.input_std[Y]
        v = -psi_z[:, X] / self.input_std[X]
        return inputs, outputs, u, v

    def flow(self, model: nn.Module, network_inputs: Tensor) -> dict[str, Tensor]:
        """u, v and the x- and y-momentum residuals (N,) at the points, graphs kept."""
        inputs, outputs, u, v = self._velocity(model, network_inputs)
        sx, sy = (float(s) for s in self.input_std)
        u_z, v_z = _gradient(u, inputs), _gradient(v, inputs)
        p_z = _gradient(outputs[:, PRESSURE], inputs)
        u_x, u_y, v_x, v_y = u_z[:, X] / sx, u_z[:, Y] / sy, v_z[:, X] / sx, v_z[:, Y] / sy
        u_xx = _gradient(u_x, inputs)[:, X] / sx
        u_yy = _gradient(u_y, inputs)[:, Y] / sy
        v_xx = _gradient(v_x, inputs)[:, X] / sx
        v_yy = _gradient(v_y, inputs)[:, Y] / sy
        return {
            "u": u,
            "v": v,
            "momentum_x": u * u_x + v * u_y + p_z[:, X] / sx - (u_xx + u_yy) / self.re,
            "momentum_y": u * v_x + v * v_y + p_z[:, Y] / sy - (v_xx + v_yy) / self.re,
        }

    def loss_terms(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str = "auto"
    ) -> dict[str, Tensor]:
        if derivative_method not in ("auto", "autograd"):
            raise ValueError(
                f"cavity: derivative_method={derivative_method!r}, but the momentum residual "
                "needs third derivatives of the stream function, which only nested autograd "
                "gives; use derivative_method=auto or autograd"
            )
        missing = [key for key in self.point_keys() if key not in points]
        if missing:
            raise KeyError(f"cavity loss_terms: points lack {missing}")
        keys = self.input_keys()
        sizes = [len(points[key]) for key in keys]
        # One pass over all sets, as a model with batch statistics needs.
        flow = self.flow(model, torch.cat([points[key] for key in keys]))
        u, v, momentum_x, momentum_y = flow["u"], flow["v"], flow["momentum_x"], flow["momentum_y"]
        domain = slice(0, sizes[0])
        velocity = torch.stack([u, v], dim=1).split(sizes)
        walls = [
            (wall_velocity - points[f"{face}_target"]).square()
            for face, wall_velocity in zip(keys[1:], velocity[1:], strict=True)
        ]
        return {
            "pde": momentum_x[domain].square().mean() + momentum_y[domain].square().mean(),
            "bc": torch.stack(walls).sum(0).mean(),
        }

    def test_grid(self) -> np.ndarray:
        """The reference solution's nodes, row-major over (y, x) like its fields."""
        grid_x, grid_y = np.meshgrid(self.reference_solution.x, self.reference_solution.y)
        return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)

    def reference(self, physical: np.ndarray) -> np.ndarray:
        solution = self.reference_solution
        return np.stack([solution.u.ravel(), solution.v.ravel()], axis=1)

    def evaluate(self, model: nn.Module, batch_size: int = 16384) -> dict[str, float]:
        """rel_l2 of the velocity magnitude, rel_l2_u, rel_l2_v and max_error of (u, v)."""
        grid = self.test_grid()
        device, dtype = model_device_and_dtype(model)
        was_training = model.training
        model.eval()
        pieces = []
        try:
            with torch.enable_grad():
                for start in range(0, len(grid), batch_size):
                    rows = self.to_network(grid[start : start + batch_size])
                    batch = torch.as_tensor(rows, dtype=dtype, device=device)
                    _, _, u, v = self._velocity(model, batch)
                    pieces.append(torch.stack([u, v], 1).detach().to("cpu", torch.float64))
        finally:
            model.train(was_training)
        velocity = torch.cat(pieces).numpy()
        reference = self.reference(grid)
        metrics = relative_errors(velocity, reference, ("u", "v"))
        speed = np.linalg.norm(velocity, axis=1)
        reference_speed = np.linalg.norm(reference, axis=1)
        metrics["rel_l2"] = float(
            np.linalg.norm(speed - reference_speed) / np.linalg.norm(reference_speed)
        )
        return metrics


def _gradient(values: Tensor, inputs: Tensor) -> Tensor:
    """d values / d inputs per point (each row depends on its own input row only), graph kept."""
    (gradient,) = torch.autograd.grad(values.sum(), inputs, create_graph=True)
    return gradient
