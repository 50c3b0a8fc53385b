"""1D compressible Navier-Stokes (ideal gas), and an exact Riemann solver to validate it.

Finite volumes with HLLC fluxes, MUSCL reconstruction of the primitive variables with the
monotonised-central (MC) limiter and SSP-RK3 time stepping; periodic or transmissive boundaries.
The viscous terms are included explicitly in flux form, so mass, momentum and energy stay
conserved to round-off on a periodic domain. The exact Riemann solver for ideal-gas shock tubes
follows Toro, "Riemann Solvers and Numerical Methods for Fluid Dynamics", ch. 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcnn.pde.solvers.sine_sums import random_sine_sum

CFD_GAMMA = 5.0 / 3.0
CFD_DOMAIN = (-1.0, 1.0)


def _rescale_to_random_range(
    values: np.ndarray, rng: np.random.Generator, bounds: tuple[float, float]
) -> np.ndarray:
    """PDEBench's renormalisation: map to [0, 1], then to b + m*[0, 1], m, b log-uniform."""
    shifted = values - values.min()
    span = shifted.max()
    if span <= 0.0:
        raise ValueError("cannot rescale a constant initial profile to a random range")
    log_low, log_high = np.log(bounds[0]), np.log(bounds[1])
    scale = np.exp(rng.uniform(log_low, log_high))
    offset = np.exp(rng.uniform(log_low, log_high))
    return shifted / span * scale + offset


def cfd_initial_condition(
    x: np.ndarray, rng: np.random.Generator, domain: tuple[float, float] = CFD_DOMAIN
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PDEBench's "1D_rand" state: (density, velocity, pressure) at the points ``x``.

    Each field is a sine sum of 2 of 3 modes (window with p=0.5); density is rescaled to
    b + m*[0, 1] with m, b log-uniform in [1, 10], pressure likewise in [10, 100], velocity is
    left as drawn. Drawn in PDEBench's order: density, pressure, velocity.
    """
    draw = dict(n_modes=3, window_probability=0.5)
    density = _rescale_to_random_range(random_sine_sum(rng, domain, **draw)(x), rng, (1.0, 10.0))
    pressure = _rescale_to_random_range(random_sine_sum(rng, domain, **draw)(x), rng, (10.0, 100.0))
    velocity = random_sine_sum(rng, domain, **draw)(x)
    return density, velocity, pressure


def _conserved(primitive: np.ndarray, gamma: float) -> np.ndarray:
    density, velocity, pressure = primitive
    momentum = density * velocity
    energy = pressure / (gamma - 1.0) + 0.5 * momentum * velocity
    return np.stack([density, momentum, energy])


def _primitive(conserved: np.ndarray, gamma: float) -> np.ndarray:
    density, momentum, energy = conserved
    velocity = momentum / density
    pressure = (gamma - 1.0) * (energy - 0.5 * momentum * velocity)
    return np.stack([density, velocity, pressure])


def _check_physical(primitive: np.ndarray, context: str) -> None:
    density, _, pressure = primitive
    if not np.all(np.isfinite(primitive)):
        raise FloatingPointError(f"compressible solver: non-finite state {context}")
    if density.min() <= 0.0 or pressure.min() <= 0.0:
        raise FloatingPointError(
            f"compressible solver: non-positive density ({density.min():.3e}) or pressure "
            f"({pressure.min():.3e}) {context}; reduce cfl or use a finer grid"
        )


def _mc_slopes(padded: np.ndarray) -> np.ndarray:
    """Monotonised-central limited slopes of cells 1..n-2 of the last axis."""
    backward = padded[..., 1:-1] - padded[..., :-2]
    forward = padded[..., 2:] - padded[..., 1:-1]
    magnitude = np.minimum(
        np.minimum(2.0 * np.abs(backward), 2.0 * np.abs(forward)),
        0.5 * np.abs(backward + forward),
    )
    return np.where(backward * forward > 0.0, np.sign(backward) * magnitude, 0.0)


def _hllc_flux(left: np.ndarray, right: np.ndarray, gamma: float) -> np.ndarray:
    """HLLC flux (Toro sec. 10.4) with Davis wave-speed estimates; states are primitive.

    Only the state on the upwind side of the contact is needed at each face, so it is picked
    first: F = F_K + s_K (U*_K - U_K) with s_K = min(S_L, 0) for K = L (contact moving right)
    and s_K = max(S_R, 0) for K = R, which also covers the supersonic cases.
    """
    rho_l, u_l, p_l = left
    rho_r, u_r, p_r = right
    c_l = np.sqrt(gamma * p_l / rho_l)
    c_r = np.sqrt(gamma * p_r / rho_r)
    s_l = np.minimum(u_l - c_l, u_r - c_r)
    s_r = np.maximum(u_l + c_l, u_r + c_r)
    # Mass fluxes through the outer waves; m_l < 0 < m_r, so the denominator never vanishes.
    m_l = rho_l * (s_l - u_l)
    m_r = rho_r * (s_r - u_r)
    s_star = (p_r - p_l + u_l * m_l - u_r * m_r) / (m_l - m_r)
    contact_moves_right = s_star >= 0.0
    rho = np.where(contact_moves_right, rho_l, rho_r)
    u = np.where(contact_moves_right, u_l, u_r)
    p = np.where(contact_moves_right, p_l, p_r)
    mass_flux = np.where(contact_moves_right, m_l, m_r)
    s = np.where(contact_moves_right, s_l, s_r)
    wave_speed = np.where(contact_moves_right, np.minimum(s_l, 0.0), np.maximum(s_r, 0.0))
    momentum = rho * u
    energy = p / (gamma - 1.0) + 0.5 * momentum * u
    star_factor = mass_flux / (s - s_star)
    star_energy = star_factor * (energy / rho + (s_star - u) * (s_star + p / mass_flux))
    return np.stack(
        [
            momentum + wave_speed * (star_factor - rho),
            momentum * u + p + wave_speed * (star_factor * s_star - momentum),
            (energy + p) * u + wave_speed * (star_energy - energy),
        ]
    )


_BOUNDARY_PAD_MODES = {"periodic": "wrap", "transmissive": "edge"}


def _check_boundary(boundary: str) -> str:
    if boundary not in _BOUNDARY_PAD_MODES:
        raise ValueError(f"boundary must be one of {sorted(_BOUNDARY_PAD_MODES)}, got {boundary!r}")
    return _BOUNDARY_PAD_MODES[boundary]


def _rhs_conserved(
    conserved: np.ndarray,
    *,
    dx: float,
    gamma: float,
    viscosity: float,
    pad_mode: str,
) -> np.ndarray:
    """dU/dt = -(F_{i+1/2} - F_{i-1/2}) / dx for conserved U of shape (3, batch, nx)."""
    primitive = _primitive(conserved, gamma)
    _check_physical(primitive, "during a time step")
    padded = np.pad(primitive, ((0, 0), (0, 0), (2, 2)), mode=pad_mode)
    slopes = _mc_slopes(padded)
    inner = padded[..., 1:-1]  # cells with a slope: the nx interior cells and one ghost a side
    left_edge = inner - 0.5 * slopes
    right_edge = inner + 0.5 * slopes
    # Fall back to first order in cells whose reconstruction would not be physical.
    unphysical = (np.minimum(left_edge[0], right_edge[0]) <= 0.0) | (
        np.minimum(left_edge[2], right_edge[2]) <= 0.0
    )
    left_edge = np.where(unphysical, inner, left_edge)
    right_edge = np.where(unphysical, inner, right_edge)
    flux = _hllc_flux(right_edge[..., :-1], left_edge[..., 1:], gamma)  # nx + 1 faces
    if viscosity > 0.0:
        velocity = padded[1, :, 1:-1]
        strain_rate = (velocity[:, 1:] - velocity[:, :-1]) / dx
        face_velocity = 0.5 * (velocity[:, 1:] + velocity[:, :-1])
        stress = viscosity * strain_rate
        flux = flux - np.stack([np.zeros_like(stress), stress, stress * face_velocity])
    return -(flux[..., 1:] - flux[..., :-1]) / dx


def compressible_rhs(
    density: np.ndarray,
    velocity: np.ndarray,
    pressure: np.ndarray,
    *,
    dx: float,
    gamma: float = CFD_GAMMA,
    eta: float = 0.0,
    zeta: float = 0.0,
    boundary: str = "periodic",
) -> np.ndarray:
    """Semi-discrete time derivative of (density, momentum, energy), shape (3, nx)."""
    primitive = np.stack([np.asarray(a, dtype=np.float64) for a in (density, velocity, pressure)])
    conserved = _conserved(primitive[:, None, :], gamma)
    rhs = _rhs_conserved(
        conserved,
        dx=dx,
        gamma=gamma,
        viscosity=zeta + 4.0 / 3.0 * eta,
        pad_mode=_check_boundary(boundary),
    )
    return rhs[:, 0, :]


def solve_compressible_1d(
    density: np.ndarray,
    velocity: np.ndarray,
    pressure: np.ndarray,
    *,
    dx: float,
    save_times: np.ndarray,
    gamma: float = CFD_GAMMA,
    eta: float = 0.0,
    zeta: float = 0.0,
    cfl: float = 0.3,
    boundary: str = "periodic",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate the 1D compressible Navier-Stokes equations from t = 0.

    rho_t + (rho u)_x = 0, (rho u)_t + (rho u^2 + p - mu u_x)_x = 0,
    E_t + ((E + p) u - mu u u_x)_x = 0 with mu = zeta + 4/3 eta (constant shear ``eta`` and
    bulk ``zeta`` viscosities) and E = p / (gamma - 1) + rho u^2 / 2.

    Inputs are cell averages of shape (nx,) or (batch, nx); a batch is integrated in one
    vectorised loop with a separate time step per sample, so every sample gets exactly the
    result it would get alone. Returns (density, velocity, pressure) at ``save_times``, each of
    shape (len(save_times), nx) or (batch, len(save_times), nx).
    """
    pad_mode = _check_boundary(boundary)
    save_times = np.asarray(save_times, dtype=np.float64)
    if save_times.ndim != 1 or save_times.size == 0:
        raise ValueError("save_times must be a non-empty 1D array")
    if save_times[0] < 0.0 or np.any(np.diff(save_times) < 0.0):
        raise ValueError("save_times must be non-negative and non-decreasing")
    if dx <= 0.0 or not 0.0 < cfl <= 1.0:
        raise ValueError(f"need dx > 0 and 0 < cfl <= 1, got dx={dx}, cfl={cfl}")
    primitive = np.stack([np.asarray(a, dtype=np.float64) for a in (density, velocity, pressure)])
    single = primitive.ndim == 2
    if single:
        primitive = primitive[:, None, :]
    if primitive.ndim != 3 or primitive.shape[-1] < 2:
        raise ValueError(f"fields must have shape (nx,) or (batch, nx), got {primitive.shape[1:]}")
    _check_physical(primitive, "in the initial condition")

    viscosity = zeta + 4.0 / 3.0 * eta

    def rhs(state: np.ndarray) -> np.ndarray:
        return _rhs_conserved(state, dx=dx, gamma=gamma, viscosity=viscosity, pad_mode=pad_mode)

    def stable_time_step(state: np.ndarray) -> np.ndarray:
        rho, u, p = _primitive(state, gamma)
        signal_speed = np.max(np.abs(u) + np.sqrt(gamma * p / rho), axis=-1)
        step = cfl * dx / signal_speed
        if viscosity > 0.0:
            step = np.minimum(step, cfl * dx**2 * rho.min(axis=-1) / viscosity)
        return step

    n_batch = primitive.shape[1]
    state = _conserved(primitive, gamma)
    time = np.zeros(n_batch)
    saved = np.empty((len(save_times), *primitive.shape))
    for save_index, target in enumerate(save_times):
        while np.any(time < target):
            active = time < target
            step = np.where(active, np.minimum(stable_time_step(state), target - time), 0.0)
            step_field = step[None, :, None]
            # SSP-RK3 (Shu & Osher).
            stage1 = state + step_field * rhs(state)
            stage2 = 0.75 * state + 0.25 * (stage1 + step_field * rhs(stage1))
            advanced = state / 3.0 + 2.0 / 3.0 * (stage2 + step_field * rhs(stage2))
            # Samples already at the target keep their state bit for bit.
            state = np.where(active[None, :, None], advanced, state)
            time = time + step
            # Snap to the target when the remaining gap is round-off.
            time = np.where(
                target - time <= 1e-12 * max(1.0, target), np.maximum(time, target), time
            )
        saved[save_index] = _primitive(state, gamma)
        _check_physical(saved[save_index], f"at t={target}")
    # saved: (n_save, 3, batch, nx) -> per field (batch, n_save, nx)
    fields = tuple(np.moveaxis(saved[:, field], 0, 1) for field in range(3))
    if single:
        fields = tuple(field[0] for field in fields)
    return fields


# --------------------------------------------------------------------------------------------
# Exact Riemann solver (ideal gas, any gamma)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiemannStarState:
    pressure: float
    velocity: float
    density_left: float
    density_right: float


def _pressure_function(p: float, rho: float, pk: float, ck: float, gamma: float):
    """Toro's f_K(p) and its derivative for one side."""
    if p > pk:  # shock
        a_k = 2.0 / ((gamma + 1.0) * rho)
        b_k = (gamma - 1.0) / (gamma + 1.0) * pk
        root = np.sqrt(a_k / (p + b_k))
        return (p - pk) * root, root * (1.0 - 0.5 * (p - pk) / (p + b_k))
    exponent = (gamma - 1.0) / (2.0 * gamma)  # rarefaction
    ratio = p / pk
    value = 2.0 * ck / (gamma - 1.0) * (ratio**exponent - 1.0)
    return value, ratio ** (-(gamma + 1.0) / (2.0 * gamma)) / (rho * ck)


def riemann_star_state(
    left: tuple[float, float, float],
    right: tuple[float, float, float],
    gamma: float,
    *,
    tolerance: float = 1e-14,
    max_iterations: int = 100,
) -> RiemannStarState:
    """Pressure, velocity and densities between the outer waves; states are (rho, u, p)."""
    rho_l, u_l, p_l = map(float, left)
    rho_r, u_r, p_r = map(float, right)
    if min(rho_l, p_l, rho_r, p_r) <= 0.0:
        raise ValueError(f"densities and pressures must be positive, got {left} and {right}")
    c_l = np.sqrt(gamma * p_l / rho_l)
    c_r = np.sqrt(gamma * p_r / rho_r)
    if 2.0 / (gamma - 1.0) * (c_l + c_r) <= u_r - u_l:
        raise ValueError("the initial states generate vacuum; the exact solver does not handle it")
    # Two-rarefaction guess: exact when both waves are rarefactions and always positive.
    exponent = (gamma - 1.0) / (2.0 * gamma)
    pressure = (
        (c_l + c_r - 0.5 * (gamma - 1.0) * (u_r - u_l))
        / (c_l / p_l**exponent + c_r / p_r**exponent)
    ) ** (1.0 / exponent)
    for _ in range(max_iterations):
        f_l, df_l = _pressure_function(pressure, rho_l, p_l, c_l, gamma)
        f_r, df_r = _pressure_function(pressure, rho_r, p_r, c_r, gamma)
        new_pressure = max(pressure - (f_l + f_r + u_r - u_l) / (df_l + df_r), 1e-14 * pressure)
        converged = abs(new_pressure - pressure) <= tolerance * (new_pressure + pressure)
        pressure = new_pressure
        if converged:
            break
    else:
        raise RuntimeError("exact Riemann solver: Newton iteration did not converge")
    f_l, _ = _pressure_function(pressure, rho_l, p_l, c_l, gamma)
    f_r, _ = _pressure_function(pressure, rho_r, p_r, c_r, gamma)
    velocity = 0.5 * (u_l + u_r) + 0.5 * (f_r - f_l)

    def star_density(rho: float, pk: float) -> float:
        ratio = pressure / pk
        if ratio > 1.0:
            g = (gamma - 1.0) / (gamma + 1.0)
            return rho * (ratio + g) / (g * ratio + 1.0)
        return rho * ratio ** (1.0 / gamma)

    return RiemannStarState(pressure, velocity, star_density(rho_l, p_l), star_density(rho_r, p_r))


def exact_riemann_solution(
    left: tuple[float, float, float],
    right: tuple[float, float, float],
    xi: np.ndarray,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho, u, p) of the exact Riemann solution at similarity coordinates xi = (x - x0) / t."""
    xi = np.asarray(xi, dtype=np.float64)
    rho_l, u_l, p_l = map(float, left)
    rho_r, u_r, p_r = map(float, right)
    star = riemann_star_state(left, right, gamma)
    g1 = (gamma - 1.0) / (gamma + 1.0)
    rho = np.empty_like(xi)
    u = np.empty_like(xi)
    p = np.empty_like(xi)

    def fill(mask, rho_value, u_value, p_value):
        rho[mask] = rho_value if np.isscalar(rho_value) else rho_value[mask]
        u[mask] = u_value if np.isscalar(u_value) else u_value[mask]
        p[mask] = p_value if np.isscalar(p_value) else p_value[mask]

    # Inside a rarefaction fan (Toro eq. 4.56 / 4.63), sign = +1 for the left fan, -1 right.
    def fan(rho_k, u_k, p_k, c_k, sign):
        base = 2.0 / (gamma + 1.0) + sign * g1 / c_k * (u_k - xi)
        base = np.maximum(base, 0.0)
        return (
            rho_k * base ** (2.0 / (gamma - 1.0)),
            2.0 / (gamma + 1.0) * (sign * c_k + 0.5 * (gamma - 1.0) * u_k + xi),
            p_k * base ** (2.0 * gamma / (gamma - 1.0)),
        )

    left_side = xi <= star.velocity
    c_l = np.sqrt(gamma * p_l / rho_l)
    c_r = np.sqrt(gamma * p_r / rho_r)
    if star.pressure > p_l:  # left shock
        speed = u_l - c_l * np.sqrt(
            (gamma + 1.0) / (2 * gamma) * star.pressure / p_l + 0.5 / gamma * (gamma - 1.0)
        )
        fill(left_side & (xi < speed), rho_l, u_l, p_l)
        fill(left_side & (xi >= speed), star.density_left, star.velocity, star.pressure)
    else:  # left rarefaction
        head = u_l - c_l
        tail = star.velocity - c_l * (star.pressure / p_l) ** ((gamma - 1.0) / (2.0 * gamma))
        fill(left_side & (xi < head), rho_l, u_l, p_l)
        fill(left_side & (xi >= head) & (xi <= tail), *fan(rho_l, u_l, p_l, c_l, 1.0))
        fill(left_side & (xi > tail), star.density_left, star.velocity, star.pressure)
    right_side = ~left_side
    if star.pressure > p_r:  # right shock
        speed = u_r + c_r * np.sqrt(
            (gamma + 1.0) / (2 * gamma) * star.pressure / p_r + 0.5 / gamma * (gamma - 1.0)
        )
        fill(right_side & (xi > speed), rho_r, u_r, p_r)
        fill(right_side & (xi <= speed), star.density_right, star.velocity, star.pressure)
    else:  # right rarefaction
        head = u_r + c_r
        tail = star.velocity + c_r * (star.pressure / p_r) ** ((gamma - 1.0) / (2.0 * gamma))
        fill(right_side & (xi > head), rho_r, u_r, p_r)
        fill(right_side & (xi <= head) & (xi >= tail), *fan(rho_r, u_r, p_r, c_r, -1.0))
        fill(right_side & (xi < tail), star.density_right, star.velocity, star.pressure)
    return rho, u, p
