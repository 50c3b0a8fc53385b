"""Pointwise PDE residuals computed from a network's input jet: the three PDEBench problems and
the operators of Wang, Teng & Perdikaris' Helmholtz and Klein-Gordon problems.

Input coordinate order of the PDEBench problems: 1D problems x = (x, t); 2D problems
x = (x, y, t). The Helmholtz operator takes (x, y), the Klein-Gordon operator (t, x).
Every residual is evaluated point by point from that point's own value and derivatives, so the
residual at one point never depends on another point (PDEBench's CFD residual broadcast to an
N x N tensor and mixed all points).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet

# Input coordinate indices (PDEBench order).
X_1D, T_1D = 0, 1
X_2D, Y_2D, T_2D = 0, 1, 2

# Output channel indices.
DENSITY, VELOCITY, PRESSURE = 0, 1, 2
U, V = 0, 1


def _check_jet(jet: Jet, n_outputs: int, n_inputs: int, equation: str) -> None:
    n_points, channels, directions = jet.d1.shape
    if jet.value.shape != (n_points, channels):
        raise ValueError(
            f"{equation}: jet.value has shape {tuple(jet.value.shape)} but jet.d1 has shape "
            f"{tuple(jet.d1.shape)}; expected value (N, C) and d1 (N, C, K)"
        )
    coordinates = directions if jet.directions is None else jet.directions.shape[1]
    if (channels, coordinates) != (n_outputs, n_inputs):
        raise ValueError(
            f"{equation} expects a network with {n_inputs} inputs and {n_outputs} outputs, "
            f"got a jet with {coordinates} input coordinates and {channels} output channels"
        )


def _check_axes(jet: Jet, equation: str) -> None:
    if jet.directions is not None:
        raise ValueError(
            f"{equation} needs derivatives along the input coordinates, got a jet along "
            f"directions {jet.directions.tolist()}"
        )


def advection_residual(jet: Jet, beta: float) -> Tensor:
    """Linear advection u_t + beta u_x at every point, shape (N,). Inputs (x, t), output (u,).

    From a jet along the input coordinates, or from a jet along the single direction (beta, 1),
    whose first derivative is the residual itself (forward mode then carries one tangent).
    """
    _check_jet(jet, n_outputs=1, n_inputs=2, equation="advection")
    if jet.directions is None:
        return jet.first(U, T_1D) + beta * jet.first(U, X_1D)
    along = torch.tensor([[beta, 1.0]], dtype=jet.directions.dtype, device=jet.directions.device)
    if jet.directions.shape != (1, 2) or not torch.allclose(jet.directions, along):
        raise ValueError(
            f"advection: a directional jet must be along (beta, 1) = ({beta}, 1.0), got "
            f"directions {jet.directions.tolist()}"
        )
    return jet.first(U, 0)


def euler_1d_residuals(jet: Jet, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mass, momentum and energy residuals of the 1D compressible Euler equations, each (N,).

    Inputs (x, t), outputs (density rho, velocity v, pressure p). Conservation form
        rho_t + (rho v)_x = 0
        (rho v)_t + (rho v^2 + p)_x = 0
        E_t + ((E + p) v)_x = 0,   E = p / (gamma - 1) + rho v^2 / 2,
    with every time and space derivative of a product expanded by the chain rule.
    """
    _check_jet(jet, n_outputs=3, n_inputs=2, equation="1D Euler")
    _check_axes(jet, "1D Euler")
    if gamma <= 1.0:
        raise ValueError(f"1D Euler: adiabatic index gamma must be > 1, got {gamma}")
    rho, v, p = jet.value[:, DENSITY], jet.value[:, VELOCITY], jet.value[:, PRESSURE]
    rho_t, rho_x = jet.first(DENSITY, T_1D), jet.first(DENSITY, X_1D)
    v_t, v_x = jet.first(VELOCITY, T_1D), jet.first(VELOCITY, X_1D)
    p_t, p_x = jet.first(PRESSURE, T_1D), jet.first(PRESSURE, X_1D)

    mass = rho_t + rho_x * v + rho * v_x

    momentum_t = rho_t * v + rho * v_t
    momentum_flux_x = rho_x * v * v + 2.0 * rho * v * v_x + p_x
    momentum = momentum_t + momentum_flux_x

    energy_density = p / (gamma - 1.0) + 0.5 * rho * v * v
    energy_t = p_t / (gamma - 1.0) + 0.5 * rho_t * v * v + rho * v * v_t
    energy_x = p_x / (gamma - 1.0) + 0.5 * rho_x * v * v + rho * v * v_x
    energy_flux_x = (energy_x + p_x) * v + (energy_density + p) * v_x
    energy = energy_t + energy_flux_x
    return mass, momentum, energy


def diffusion_reaction_residuals(jet: Jet, Du: float, Dv: float, k: float) -> tuple[Tensor, Tensor]:
    """Residuals of PDEBench's 2D FitzHugh-Nagumo diffusion-reaction system, each (N,).

    Inputs (x, y, t), outputs (u, v); the jet needs second derivatives along x and y:
        u_t - Du (u_xx + u_yy) - (u - u^3 - k - v)
        v_t - Dv (v_xx + v_yy) - (u - v)
    """
    _check_jet(jet, n_outputs=2, n_inputs=3, equation="diffusion-reaction")
    _check_axes(jet, "diffusion-reaction")
    u, v = jet.value[:, U], jet.value[:, V]
    laplacian_u = jet.second(U, X_2D) + jet.second(U, Y_2D)
    laplacian_v = jet.second(V, X_2D) + jet.second(V, Y_2D)
    residual_u = jet.first(U, T_2D) - Du * laplacian_u - (u - u**3 - k - v)
    residual_v = jet.first(V, T_2D) - Dv * laplacian_v - (u - v)
    return residual_u, residual_v


def helmholtz_operator(jet: Jet, lam: float) -> Tensor:
    """lap u + lam u at every point, shape (N,): inputs (x, y), output (u,).

    The jet's first two directions must be the physical x and y axes (coordinate axes, or the
    axes of standardised inputs scaled by 1 / std), with second derivatives along both.
    """
    _check_jet(jet, n_outputs=1, n_inputs=2, equation="Helmholtz")
    return jet.second(U, 0) + jet.second(U, 1) + lam * jet.value[:, U]


def klein_gordon_operator(jet: Jet, alpha: float, beta: float, gamma: float, k: int) -> Tensor:
    """u_tt + alpha u_xx + beta u + gamma u^k at every point, shape (N,): inputs (t, x), as
    Wang, Teng & Perdikaris order them; second derivatives along both physical axes."""
    _check_jet(jet, n_outputs=1, n_inputs=2, equation="Klein-Gordon")
    u = jet.value[:, U]
    return jet.second(U, 0) + alpha * jet.second(U, 1) + beta * u + gamma * u**k
