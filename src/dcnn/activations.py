"""Integrated activations for derivative-constrained networks, and what counts as an activation.

A derivative-constrained (DC) network is trained on its input derivatives, so the activation's
derivative plays the role the activation plays in an ordinary network. An *integrated*
activation F is the antiderivative of a familiar base activation g:

    F(x) = integral_0^x g(y) dy,    so F(0) = 0 and F' = g everywhere (no jumps).

IReLU (the paper's eq. 3) is the integral of ReLU. The smooth variants whose antiderivatives need
special functions (softplus, SiLU, GELU) are evaluated by an accurate forward formula and
differentiated analytically: their backward pass is the base activation itself, so first and
second derivatives are exactly those of the base activation.

`ACTIVATION_MODULE_TYPES` and `ACTIVATION_FUNCTIONS` tell `dcnn.surgery` which modules and which
plain callables stored on module attributes it may replace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.models.schnet import ShiftedSoftplus
from torch_geometric.nn.resolver import swish as pyg_swish

_LN2 = math.log(2.0)

# Beyond beta*x = 40, log1p(exp(beta*x)) equals beta*x to float64 precision (e^-40 / 40 < eps),
# while exp(2 * 40) still fits in float32 for softplus' double backward.
_SOFTPLUS_LINEAR_THRESHOLD = 40.0

# Ten even Bernoulli terms: the k-th term of the dilogarithm series below is about
# 2 * (ln 2 / 2 pi)^(2k), i.e. below 1e-19 for k = 10.
_DILOG_SERIES_TERMS = 10


def _even_bernoulli_series_coefficients(count: int) -> tuple[float, ...]:
    """B_2k / (2k+1)! for k = 1..count, from the exact Bernoulli recurrence (B_1 = -1/2)."""
    bernoulli = [Fraction(1)]
    for m in range(1, 2 * count + 1):
        bernoulli.append(-sum(math.comb(m + 1, j) * bernoulli[j] for j in range(m)) / (m + 1))
    return tuple(float(bernoulli[2 * k] / math.factorial(2 * k + 1)) for k in range(1, count + 1))


_DILOG_COEFFICIENTS = _even_bernoulli_series_coefficients(_DILOG_SERIES_TERMS)


def _integral_log1p_exp_neg(a: Tensor) -> Tensor:
    """P(a) = integral_0^a log(1 + e^-t) dt = Li2(-e^-a) + pi^2/12 for a >= 0.

    Li2(-w), w = e^-a in (0, 1], is reduced by Landen's identity to Li2(w / (1 + w)) whose
    argument is at most 1/2, and that is expanded in L = log(1 + w) <= ln 2 (Bernoulli series,
    radius 2 pi, so it converges fast):
        Li2(-w) = -L - L^2/4 - sum_k c_k L^(2k+1),   c_k = B_2k / (2k+1)!.
    Subtracting the same expression at w = 1 (L = ln 2) gives P. Every difference
    L^m - ln2^m is factored through d = L - ln 2 = log1p(expm1(-a) / 2), which is computed
    without cancellation, so P is accurate to a few ulp relative to itself and P(0) is exactly 0.
    """
    d = torch.log1p(torch.expm1(-a) / 2)
    log_term = _LN2 + d
    log_term_squared = log_term * log_term
    # q_m = (L^m - ln2^m) / (L - ln2) for odd m, via q_(m+2) = L^2 q_m + ln2^m (L + ln2).
    quotient = torch.ones_like(a)
    ln2_power = _LN2
    series = torch.zeros_like(a)
    for coefficient in _DILOG_COEFFICIENTS:
        quotient = log_term_squared * quotient + ln2_power * (log_term + _LN2)
        ln2_power *= _LN2 * _LN2
        series = series + coefficient * quotient
    return -d * (1 + (2 * _LN2 + d) / 4 + series)


def _softplus_antiderivative(x: Tensor, beta: float) -> Tensor:
    """integral_0^x log(1 + e^(beta y)) / beta dy = G(beta x) / beta^2 with G the beta=1 case.

    G(u) = -P(-u) for u <= 0 and u^2/2 + P(u) for u > 0, because log(1+e^t) = t + log(1+e^-t).
    """
    u = beta * x
    tail = _integral_log1p_exp_neg(u.abs())
    return torch.where(u > 0, 0.5 * u * u + tail, -tail) / (beta * beta)


def _silu_antiderivative(x: Tensor) -> Tensor:
    """integral_0^x y sigmoid(y) dy = x softplus(x) - integral_0^x softplus (by parts)."""
    magnitude = x.abs()
    tail = _integral_log1p_exp_neg(magnitude)
    # x * softplus(x) - G(x), written per sign so that no large terms cancel.
    x_times_log1p_exp_neg = x * torch.log1p(torch.exp(-magnitude))
    return torch.where(
        x > 0,
        0.5 * x * x + x_times_log1p_exp_neg - tail,
        x_times_log1p_exp_neg + tail,
    )


def _gelu_antiderivative(x: Tensor) -> Tensor:
    """integral_0^x y Phi(y) dy = ((x^2 - 1) Phi(x) + x phi(x)) / 2 + 1/4.

    Differentiating gives x Phi(x) because phi'(x) = -x phi(x); the 1/4 makes F(0) = 0.
    With Phi = 1/2 + E the same expression reads x^2/4 + ((x^2 - 1) E + x phi(x)) / 2, which
    avoids cancelling 1/4 against -Phi/2 near 0; far left, where E -> -1/2 would cancel the
    x^2 terms instead, the first grouping (Phi tiny) is the accurate one.
    """
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    far_left = 0.5 * ((x * x - 1) * torch.special.ndtr(x) + x * pdf) + 0.25
    centred_cdf = 0.5 * torch.special.erf(x / math.sqrt(2))
    elsewhere = 0.25 * x * x + 0.5 * ((x * x - 1) * centred_cdf + x * pdf)
    return torch.where(x < -1, far_left, elsewhere)


def _exact_softplus(x: Tensor, beta: float) -> Tensor:
    return F.softplus(x, beta=beta, threshold=_SOFTPLUS_LINEAR_THRESHOLD)


class _AnalyticAntiderivative(torch.autograd.Function):
    """F(x) from an accurate forward formula; dF/dx = derivative(x) computed with autograd-aware
    torch ops, so double backward (forces, PDE residuals) differentiates the base activation
    itself instead of the series used in the forward pass."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        antiderivative: Callable[[Tensor], Tensor],
        derivative: Callable[[Tensor], Tensor],
    ) -> Tensor:
        return antiderivative(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, derivative = inputs
        ctx.save_for_backward(x)
        ctx.derivative = derivative

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.derivative(x), None, None


class IntegratedActivation(nn.Module):
    """Base class: F(x) = integral_0^x g(y) dy for the base activation g of `base_activation()`."""

    def base_activation(self) -> nn.Module:
        """A fresh module computing F', the activation this one integrates."""
        raise NotImplementedError(f"{type(self).__name__} must define its base activation")


class IReLU(IntegratedActivation):
    """Integrated ReLU (paper eq. 3): max(0, x^2 / 2).

    Base activation ReLU. Derivatives: F' = ReLU, F'' = unit step (1 for x > 0, 0 for x <= 0),
    higher ones zero.
    """

    def forward(self, x: Tensor) -> Tensor:
        # x * relu(x) / 2: autograd gives relu(x) / 2 + x * step(x) / 2 = relu(x), and the step
        # (relu's mask, 0 at x = 0) as second derivative.
        return 0.5 * x * torch.relu(x)

    def base_activation(self) -> nn.Module:
        return nn.ReLU()


class IntegratedLeakyReLU(IntegratedActivation):
    """Integrated LeakyReLU: x^2 / 2 for x > 0, negative_slope * x^2 / 2 for x <= 0.

    Base activation LeakyReLU(negative_slope); F'' is 1 for x > 0 and negative_slope otherwise.
    (The authors' version used negative_slope * x^2, whose derivative is not LeakyReLU.)
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * x * F.leaky_relu(x, self.negative_slope)

    def base_activation(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class IntegratedELU(IntegratedActivation):
    """Integrated ELU: x^2 / 2 for x > 0, alpha * (e^x - 1 - x) for x <= 0.

    Base activation ELU(alpha). Both pieces and their first derivatives vanish at 0, so F is
    continuously differentiable (the authors' version jumped at 0).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        # Clamping keeps exp finite for large positive x; the negative piece is 0 for x >= 0.
        negative_part = torch.clamp(x, max=0.0)
        return 0.5 * x * torch.relu(x) + self.alpha * (torch.expm1(negative_part) - negative_part)

    def base_activation(self) -> nn.Module:
        return nn.ELU(self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class IntegratedSoftplus(IntegratedActivation):
    """Integrated Softplus: integral_0^x log(1 + e^(beta y)) / beta dy.

    Base activation Softplus(beta) (evaluated exactly, i.e. with a linear threshold high enough
    not to matter in float64). The value needs the dilogarithm:
    F(x) = -(Li2(-e^(beta x)) + pi^2/12) / beta^2, evaluated by a stable series.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"IntegratedSoftplus: beta must be > 0, got {beta!r}")
        self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        return _AnalyticAntiderivative.apply(
            x,
            partial(_softplus_antiderivative, beta=self.beta),
            partial(_exact_softplus, beta=self.beta),
        )

    def base_activation(self) -> nn.Module:
        return nn.Softplus(beta=self.beta, threshold=_SOFTPLUS_LINEAR_THRESHOLD)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class IntegratedSiLU(IntegratedActivation):
    """Integrated SiLU (swish): integral_0^x y sigmoid(y) dy = x softplus(x) - int_0^x softplus.

    Base activation SiLU.
    """

    def forward(self, x: Tensor) -> Tensor:
        return _AnalyticAntiderivative.apply(x, _silu_antiderivative, F.silu)

    def base_activation(self) -> nn.Module:
        return nn.SiLU()


class IntegratedGELU(IntegratedActivation):
    """Integrated GELU (exact, erf-based): ((x^2 - 1) Phi(x) + x phi(x)) / 2 + 1/4.

    Base activation GELU(approximate="none"); Phi, phi are the standard normal cdf and pdf.
    """

    def forward(self, x: Tensor) -> Tensor:
        return _AnalyticAntiderivative.apply(x, _gelu_antiderivative, F.gelu)

    def base_activation(self) -> nn.Module:
        return nn.GELU()


INTEGRATED_ACTIVATIONS: dict[str, type[IntegratedActivation]] = {
    "irelu": IReLU,
    "integrated_leaky_relu": IntegratedLeakyReLU,
    "integrated_elu": IntegratedELU,
    "integrated_softplus": IntegratedSoftplus,
    "integrated_silu": IntegratedSiLU,
    "integrated_gelu": IntegratedGELU,
}

# Sigmoid and Softmax are deliberately absent: architectures use them as gates and attention
# weights, not as the nonlinearity that IReLU is meant to replace.
ACTIVATION_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Tanh,
    nn.Hardtanh,
    nn.PReLU,
    ShiftedSoftplus,
    *INTEGRATED_ACTIVATIONS.values(),
)

ACTIVATION_FUNCTIONS: frozenset[Callable[..., Tensor]] = frozenset(
    {
        torch.tanh,
        torch.relu,
        F.relu,
        F.silu,
        F.gelu,
        F.softplus,
        F.elu,
        F.leaky_relu,
        F.tanh,
        F.mish,
        F.selu,
        F.celu,
        pyg_swish,  # PyG DimeNet / DimeNet++ store this plain function as `self.act`
    }
)
