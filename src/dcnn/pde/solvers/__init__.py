"""Numerical solvers that generate PDEBench-style data (numpy/scipy only), one module per PDE.

Each problem comes with the initial-condition family PDEBench used (see
``shared/reference/pinn.md``): 1D advection (exact solution), 1D compressible Navier-Stokes
(HLLC finite volumes, validated against an exact Riemann solver) and 2D diffusion-reaction
(finite volumes and RK45); plus the steady 2D lid-driven cavity (stream-function/vorticity
finite differences, Newton's method), the reference solution of the PINN cavity problem.
"""

from dcnn.pde.solvers.advection import (
    ADVECTION_DOMAIN,
    advection_exact_solution,
    advection_initial_condition,
)
from dcnn.pde.solvers.cavity import (
    CAVITY_DOMAIN,
    CAVITY_MIN_NODES,
    CavityConvergenceError,
    CavitySolution,
    check_cavity_arguments,
    solve_cavity,
)
from dcnn.pde.solvers.compressible import (
    CFD_DOMAIN,
    CFD_GAMMA,
    RiemannStarState,
    cfd_initial_condition,
    compressible_rhs,
    exact_riemann_solution,
    riemann_star_state,
    solve_compressible_1d,
)
from dcnn.pde.solvers.diffreact import (
    DIFFREACT_DOMAIN,
    diffreact_initial_condition,
    neumann_laplacian_2d,
    solve_diffreact,
)
from dcnn.pde.solvers.sine_sums import SineSumProfile, cell_centres, random_sine_sum

__all__ = [
    "ADVECTION_DOMAIN",
    "CAVITY_DOMAIN",
    "CAVITY_MIN_NODES",
    "CFD_DOMAIN",
    "CFD_GAMMA",
    "DIFFREACT_DOMAIN",
    "CavityConvergenceError",
    "CavitySolution",
    "RiemannStarState",
    "SineSumProfile",
    "advection_exact_solution",
    "advection_initial_condition",
    "cell_centres",
    "cfd_initial_condition",
    "check_cavity_arguments",
    "compressible_rhs",
    "diffreact_initial_condition",
    "exact_riemann_solution",
    "neumann_laplacian_2d",
    "random_sine_sum",
    "riemann_star_state",
    "solve_cavity",
    "solve_compressible_1d",
    "solve_diffreact",
]
