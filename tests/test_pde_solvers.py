"""Numerical checks of the PDE data solvers in dcnn.pde.solvers."""

from __future__ import annotations

import numpy as np
import pytest

from dcnn.pde import solvers

SOD_LEFT = (1.0, 0.0, 1.0)
SOD_RIGHT = (0.125, 0.0, 0.1)


# ------------------------------------------------------------------ initial-condition family


def test_sine_sum_family_draws_two_of_the_candidate_modes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        profile = solvers.advection_initial_condition(rng)
        multiplicity = profile.wave_numbers / np.arange(1, 5)
        assert multiplicity.sum() == 2  # two draws with replacement among 4 modes
        assert np.all((0.0 <= profile.amplitudes) & (profile.amplitudes <= 1.0))
        assert np.all((0.0 <= profile.phases) & (profile.phases <= 2 * np.pi))
        if profile.window is not None:
            assert 0.1 <= profile.window[0] <= 0.45 and 0.55 <= profile.window[1] <= 0.9


def test_sine_sum_profile_without_window_is_periodic_on_its_domain():
    profile = solvers.SineSumProfile(
        wave_numbers=np.array([0.0, 2.0, 3.0]),
        amplitudes=np.array([0.3, 0.5, 0.7]),
        phases=np.array([0.1, 1.0, 2.0]),
        sign=-1.0,
        take_abs=True,
        window=None,
        domain=(-1.0, 1.0),
    )
    x = np.linspace(-1.0, 1.0, 17)
    np.testing.assert_allclose(profile(x + 2.0), profile(x), atol=1e-12)
    assert np.all(profile(x) <= 0.0)  # abs then negative sign


def test_cfd_initial_condition_has_pdebench_ranges():
    rng = np.random.default_rng(1)
    x = solvers.cell_centres(128, solvers.CFD_DOMAIN)
    for _ in range(20):
        density, velocity, pressure = solvers.cfd_initial_condition(x, rng)
        # b + m * [0, 1] with m, b in [1, 10] (density) and [10, 100] (pressure)
        assert 1.0 <= density.min() <= 10.0 and density.max() <= 20.0
        assert 10.0 <= pressure.min() <= 100.0 and pressure.max() <= 200.0
        assert np.ptp(density) > 0.99 and np.ptp(pressure) > 9.9
        assert np.abs(velocity).max() <= 3.0  # at most three amplitudes of at most 1


# ------------------------------------------------------------------------------ advection


def test_advection_solution_is_the_initial_profile_shifted():
    nx, beta = 256, 0.5
    x = solvers.cell_centres(nx, solvers.ADVECTION_DOMAIN)
    shifts = np.array([0, 1, 7, 100, 300])  # 300 cells: wraps around the periodic domain
    t = shifts / nx / beta  # beta * t is a whole number of cells
    rng = np.random.default_rng(2)
    for _ in range(5):
        profile = solvers.advection_initial_condition(rng)
        solution = solvers.advection_exact_solution(profile, x, t, beta)
        for row, shift in zip(solution, shifts, strict=True):
            np.testing.assert_allclose(row, np.roll(solution[0], shift), atol=1e-12)


def test_advection_solution_satisfies_the_pde():
    profile = solvers.SineSumProfile(
        wave_numbers=np.array([1.0, 3.0]),
        amplitudes=np.array([0.8, 0.4]),
        phases=np.array([0.3, 1.7]),
        sign=1.0,
        take_abs=False,
        window=None,
        domain=solvers.ADVECTION_DOMAIN,
    )
    beta, step = 0.7, 1e-5
    x = np.linspace(0.05, 0.95, 31)
    t = np.array([0.3 - step, 0.3, 0.3 + step])
    u = solvers.advection_exact_solution(profile, x, t, beta)
    u_t = (u[2] - u[0]) / (2 * step)
    u_x = (
        solvers.advection_exact_solution(profile, x + step, t[1:2], beta)[0]
        - solvers.advection_exact_solution(profile, x - step, t[1:2], beta)[0]
    ) / (2 * step)
    np.testing.assert_allclose(u_t + beta * u_x, 0.0, atol=1e-6)


# ----------------------------------------------------------------- compressible flow (CFD)


def _totals(density, velocity, pressure, dx, gamma):
    momentum = density * velocity
    energy = pressure / (gamma - 1.0) + 0.5 * momentum * velocity
    return (
        density.sum(axis=-1) * dx,
        momentum.sum(axis=-1) * dx,
        energy.sum(axis=-1) * dx,
        np.abs(momentum).sum(axis=-1) * dx,
    )


@pytest.mark.parametrize("viscosity", [0.0, 0.02])
def test_periodic_cfd_conserves_mass_momentum_energy(viscosity):
    nx = 64
    x = solvers.cell_centres(nx, solvers.CFD_DOMAIN)
    dx = 2.0 / nx
    density, velocity, pressure = solvers.cfd_initial_condition(x, np.random.default_rng(3))
    result = solvers.solve_compressible_1d(
        density,
        velocity,
        pressure,
        dx=dx,
        save_times=[0.0, 0.02, 0.05],
        eta=viscosity,
        zeta=viscosity,
    )
    assert not np.allclose(result[0][-1], result[0][0])  # the flow did evolve
    mass, momentum, energy, momentum_scale = _totals(*result, dx, solvers.CFD_GAMMA)
    np.testing.assert_allclose(mass, mass[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(energy, energy[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(momentum, momentum[0], rtol=0, atol=1e-12 * momentum_scale[0])


def test_batched_cfd_matches_single_samples_exactly():
    nx = 32
    x = solvers.cell_centres(nx, solvers.CFD_DOMAIN)
    rng = np.random.default_rng(4)
    states = [solvers.cfd_initial_condition(x, rng) for _ in range(3)]
    batch = [np.stack(field) for field in zip(*states, strict=True)]
    times = [0.0, 0.01, 0.03]
    batched = solvers.solve_compressible_1d(*batch, dx=2.0 / nx, save_times=times)
    for index, state in enumerate(states):
        single = solvers.solve_compressible_1d(*state, dx=2.0 / nx, save_times=times)
        for field_batched, field_single in zip(batched, single, strict=True):
            np.testing.assert_array_equal(field_batched[index], field_single)


def test_viscous_terms_match_the_navier_stokes_fluxes():
    # Uniform density and pressure, u = A sin(kx): the viscous parts of the time derivatives
    # are mu u_xx (momentum) and mu (u u_x)_x (energy), with mu = zeta + 4/3 eta.
    nx, amplitude, eta, zeta = 128, 0.1, 0.3, 0.2
    wavenumber = 2.0 * np.pi
    x = solvers.cell_centres(nx, (0.0, 1.0))
    ones = np.ones(nx)
    velocity = amplitude * np.sin(wavenumber * x)
    args = dict(dx=1.0 / nx, gamma=1.4)
    inviscid = solvers.compressible_rhs(ones, velocity, ones, **args)
    viscous = solvers.compressible_rhs(ones, velocity, ones, eta=eta, zeta=zeta, **args)
    difference = viscous - inviscid
    mu = zeta + 4.0 / 3.0 * eta
    expected_momentum = -mu * wavenumber**2 * velocity
    expected_energy = mu * amplitude**2 * wavenumber**2 * np.cos(2.0 * wavenumber * x)
    np.testing.assert_array_equal(difference[0], 0.0)
    np.testing.assert_allclose(
        difference[1], expected_momentum, atol=2e-3 * np.abs(expected_momentum).max()
    )
    np.testing.assert_allclose(
        difference[2], expected_energy, atol=2e-3 * np.abs(expected_energy).max()
    )


def test_compressible_solver_rejects_bad_input():
    ones = np.ones(8)
    with pytest.raises(ValueError, match="boundary"):
        solvers.solve_compressible_1d(ones, ones, ones, dx=0.1, save_times=[0.1], boundary="wall")
    with pytest.raises(FloatingPointError, match="non-positive density"):
        solvers.solve_compressible_1d(-ones, ones, ones, dx=0.1, save_times=[0.1])
    with pytest.raises(ValueError, match="save_times"):
        solvers.solve_compressible_1d(ones, ones, ones, dx=0.1, save_times=[0.2, 0.1])


# ------------------------------------------------------------------ exact Riemann solver


@pytest.mark.parametrize(
    ("left", "right", "pressure", "velocity"),
    [
        # Toro, Riemann Solvers and Numerical Methods for Fluid Dynamics, table 4.3 (gamma 1.4)
        (SOD_LEFT, SOD_RIGHT, 0.30313, 0.92745),
        ((1.0, -2.0, 0.4), (1.0, 2.0, 0.4), 0.00189, 0.0),
        ((1.0, 0.0, 1000.0), (1.0, 0.0, 0.01), 460.894, 19.5975),
        ((5.99924, 19.5975, 460.894), (5.99242, -6.19633, 46.0950), 1691.64, 8.68975),
    ],
)
def test_exact_riemann_star_states_match_toro(left, right, pressure, velocity):
    star = solvers.riemann_star_state(left, right, 1.4)
    assert star.pressure == pytest.approx(pressure, rel=2e-5, abs=1e-5)
    assert star.velocity == pytest.approx(velocity, rel=2e-5, abs=1e-5)


def test_exact_riemann_solution_satisfies_shock_jump_conditions():
    gamma = 1.4
    xi = np.linspace(-2.0, 2.0, 4001)
    density, velocity, pressure = solvers.exact_riemann_solution(SOD_LEFT, SOD_RIGHT, xi, gamma)
    star = solvers.riemann_star_state(SOD_LEFT, SOD_RIGHT, gamma)
    assert density[0] == 1.0 and density[-1] == 0.125
    # The right-moving shock: Rankine-Hugoniot mass balance across it.
    jump = np.flatnonzero(np.isclose(density, star.density_right))[-1]
    shock_speed = xi[jump]
    mass_flux_star = star.density_right * (star.velocity - shock_speed)
    assert mass_flux_star == pytest.approx(SOD_RIGHT[0] * (0.0 - shock_speed), rel=2e-3)
    # The rarefaction fan is continuous and isentropic: p / rho^gamma is constant in it.
    fan = (xi > -np.sqrt(gamma)) & (xi < -0.1)  # head -1.18, tail -0.07
    np.testing.assert_allclose(pressure[fan] / density[fan] ** gamma, 1.0, rtol=1e-10)
    assert np.all(np.diff(velocity[fan]) > 0)


def test_exact_riemann_solver_refuses_vacuum():
    with pytest.raises(ValueError, match="vacuum"):
        solvers.riemann_star_state((1.0, -20.0, 0.1), (1.0, 20.0, 0.1), 1.4)


# ------------------------------------------------------------------------ Sod shock tube


def _sod_density_l1_error(nx: int) -> float:
    gamma, t_final = 1.4, 0.2
    x = solvers.cell_centres(nx, (0.0, 1.0))
    left = x < 0.5
    density = np.where(left, SOD_LEFT[0], SOD_RIGHT[0])
    pressure = np.where(left, SOD_LEFT[2], SOD_RIGHT[2])
    numerical, _, _ = solvers.solve_compressible_1d(
        density,
        np.zeros(nx),
        pressure,
        dx=1.0 / nx,
        save_times=[t_final],
        gamma=gamma,
        boundary="transmissive",
    )
    exact, _, _ = solvers.exact_riemann_solution(SOD_LEFT, SOD_RIGHT, (x - 0.5) / t_final, gamma)
    return float(np.sum(np.abs(numerical[-1] - exact)) / nx)


def test_sod_shock_tube_matches_exact_solution_and_converges():
    errors = [_sod_density_l1_error(nx) for nx in (100, 200, 400)]
    # MUSCL-HLLC reaches about 2.5e-3 at 200 cells; discontinuities limit the rate below 1.
    assert errors[1] < 4e-3
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] / errors[2] > 2.5


# -------------------------------------------------------------------- diffusion-reaction


def test_neumann_laplacian_is_second_order_and_conservative():
    errors = []
    for n in (16, 32, 64):
        x = solvers.cell_centres(n, solvers.DIFFREACT_DOMAIN)
        y = solvers.cell_centres(n + 4, solvers.DIFFREACT_DOMAIN)
        laplacian = solvers.neumann_laplacian_2d(n, n + 4, 2.0 / n, 2.0 / (n + 4))
        # zero normal derivative at +-1, so the cell-centred mirror ghosts are exact
        field = np.cos(np.pi * y)[:, None] * np.cos(2 * np.pi * x)[None, :]
        exact = -5.0 * np.pi**2 * field
        errors.append(np.abs(laplacian @ field.ravel() - exact.ravel()).max())
        np.testing.assert_allclose(np.asarray(laplacian.sum(axis=1)).ravel(), 0.0, atol=1e-9 * n**2)
        np.testing.assert_allclose((laplacian - laplacian.T).toarray(), 0.0, atol=0)
    assert errors[0] / errors[1] > 3.5 and errors[1] / errors[2] > 3.5


def _cell_averages_of_cosine(n: int, frequency: float) -> np.ndarray:
    edges = np.linspace(-1.0, 1.0, n + 1)
    width = np.pi * frequency * 2.0 / n
    return (np.sin(np.pi * frequency * edges[1:]) - np.sin(np.pi * frequency * edges[:-1])) / width


def _restrict(field: np.ndarray, n_coarse: int) -> np.ndarray:
    factor = field.shape[0] // n_coarse
    return field.reshape(n_coarse, factor, n_coarse, factor, -1).mean(axis=(1, 3))


def test_diffreact_converges_under_grid_refinement():
    finals = {}
    for n in (8, 16, 32, 64):
        u0 = np.outer(_cell_averages_of_cosine(n, 1.0), _cell_averages_of_cosine(n, 1.0))
        v0 = 0.5 * np.outer(np.ones(n), _cell_averages_of_cosine(n, 2.0))
        solution = solvers.solve_diffreact(
            u0, v0, dx=2.0 / n, dy=2.0 / n, t_eval=[0.0, 0.5], Du=0.02, Dv=0.05,
            rtol=1e-9, atol=1e-11,
        )  # fmt: skip
        finals[n] = _restrict(solution[-1], 8)
    differences = [np.abs(finals[2 * n] - finals[n]).max() for n in (8, 16, 32)]
    # Second order: successive differences shrink by about 4.
    assert differences[0] / differences[1] > 3.0 and differences[1] / differences[2] > 3.0


def test_diffreact_zero_flux_keeps_total_without_reaction():
    nx, ny = 24, 20
    u0, v0 = solvers.diffreact_initial_condition(nx, ny, seed=5)
    solution = solvers.solve_diffreact(
        u0, v0, dx=2.0 / nx, dy=2.0 / ny, t_eval=np.linspace(0.0, 5.0, 6), reaction=False
    )
    totals = solution.sum(axis=(1, 2))  # (nt, 2)
    scale = np.abs(solution[0]).sum(axis=(0, 1))
    np.testing.assert_allclose(totals - totals[0], 0.0, rtol=0, atol=1e-12 * scale.max())
    assert solution[-1].std(axis=(0, 1))[0] < 0.9 * solution[0].std(axis=(0, 1))[0]  # diffused


def test_diffreact_initial_condition_uses_default_rng():
    u0, v0 = solvers.diffreact_initial_condition(5, 3, seed=11)
    draws = np.random.default_rng(11).standard_normal(30)
    np.testing.assert_array_equal(u0, draws[:15].reshape(3, 5))
    np.testing.assert_array_equal(v0, draws[15:].reshape(3, 5))


def test_diffreact_reaction_terms_drive_the_homogeneous_state():
    # Spatially uniform state: the Laplacian vanishes and the ODE u' = u - u^3 - k - v,
    # v' = u - v remains; compare with an independent scipy integration.
    from scipy.integrate import solve_ivp

    k = 5e-3
    u0, v0 = np.full((4, 4), 0.4), np.full((4, 4), -0.2)
    t_eval = np.linspace(0.0, 2.0, 5)
    solution = solvers.solve_diffreact(
        u0, v0, dx=0.5, dy=0.5, t_eval=t_eval, k=k, rtol=1e-10, atol=1e-12
    )
    reference = solve_ivp(
        lambda _t, y: [y[0] - y[0] ** 3 - k - y[1], y[0] - y[1]],
        (0.0, 2.0),
        [0.4, -0.2],
        t_eval=t_eval,
        rtol=1e-10,
        atol=1e-12,
    ).y.T
    np.testing.assert_allclose(solution[:, 2, 3, :], reference, atol=1e-8)
    np.testing.assert_allclose(
        solution, np.broadcast_to(solution[:, :1, :1, :], solution.shape), atol=1e-14
    )
