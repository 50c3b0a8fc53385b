"""PDE residuals on exact, manufactured and perturbed states (float64, jets built by autograd)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.residuals import (
    advection_residual,
    diffusion_reaction_residuals,
    euler_1d_residuals,
)

GAMMA = 5.0 / 3.0


def gradient(output: Tensor, x: Tensor) -> Tensor:
    """d(sum of output)/dx, zero where output does not depend on x (constants in a test state)."""
    if not output.requires_grad:
        return torch.zeros_like(x)
    return torch.autograd.grad(output.sum(), x, create_graph=True, materialize_grads=True)[0]


def jet_of(function: Callable[[Tensor], Tensor], x: Tensor, second_order: Sequence[int] = ()):
    """Jet of an analytic function of the inputs, differentiated by reverse-mode autograd."""
    x = x.detach().clone().requires_grad_(True)
    value = function(x)
    channels = range(value.shape[1])
    d1 = torch.stack([gradient(value[:, c], x) for c in channels], dim=1)
    d2 = torch.zeros_like(d1)
    for c in channels:
        for k in second_order:
            d2[:, c, k] = gradient(d1[:, c, k], x)[:, k]
    return Jet(value.detach(), d1.detach(), d2.detach(), tuple(second_order))


def random_points(n: int, lows: Sequence[float], highs: Sequence[float], seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, len(lows), generator=generator, dtype=torch.float64)
    return torch.tensor(lows, dtype=torch.float64) + unit * (
        torch.tensor(highs, dtype=torch.float64) - torch.tensor(lows, dtype=torch.float64)
    )


def initial_profile(xi: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * xi) + 0.3 * torch.cos(6 * math.pi * xi)


def initial_profile_slope(xi: Tensor) -> Tensor:
    return 2 * math.pi * torch.cos(2 * math.pi * xi) - 1.8 * math.pi * torch.sin(6 * math.pi * xi)


# ----------------------------------------------------------------------------------- advection
@pytest.mark.parametrize("beta", [0.1, 0.4, 2.0])
def test_advection_residual_vanishes_on_exact_shift(beta):
    x = random_points(300, [0.0, 0.0], [1.0, 2.0])
    jet = jet_of(lambda p: initial_profile(p[:, 0] - beta * p[:, 1])[:, None], x)
    residual = advection_residual(jet, beta)
    assert residual.shape == (300,)
    assert residual.abs().max() < 1e-12


def test_advection_residual_equals_speed_error_on_wrong_speed():
    beta, wrong_speed = 0.4, 0.6
    x = random_points(300, [0.0, 0.0], [1.0, 2.0])
    jet = jet_of(lambda p: initial_profile(p[:, 0] - wrong_speed * p[:, 1])[:, None], x)
    xi = x[:, 0] - wrong_speed * x[:, 1]
    expected = (beta - wrong_speed) * initial_profile_slope(xi)
    torch.testing.assert_close(advection_residual(jet, beta), expected, rtol=1e-10, atol=1e-12)
    assert advection_residual(jet, beta).abs().max() > 0.5


def test_advection_rejects_jet_of_wrong_shape():
    x = random_points(10, [0.0, 0.0], [1.0, 1.0])
    two_channels = jet_of(lambda p: torch.stack([p[:, 0], p[:, 1]], dim=1), x)
    with pytest.raises(ValueError, match="advection expects a network with 2 inputs and 1 output"):
        advection_residual(two_channels, 0.1)


def along(jet: Jet, directions: Sequence[Sequence[float]]) -> Jet:
    """The jet's first derivatives projected onto directions (an axis jet turned directional)."""
    matrix = torch.tensor(directions, dtype=jet.d1.dtype)
    d1 = jet.d1 @ matrix.t()
    return Jet(jet.value, d1, torch.zeros_like(d1), (), matrix)


def test_advection_residual_from_a_jet_along_beta_one():
    beta, wrong_speed = 0.4, 0.6
    x = random_points(50, [0.0, 0.0], [1.0, 2.0])
    jet = jet_of(lambda p: initial_profile(p[:, 0] - wrong_speed * p[:, 1])[:, None], x)
    directional = along(jet, [[beta, 1.0]])
    torch.testing.assert_close(
        advection_residual(directional, beta), advection_residual(jet, beta), rtol=1e-12, atol=0
    )
    with pytest.raises(ValueError, match=r"along \(beta, 1\) = \(0.4, 1.0\), got .*0.6"):
        advection_residual(along(jet, [[wrong_speed, 1.0]]), beta)
    with pytest.raises(ValueError, match="directional jet must be along"):
        advection_residual(along(jet, [[1.0, 0.0], [0.0, 1.0]]), beta)


def test_euler_and_diffusion_reaction_need_axis_jets():
    x = random_points(5, [0.0, 0.0], [1.0, 1.0])
    euler_jet = along(jet_of(lambda p: torch.stack([p[:, 0]] * 3, dim=1), x), [[0.5, 1.0]])
    with pytest.raises(ValueError, match="1D Euler needs derivatives along the input coordinates"):
        euler_1d_residuals(euler_jet, GAMMA)
    x3 = random_points(5, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    diffusion_jet = along(jet_of(lambda p: p[:, :2] ** 2, x3), [[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="diffusion-reaction needs derivatives along the input"):
        diffusion_reaction_residuals(diffusion_jet, 1e-3, 5e-3, 5e-3)


# ---------------------------------------------------------------------------------- 1D Euler
def euler_state(density, velocity, pressure) -> Callable[[Tensor], Tensor]:
    """Network stand-in with outputs (density, Vx, pressure), each a function of (x, t)."""
    return lambda p: torch.stack(
        [density(p[:, 0], p[:, 1]), velocity(p[:, 0], p[:, 1]), pressure(p[:, 0], p[:, 1])], dim=1
    )


def ones_like_x(x, t):
    return torch.ones_like(x)


@pytest.mark.parametrize("speed", [0.0, 0.7, -1.3])
def test_euler_residuals_vanish_on_advected_density_wave(speed):
    # Constant velocity and pressure carry any density profile along exactly.
    state = euler_state(
        lambda x, t: 1.0 + 0.2 * torch.sin(math.pi * (x - speed * t)),
        lambda x, t: torch.full_like(x, speed),
        lambda x, t: torch.full_like(x, 2.0),
    )
    jet = jet_of(state, random_points(300, [-1.0, 0.0], [1.0, 1.0]))
    for residual in euler_1d_residuals(jet, GAMMA):
        assert residual.shape == (300,)
        assert residual.abs().max() < 1e-12


def test_euler_residuals_are_nonzero_when_pressure_is_perturbed():
    state = euler_state(
        lambda x, t: 1.0 + 0.2 * torch.sin(math.pi * (x - 0.7 * t)),
        lambda x, t: torch.full_like(x, 0.7),
        lambda x, t: 2.0 + 0.1 * torch.sin(math.pi * x),
    )
    x = random_points(300, [-1.0, 0.0], [1.0, 1.0])
    mass, momentum, energy = euler_1d_residuals(jet_of(state, x), GAMMA)
    assert mass.abs().max() < 1e-12  # density still advected exactly
    torch.testing.assert_close(momentum, 0.1 * math.pi * torch.cos(math.pi * x[:, 0]))
    assert energy.abs().max() > 0.1


def test_euler_momentum_pressure_gradient_enters_with_plus_sign():
    # Fluid at rest with a pressure gradient: only p_x survives, in momentum only.
    state = euler_state(ones_like_x, lambda x, t: torch.zeros_like(x), lambda x, t: 1.0 + 0.1 * x)
    mass, momentum, energy = euler_1d_residuals(
        jet_of(state, random_points(50, [-1.0, 0.0], [1.0, 1.0])), GAMMA
    )
    torch.testing.assert_close(mass, torch.zeros(50, dtype=torch.float64))
    torch.testing.assert_close(momentum, torch.full((50,), 0.1, dtype=torch.float64))
    torch.testing.assert_close(energy, torch.zeros(50, dtype=torch.float64))


@pytest.mark.parametrize("gamma", [1.4, GAMMA])
def test_euler_energy_flux_of_pressure_gradient_in_uniform_flow(gamma):
    # d/dx((E + p) v) with v const and rho const is gamma / (gamma - 1) * p_x * v.
    speed = 0.5
    state = euler_state(
        ones_like_x, lambda x, t: torch.full_like(x, speed), lambda x, t: 1.0 + 0.1 * x
    )
    mass, momentum, energy = euler_1d_residuals(
        jet_of(state, random_points(50, [-1.0, 0.0], [1.0, 1.0])), gamma
    )
    torch.testing.assert_close(mass, torch.zeros(50, dtype=torch.float64))
    torch.testing.assert_close(momentum, torch.full((50,), 0.1, dtype=torch.float64))
    expected_energy = gamma / (gamma - 1.0) * 0.1 * speed
    torch.testing.assert_close(energy, torch.full((50,), expected_energy, dtype=torch.float64))


def test_euler_residuals_of_velocity_gradient():
    # rho = 1, p = 1, v = a x: mass rho v_x, momentum (rho v^2)_x, energy ((E + p) v)_x.
    slope = 0.5
    state = euler_state(ones_like_x, lambda x, t: slope * x, lambda x, t: torch.ones_like(x))
    x = random_points(50, [-1.0, 0.0], [1.0, 1.0])
    mass, momentum, energy = euler_1d_residuals(jet_of(state, x), GAMMA)
    velocity = slope * x[:, 0]
    torch.testing.assert_close(mass, torch.full((50,), slope, dtype=torch.float64))
    torch.testing.assert_close(momentum, 2 * velocity * slope)
    expected_energy = (GAMMA / (GAMMA - 1) + 1.5 * velocity**2) * slope
    torch.testing.assert_close(energy, expected_energy)


def test_euler_time_derivatives_of_conserved_quantities():
    # Spatially uniform state changing in time: residuals are d/dt of (rho, rho v, E).
    state = euler_state(
        lambda x, t: 1.0 + t, lambda x, t: 2.0 * t, lambda x, t: 3.0 + torch.zeros_like(x)
    )
    x = random_points(40, [-1.0, 0.0], [1.0, 1.0])
    mass, momentum, energy = euler_1d_residuals(jet_of(state, x), GAMMA)
    t = x[:, 1]
    torch.testing.assert_close(mass, torch.ones(40, dtype=torch.float64))
    torch.testing.assert_close(momentum, 2.0 * t + 2.0 * (1.0 + t))  # d/dt (2t + 2t^2)
    kinetic_rate = 0.5 * (2.0 * t) ** 2 + (1.0 + t) * 2.0 * t * 2.0  # d/dt (rho v^2 / 2)
    torch.testing.assert_close(energy, kinetic_rate)


def test_euler_residuals_are_pointwise():
    generator = torch.Generator().manual_seed(1)
    n_points = 40
    value = torch.rand(n_points, 3, generator=generator, dtype=torch.float64) + 0.5
    d1 = torch.randn(n_points, 3, 2, generator=generator, dtype=torch.float64)
    jet = Jet(value, d1, torch.zeros_like(d1), ())
    before = euler_1d_residuals(jet, GAMMA)

    changed_value, changed_d1 = value.clone(), d1.clone()
    changed_value[7] += 0.3
    changed_d1[7] -= 0.2
    after = euler_1d_residuals(Jet(changed_value, changed_d1, torch.zeros_like(d1), ()), GAMMA)
    others = torch.arange(n_points) != 7
    for old, new in zip(before, after, strict=True):
        assert old.shape == (n_points,)
        torch.testing.assert_close(new[others], old[others], rtol=0, atol=0)
        assert (new[7] - old[7]).abs() > 1e-3


def test_euler_rejects_bad_gamma_and_shape():
    x = random_points(10, [-1.0, 0.0], [1.0, 1.0])
    jet = jet_of(euler_state(ones_like_x, ones_like_x, ones_like_x), x)
    with pytest.raises(ValueError, match="gamma must be > 1"):
        euler_1d_residuals(jet, 1.0)
    with pytest.raises(ValueError, match="1D Euler expects a network with 2 inputs and 3 outputs"):
        euler_1d_residuals(jet_of(lambda p: p[:, :1], x), GAMMA)


# ------------------------------------------------------------------------ diffusion-reaction
DU, DV, K = 1e-3, 5e-3, 5e-3


def manufactured_fields(p: Tensor) -> Tensor:
    x, y, t = p[:, 0], p[:, 1], p[:, 2]
    u = torch.exp(-t) * torch.cos(math.pi * x) * torch.cos(math.pi * y)
    v = torch.exp(-2 * t) * torch.sin(math.pi * x) * torch.cos(2 * math.pi * y)
    return torch.stack([u, v], dim=1)


@pytest.mark.parametrize(("du", "dv", "k"), [(DU, DV, K), (0.3, 0.05, -0.2)])
def test_diffusion_reaction_residuals_match_manufactured_values(du, dv, k):
    x = random_points(300, [-1.0, -1.0, 0.0], [1.0, 1.0, 5.0])
    residual_u, residual_v = diffusion_reaction_residuals(
        jet_of(manufactured_fields, x, second_order=(0, 1)), du, dv, k
    )
    u, v = manufactured_fields(x).unbind(dim=1)
    # u_t = -u, lap u = -2 pi^2 u; v_t = -2 v, lap v = -5 pi^2 v.
    expected_u = -u + du * 2 * math.pi**2 * u - (u - u**3 - k - v)
    expected_v = -2 * v + dv * 5 * math.pi**2 * v - (u - v)
    torch.testing.assert_close(residual_u, expected_u, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(residual_v, expected_v, rtol=1e-10, atol=1e-12)


def test_diffusion_reaction_residuals_vanish_on_steady_state():
    # u = v = -k^(1/3) makes both reaction terms zero and nothing varies in space or time.
    k = 0.125
    x = random_points(50, [-1.0, -1.0, 0.0], [1.0, 1.0, 5.0])
    steady = -(k ** (1.0 / 3.0))
    jet = jet_of(lambda p: torch.full_like(p[:, :2], steady), x, second_order=(0, 1))
    residual_u, residual_v = diffusion_reaction_residuals(jet, DU, DV, k)
    assert residual_u.abs().max() < 1e-12 and residual_v.abs().max() < 1e-12
    perturbed_u, _ = diffusion_reaction_residuals(jet, DU, DV, k + 0.01)
    torch.testing.assert_close(perturbed_u, torch.full((50,), 0.01, dtype=torch.float64))


def test_diffusion_reaction_needs_second_derivatives_in_space():
    x = random_points(10, [-1.0, -1.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="second derivative along input coordinate"):
        diffusion_reaction_residuals(jet_of(manufactured_fields, x, second_order=(0,)), DU, DV, K)
    with pytest.raises(ValueError, match="3 inputs and 2 outputs"):
        diffusion_reaction_residuals(jet_of(lambda p: p[:, :2], x[:, :2]), DU, DV, K)
