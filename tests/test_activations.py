"""Integrated activations: F(0) = 0, F' = base activation, F'' = base derivative, F = integral."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import quad
from scipy.special import expit, ndtr, spence
from torch import nn
from torch_geometric.nn.models.schnet import ShiftedSoftplus

from dcnn.activations import (
    ACTIVATION_FUNCTIONS,
    ACTIVATION_MODULE_TYPES,
    INTEGRATED_ACTIVATIONS,
    IntegratedELU,
    IntegratedGELU,
    IntegratedLeakyReLU,
    IntegratedSiLU,
    IntegratedSoftplus,
    IReLU,
)


def _standard_normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@dataclass
class Case:
    """An integrated activation with independent references for its base activation."""

    name: str
    make: Callable[[], nn.Module]
    base: Callable[[torch.Tensor], torch.Tensor]  # torch reference for F'
    base_derivative: Callable[[torch.Tensor], torch.Tensor]  # torch reference for F''
    base_scalar: Callable[[float], float]  # numpy reference for scipy quad


SLOPE, ALPHA, BETA = 0.2, 1.3, 2.5

CASES = [
    Case(
        "irelu",
        IReLU,
        torch.relu,
        lambda x: (x > 0).to(x.dtype),
        lambda y: max(y, 0.0),
    ),
    Case(
        "leaky_relu",
        lambda: IntegratedLeakyReLU(SLOPE),
        lambda x: F.leaky_relu(x, SLOPE),
        lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, SLOPE)),
        lambda y: y if y > 0 else SLOPE * y,
    ),
    Case(
        "elu",
        lambda: IntegratedELU(ALPHA),
        lambda x: F.elu(x, ALPHA),
        lambda x: torch.where(x > 0, torch.ones_like(x), ALPHA * torch.exp(x)),
        lambda y: y if y > 0 else ALPHA * math.expm1(y),
    ),
    Case(
        "softplus",
        IntegratedSoftplus,
        lambda x: torch.logaddexp(x, torch.zeros_like(x)),
        torch.sigmoid,
        lambda y: float(np.logaddexp(0.0, y)),
    ),
    Case(
        "softplus_beta",
        lambda: IntegratedSoftplus(BETA),
        lambda x: torch.logaddexp(BETA * x, torch.zeros_like(x)) / BETA,
        lambda x: torch.sigmoid(BETA * x),
        lambda y: float(np.logaddexp(0.0, BETA * y)) / BETA,
    ),
    Case(
        "silu",
        IntegratedSiLU,
        lambda x: x * torch.sigmoid(x),
        lambda x: torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x))),
        lambda y: y * float(expit(y)),
    ),
    Case(
        "gelu",
        IntegratedGELU,
        lambda x: x * torch.special.ndtr(x),
        lambda x: torch.special.ndtr(x) + x * _standard_normal_pdf(x),
        lambda y: y * float(ndtr(y)),
    ),
]
CASE_IDS = [case.name for case in CASES]

# Dense grid including large |x| and points right around the kink/origin.
GRID = torch.cat(
    [
        torch.linspace(-30.0, 30.0, 1201, dtype=torch.float64),
        torch.tensor([-1e-9, -1e-300, 0.0, 1e-300, 1e-9, -1e-3, 1e-3], dtype=torch.float64),
    ]
)
QUAD_POINTS = [-30.0, -7.5, -2.0, -0.3, 0.05, 0.9, 3.0, 12.0, 30.0]


def _first_and_second_derivative(
    module: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    return first.detach(), second


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_at_zero_is_exactly_zero(case: Case, dtype: torch.dtype) -> None:
    assert case.make()(torch.zeros(3, dtype=dtype)).abs().max().item() == 0.0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_first_derivative_is_base_activation(case: Case) -> None:
    first, _ = _first_and_second_derivative(case.make(), GRID)
    torch.testing.assert_close(first, case.base(GRID), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_second_derivative_is_base_derivative(case: Case) -> None:
    # Away from the kink at 0, where the one-sided limits of relu-type derivatives differ.
    points = GRID[GRID.abs() > 1e-6]
    _, second = _first_and_second_derivative(case.make(), points)
    torch.testing.assert_close(second, case.base_derivative(points), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_value_is_integral_of_base_activation(case: Case) -> None:
    module = case.make()
    for point in QUAD_POINTS:
        expected, _ = quad(case.base_scalar, 0.0, point, epsabs=1e-14, epsrel=1e-13)
        value = module(torch.tensor(point, dtype=torch.float64)).item()
        assert value == pytest.approx(expected, rel=1e-11, abs=1e-13), (case.name, point)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_base_activation_module_matches_reference(case: Case) -> None:
    torch.testing.assert_close(case.make().base_activation()(GRID), case.base(GRID))


def test_irelu_second_derivative_is_unit_step_including_zero() -> None:
    x = torch.tensor([-2.0, -1e-12, 0.0, 1e-12, 3.0], dtype=torch.float64)
    first, second = _first_and_second_derivative(IReLU(), x)
    assert first.tolist() == [0.0, 0.0, 0.0, 1e-12, 3.0]
    assert second.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    # Third derivative vanishes.
    x.requires_grad_(True)
    (first,) = torch.autograd.grad(IReLU()(x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x, create_graph=True)
    third = torch.autograd.grad(second.sum(), x, allow_unused=True)[0]
    assert third is None or torch.count_nonzero(third) == 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradcheck_and_gradgradcheck_away_from_kinks(case: Case) -> None:
    generator = torch.Generator().manual_seed(0)
    x = 4 * torch.randn(24, generator=generator, dtype=torch.float64)
    x = torch.where(x.abs() < 0.1, x + 0.5, x).requires_grad_(True)
    module = case.make()
    assert torch.autograd.gradcheck(module, (x,))
    assert torch.autograd.gradgradcheck(module, (x,))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_is_finite_for_large_inputs_and_matches_float64(case: Case) -> None:
    module = case.make()
    large = torch.tensor([-1e4, -300.0, -30.0, 30.0, 300.0, 1e4], requires_grad=True)
    first, second = _first_and_second_derivative(module, large)
    assert torch.isfinite(module(large)).all()
    assert torch.isfinite(first).all() and torch.isfinite(second).all()
    moderate = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64)
    torch.testing.assert_close(
        module(moderate.float()).double(), module(moderate), rtol=1e-5, atol=1e-6
    )


def test_integrated_softplus_matches_dilogarithm_closed_form() -> None:
    # integral_0^x softplus = -Li2(-e^x) - pi^2/12 with Li2(-w) = spence(1 + w) in scipy.
    x = torch.linspace(-40.0, 40.0, 4001, dtype=torch.float64)
    numpy_x = x.numpy()
    expected = -spence(1 + np.exp(numpy_x)) - math.pi**2 / 12
    # For large x the argument overflows spence's accurate range; use the inversion identity.
    large = numpy_x > 0
    tail = spence(1 + np.exp(-numpy_x[large])) + math.pi**2 / 12
    expected[large] = 0.5 * numpy_x[large] ** 2 + tail
    np.testing.assert_allclose(IntegratedSoftplus()(x).numpy(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("make", [IntegratedSoftplus, IntegratedSiLU, IntegratedGELU])
def test_analytic_backward_supports_torch_func(make: Callable[[], nn.Module]) -> None:
    module = make()
    x = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    second = torch.func.vmap(torch.func.grad(torch.func.grad(module)))(x)
    _, expected = _first_and_second_derivative(module, x)
    torch.testing.assert_close(second, expected)


def test_invalid_softplus_beta_is_rejected() -> None:
    with pytest.raises(ValueError, match="beta must be > 0, got -1"):
        IntegratedSoftplus(beta=-1.0)


def test_activation_registries() -> None:
    for expected in (nn.ReLU, nn.SiLU, nn.PReLU, nn.Tanh, ShiftedSoftplus):
        assert expected in ACTIVATION_MODULE_TYPES
    for integrated in INTEGRATED_ACTIVATIONS.values():
        assert integrated in ACTIVATION_MODULE_TYPES
    assert not issubclass(nn.Sigmoid, ACTIVATION_MODULE_TYPES)
    assert not issubclass(nn.Softmax, ACTIVATION_MODULE_TYPES)
    assert {F.silu, F.relu, torch.tanh, torch.relu, F.gelu} <= ACTIVATION_FUNCTIONS
    assert torch.sigmoid not in ACTIVATION_FUNCTIONS
    assert INTEGRATED_ACTIVATIONS["irelu"] is IReLU
