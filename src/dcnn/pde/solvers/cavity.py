"""Steady 2D lid-driven cavity (incompressible Navier-Stokes), the reference for the PINN problem.

Unit square [0, 1]^2, lid y = 1 moving with velocity (1, 0), the other three walls at rest,
Reynolds number Re = U L / nu with U = L = 1.

Method: the classical second-order finite-difference stream-function/vorticity formulation on
a uniform grid of n x n nodes that includes the walls (spacing h = 1 / (n - 1)), the method
of Ghia, Ghia & Shin (1982) and of the reference solution in Wang, Teng & Perdikaris (2020):

- ``lap psi = -omega`` and ``Re (psi_y omega_x - psi_x omega_y) = lap omega`` at interior
  nodes, 3-point central differences;
- ``psi = 0`` on all walls and the wall vorticity from Thom's formula
  ``omega_wall = -2 psi_adjacent / h^2 - 2 U_wall / h`` (U_wall = 1 on the lid, 0 elsewhere).
  Thom's formula is locally first order, yet the solution converges at second order (Huang &
  Wetton 1996, E & Liu 1996), which the tests check by grid refinement. The four corner
  vorticities enter no interior stencil; they are set to 0 (singular at the lid corners);
- the coupled nonlinear system for (psi, omega) is solved by Newton's method with its exact
  sparse Jacobian, one sparse direct solve per step, started at rest (so the first step gives
  the Stokes flow). Newton converges quadratically: about five sparse LU solves instead of the
  thousands of sweeps of pseudo-time stepping. Above Re = 100 the solve continues in Re
  (100, 200, 400, ..., Re), each stage starting from the previous solution.

Velocities: u = psi_y, v = -psi_x by central differences at interior nodes and the exact wall
values on the walls (the whole top row, corners included, has u = 1). With this choice the
discrete divergence D_x u + D_y v vanishes to round-off at every interior node.

Pressure: the pressure Poisson equation ``lap p = div F`` with Neumann data ``dp/dn = F . n``,
where ``F = -(u . grad) u + lap u / Re`` is the rest of the momentum equation, so that
``div F = 2 (u_x v_y - u_y v_x) = 2 (psi_xx psi_yy - psi_xy^2)`` for a solenoidal u, and on the
walls, where the convective term vanishes, ``F = (-omega_y, omega_x) / Re``. It is discretised
in finite-volume form on the nodes (half cells on walls, quarter cells at corners) with F
(from second-order differences of u, v) averaged onto the cell faces; this is the least-squares
fit of a discrete gradient to F. Because the source is the discrete divergence of the same
face values that give the wall fluxes, the singular Neumann system is exactly compatible.
(Taking the source from psi and the wall flux from the vorticity instead leaves an O(1)
incompatibility at Re = 100, created by the singular lid corners.) Convention: **p has zero
mean over the square** (trapezoidal rule), imposed by bordering the system with a Lagrange
multiplier. Near the lid corners p is singular (about 1/r) and converges slowly; elsewhere
p converges at close to second order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

CAVITY_DOMAIN = (0.0, 1.0)  # both x and y
CAVITY_MIN_NODES = 5  # at least 3 x 3 interior nodes
_CONTINUATION_START = 100.0  # Newton from rest converges directly up to about this Re


class CavityConvergenceError(RuntimeError):
    """Newton's method did not reach the tolerance within its iteration budget."""


@dataclass(frozen=True, eq=False)
class CavitySolution:
    """Fields on the node grid: ``field[j, i]`` is the value at (x[i], y[j])."""

    x: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    u: np.ndarray  # (n, n), u = psi_y
    v: np.ndarray  # v = -psi_x
    p: np.ndarray  # zero mean over the square
    psi: np.ndarray
    omega: np.ndarray  # vorticity v_x - u_y (0 at the corners)
    re: float
    iterations: int  # Newton steps, all continuation stages together
    residual: float  # relative residual reached (see solve_cavity)


def check_cavity_arguments(re: float, n: int) -> None:
    """Raise ValueError unless ``re`` is a finite number > 0 and ``n`` an integer >= 5."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < CAVITY_MIN_NODES:
        raise ValueError(f"n must be an integer >= {CAVITY_MIN_NODES} (nodes per side), got {n!r}")
    if isinstance(re, bool) or not isinstance(re, (int, float, np.number)):
        raise ValueError(f"Re must be a finite number > 0, got {re!r}")
    if not math.isfinite(re) or re <= 0.0:
        raise ValueError(f"Re must be a finite number > 0, got {re!r}")


def _interior_1d(n: int) -> np.ndarray:
    inner = np.ones(n)
    inner[[0, -1]] = 0.0
    return inner


class _Grid:
    """Difference operators on the n x n nodes flattened in C order (x fastest).

    The operators' rows at wall nodes are empty; only interior rows are differences.
    """

    def __init__(self, n: int):
        self.n, self.h = n, 1.0 / (n - 1)
        h, inner = self.h, _interior_1d(n)
        first = sparse.diags([-inner[1:], inner[:-1]], [-1, 1]) / (2.0 * h)
        second = sparse.diags([inner[1:], -2.0 * inner, inner[:-1]], [-1, 0, 1]) / h**2
        identity = sparse.identity(n)
        self.dx = sparse.kron(identity, first, format="csr")
        self.dy = sparse.kron(first, identity, format="csr")
        self.lap = (sparse.kron(identity, second) + sparse.kron(second, identity)).tocsr()
        self.interior = np.outer(inner, inner).ravel()
        self.wall = 1.0 - self.interior
        # Thom: omega_wall = thom @ psi + thom_lid on the wall nodes other than the corners.
        j, i = np.divmod(np.arange(n * n), n)
        corner = ((i == 0) | (i == n - 1)) & ((j == 0) | (j == n - 1))
        rows, cols = [], []
        for side, inward in ((j == 0, n), (j == n - 1, -n), (i == 0, 1), (i == n - 1, -1)):
            nodes = np.flatnonzero(side & ~corner)
            rows.append(nodes)
            cols.append(nodes + inward)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        self.thom = sparse.csr_matrix(
            (np.full(rows.size, -2.0 / h**2), (rows, cols)), shape=(n * n, n * n)
        )
        self.thom_lid = np.where((j == n - 1) & ~corner, -2.0 / h, 0.0)

    def residual(self, psi: np.ndarray, omega: np.ndarray, re: float) -> np.ndarray:
        """Stacked residuals: Poisson and wall psi; transport and wall vorticity."""
        poisson = self.interior * (self.lap @ psi + omega) + self.wall * psi
        # Transport times Re: the viscous term keeps its size (round-off) at any Re.
        transport = self.interior * (
            re * ((self.dy @ psi) * (self.dx @ omega) - (self.dx @ psi) * (self.dy @ omega))
            - self.lap @ omega
        ) + self.wall * (omega - self.thom @ psi - self.thom_lid)
        return np.concatenate([poisson, transport])

    def jacobian(self, psi: np.ndarray, omega: np.ndarray, re: float) -> sparse.csc_matrix:
        interior, wall = sparse.diags(self.interior), sparse.diags(self.wall)
        # The convective term is bilinear in (psi, omega): differentiate each factor.
        d_transport_d_psi = (
            interior
            @ (sparse.diags(self.dx @ omega) @ self.dy - sparse.diags(self.dy @ omega) @ self.dx)
            * re
            - wall @ self.thom
        )
        d_transport_d_omega = (
            interior
            @ (
                re * (sparse.diags(self.dy @ psi) @ self.dx - sparse.diags(self.dx @ psi) @ self.dy)
                - self.lap
            )
            + wall
        )
        return sparse.bmat(
            [[interior @ self.lap + wall, interior], [d_transport_d_psi, d_transport_d_omega]],
            format="csc",
        )


def _newton(
    grid: _Grid, state: np.ndarray, re: float, tol: float, max_iterations: int
) -> tuple[np.ndarray, int, float]:
    size = grid.n * grid.n
    scale = 2.0 / grid.h  # the residual at rest: the lid's wall vorticity

    def relative_residual(state: np.ndarray) -> tuple[np.ndarray, float]:
        residual = grid.residual(state[:size], state[size:], re)
        return residual, float(np.abs(residual).max() / scale)

    residual, relative = relative_residual(state)
    for iteration in range(1, max_iterations + 1):
        state = state + spsolve(grid.jacobian(state[:size], state[size:], re), -residual)
        residual, relative = relative_residual(state)
        if relative <= tol:
            return state, iteration, relative
        if not math.isfinite(relative):
            break
    raise CavityConvergenceError(
        f"lid-driven cavity at Re={re:g}, n={grid.n}: Newton's method did not converge within "
        f"{max_iterations} iterations (relative residual reached {relative:.3e}, tolerance "
        f"{tol:.1e}); raise max_iterations, or refine the grid for a high Re"
    )


def _velocities(grid: _Grid, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = grid.n
    u = (grid.dy @ psi).reshape(n, n)  # wall rows are 0 (empty operator rows)
    v = -(grid.dx @ psi).reshape(n, n)
    u[-1, :] = 1.0  # the lid, corners included
    return u, v


def _pressure(u: np.ndarray, v: np.ndarray, re: float, h: float) -> np.ndarray:
    """Pressure from the momentum equation: lap p = div F, dp/dn = F . n, zero mean."""
    n = u.shape[0]

    def d(field: np.ndarray, axis: int) -> np.ndarray:  # second order, one-sided on walls
        return np.gradient(field, h, axis=axis, edge_order=2)

    u_x, u_y, v_x, v_y = d(u, 1), d(u, 0), d(v, 1), d(v, 0)
    force_x = -(u * u_x + v * u_y) + (d(u_x, 1) + d(u_y, 0)) / re
    force_y = -(u * v_x + v * v_y) + (d(v_x, 1) + d(v_y, 0)) / re

    # Finite volumes: face length h, halved for faces along a wall; F averaged onto faces.
    weight = np.ones(n)
    weight[[0, -1]] = 0.5
    flux_x = 0.5 * (force_x[:, 1:] + force_x[:, :-1]) * weight[:, None]  # faces (j, i+1/2)
    flux_y = 0.5 * (force_y[1:, :] + force_y[:-1, :]) * weight[None, :]  # faces (j+1/2, i)
    divergence = np.zeros((n, n))  # outward flux of F out of each cell, over h
    divergence[:, :-1] += flux_x
    divergence[:, 1:] -= flux_x
    divergence[:-1, :] += flux_y
    divergence[1:, :] -= flux_y

    # Neumann graph Laplacian per direction; the same face weights.
    neumann = sparse.diags([np.ones(n - 1), -2.0 * np.ones(n), np.ones(n - 1)], [-1, 0, 1])
    neumann = neumann.tolil()
    neumann[0, 0] = neumann[-1, -1] = -1.0
    diag_weight = sparse.diags(weight)
    stiffness = sparse.kron(diag_weight, neumann) + sparse.kron(neumann, diag_weight)

    # Bordered system: stiffness p / h + mu cell_areas = divergence, cell_areas . p = 0.
    # Its sum of rows is exactly 0 = mu sum(cell_areas), so mu = 0 up to round-off.
    cell_areas = sparse.csc_matrix(np.outer(weight, weight).reshape(-1, 1))
    system = sparse.bmat([[stiffness / h, cell_areas], [cell_areas.T, None]], format="csc")
    solution = spsolve(system, np.concatenate([divergence.ravel(), [0.0]]))
    return solution[:-1].reshape(n, n)


def solve_cavity(
    re: float = 100.0, n: int = 128, *, tol: float = 1e-10, max_iterations: int = 20
) -> CavitySolution:
    """Solve the steady lid-driven cavity at Reynolds number ``re`` on ``n`` x ``n`` nodes.

    Newton stops when the max-norm of the residual of the discrete equations, relative to its
    value at rest (the lid's wall vorticity 2/h), is at most ``tol``. ``max_iterations``
    bounds the Newton steps of each continuation stage; running out raises
    :class:`CavityConvergenceError` naming Re, n and the residual reached.
    """
    check_cavity_arguments(re, n)
    if not tol > 0.0 or int(max_iterations) < 1:
        raise ValueError(
            f"need tol > 0 and max_iterations >= 1, got tol={tol!r}, "
            f"max_iterations={max_iterations!r}"
        )
    re, n = float(re), int(n)
    grid = _Grid(n)
    stages = [re]
    while stages[0] > _CONTINUATION_START:
        stages.insert(0, max(stages[0] / 2.0, _CONTINUATION_START))
    state, iterations, residual = np.zeros(2 * n * n), 0, math.inf
    for stage_re in stages:
        state, used, residual = _newton(grid, state, stage_re, tol, int(max_iterations))
        iterations += used
    psi, omega = state[: n * n] * grid.interior, state[n * n :]  # psi = 0 on walls exactly
    u, v = _velocities(grid, psi)
    coordinates = np.linspace(*CAVITY_DOMAIN, n)
    return CavitySolution(
        x=coordinates,
        y=coordinates.copy(),
        u=u,
        v=v,
        p=_pressure(u, v, re, grid.h),
        psi=psi.reshape(n, n),
        omega=omega.reshape(n, n),
        re=re,
        iterations=iterations,
        residual=residual,
    )
