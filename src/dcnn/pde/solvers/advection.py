"""1D advection u_t + beta u_x = 0, periodic: PDEBench's initial family and the exact solution."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dcnn.pde.solvers.sine_sums import SineSumProfile, random_sine_sum

ADVECTION_DOMAIN = (0.0, 1.0)


def advection_initial_condition(rng: np.random.Generator) -> SineSumProfile:
    """PDEBench advection family: 2 of 4 modes, abs with p=0.1, window with p=0.1, on [0, 1]."""
    return random_sine_sum(rng, ADVECTION_DOMAIN, n_modes=4, window_probability=0.1)


def advection_exact_solution(
    profile: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    t: np.ndarray,
    beta: float,
    domain: tuple[float, float] = ADVECTION_DOMAIN,
) -> np.ndarray:
    """``u(t, x) = u0((x - beta t) mod L)`` on a periodic domain, shape (len(t), len(x))."""
    left, right = domain
    departure = np.asarray(x, dtype=np.float64)[None, :] - beta * np.asarray(t)[:, None]
    return profile(left + np.mod(departure - left, right - left))
