"""2D diffusion-reaction (FitzHugh-Nagumo): cell-centred finite volumes, 5-point Laplacian with
zero-flux boundaries, scipy's RK45.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.integrate import solve_ivp

DIFFREACT_DOMAIN = (-1.0, 1.0)  # both x and y


def _neumann_laplacian_1d(n_cells: int, spacing: float) -> sparse.csr_matrix:
    main = np.full(n_cells, -2.0)
    main[[0, -1]] = -1.0  # zero flux through the outer faces
    off = np.ones(n_cells - 1)
    return sparse.diags([off, main, off], [-1, 0, 1], format="csr") / spacing**2


def neumann_laplacian_2d(nx: int, ny: int, dx: float, dy: float) -> sparse.csr_matrix:
    """5-point cell-centred Laplacian with zero-flux boundaries on a (ny, nx) grid.

    Acts on fields flattened in C order from shape (ny, nx) (x fastest), PDEBench's ordering.
    """
    if nx < 2 or ny < 2:
        raise ValueError(f"need at least 2 cells per direction, got nx={nx}, ny={ny}")
    laplacian_x = sparse.kron(sparse.identity(ny), _neumann_laplacian_1d(nx, dx))
    laplacian_y = sparse.kron(_neumann_laplacian_1d(ny, dy), sparse.identity(nx))
    return (laplacian_x + laplacian_y).tocsr()


def diffreact_initial_condition(nx: int, ny: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """u0, v0 i.i.d. standard normal of shape (ny, nx) from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    u0 = rng.standard_normal(ny * nx).reshape(ny, nx)
    v0 = rng.standard_normal(ny * nx).reshape(ny, nx)
    return u0, v0


def solve_diffreact(
    u0: np.ndarray,
    v0: np.ndarray,
    *,
    dx: float,
    dy: float,
    t_eval: np.ndarray,
    Du: float = 1e-3,
    Dv: float = 5e-3,
    k: float = 5e-3,
    reaction: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-6,
) -> np.ndarray:
    """Integrate u_t = Du lap u + u - u^3 - k - v, v_t = Dv lap v + u - v with RK45.

    ``u0``, ``v0`` have shape (ny, nx); ``reaction=False`` drops the reaction terms (pure
    diffusion). Default tolerances are scipy's, which PDEBench used. Returns the solution at
    ``t_eval`` (starting at t = 0) with shape (len(t_eval), ny, nx, 2), channels (u, v).
    """
    u0 = np.asarray(u0, dtype=np.float64)
    v0 = np.asarray(v0, dtype=np.float64)
    if u0.ndim != 2 or u0.shape != v0.shape:
        raise ValueError(f"u0 and v0 must share a 2D shape (ny, nx), got {u0.shape}, {v0.shape}")
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size == 0 or t_eval[0] < 0.0:
        raise ValueError("t_eval must be a non-empty 1D array of times >= 0")
    ny, nx = u0.shape
    n_cells = nx * ny
    laplacian = neumann_laplacian_2d(nx, ny, dx, dy)
    reaction_on = 1.0 if reaction else 0.0

    def time_derivative(_t: float, y: np.ndarray) -> np.ndarray:
        u, v = y[:n_cells], y[n_cells:]
        du = Du * (laplacian @ u) + reaction_on * (u - u**3 - k - v)
        dv = Dv * (laplacian @ v) + reaction_on * (u - v)
        return np.concatenate([du, dv])

    solution = solve_ivp(
        time_derivative,
        (0.0, float(t_eval[-1])),
        np.concatenate([u0.ravel(), v0.ravel()]),
        method="RK45",
        t_eval=t_eval,
        rtol=rtol,
        atol=atol,
    )
    if not solution.success:
        raise RuntimeError(f"diffusion-reaction integration failed: {solution.message}")
    states = solution.y.T  # (nt, 2 * n_cells)
    return np.stack(
        [states[:, :n_cells].reshape(-1, ny, nx), states[:, n_cells:].reshape(-1, ny, nx)],
        axis=-1,
    )
