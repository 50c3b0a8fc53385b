"""The analytic gain of an activation: the pre-activation scale that gives a unit-rms output for
Gaussian inputs (the mean-field fixed point ``lsuv_init`` is compared with), and the bisection in
log scale that LSUV also uses to hit its target through an activation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

_GRID = np.linspace(-12.0, 12.0, 48001)
_GAUSS_WEIGHTS = np.exp(-0.5 * _GRID**2) / math.sqrt(2 * math.pi) * (_GRID[1] - _GRID[0])


MIN_RESPONSE = 0.05  # least d log rms / d log c at a usable scale (IReLU: 2, ReLU: 1)
RESPONSE_STEP = 0.1  # in log c, to measure that response


def gaussian_rms(activation: Callable[[Tensor], Tensor], scale: float) -> float:
    """sqrt(E[activation(scale * z)^2]) for z ~ N(0, 1) (a fine quadrature on [-12, 12])."""
    z = torch.as_tensor(scale * _GRID, dtype=torch.float64)
    with torch.no_grad():
        values = activation(z).double().numpy()
    return float(np.sqrt(np.sum(_GAUSS_WEIGHTS * values**2)))


def analytic_gain(activation: Callable[[Tensor], Tensor], target: float = 1.0) -> float | None:
    """The pre-activation standard deviation s with E[activation(s z)^2] = target^2, z ~ N(0,1).

    IReLU: (8/3)^(1/4) target^(1/2) = 1.278 for target 1 (E[IReLU(s z)^2] = 3 s^4 / 8); ReLU:
    sqrt(2) (He's gain). None when no s reaches the target (tanh: E[tanh^2] < 1). This is the
    mean-field fixed point of a deep net with independent Gaussian weights; for IReLU it is
    unstable (see the module docstring), which is why ``lsuv_init`` measures real data instead.
    """
    return solve_log_scale(lambda s: gaussian_rms(activation, s), target, 1.0)


def solve_log_scale(
    rms_at: Callable[[float], float], target: float, guess: float, steps: int = 50
) -> float | None:
    """c > 0 with rms_at(c) = target for rms_at increasing in c (bisection in log c, bracketed
    by doubling or halving from ``guess``); None when no c within 2^60 of the guess reaches it,
    or reaches it only by saturating the activation."""

    def gap(log_c: float) -> float:
        value = rms_at(math.exp(log_c))
        if not math.isfinite(value):
            return math.inf
        return math.log(value / target) if value > 0 else -math.inf

    low = high = math.log(guess)
    start = gap(low)
    if start == 0:
        return guess
    step = -math.log(2.0) if start > 0 else math.log(2.0)
    for _ in range(60):
        moved = (low if start > 0 else high) + step
        if start > 0:
            high, low = low, moved
            if gap(low) <= 0:
                break
        else:
            low, high = high, moved
            if gap(high) >= 0:
                break
    else:
        return None
    for _ in range(steps):
        middle = 0.5 * (low + high)
        if gap(middle) > 0:
            high = middle
        else:
            low = middle
    root = math.exp(0.5 * (low + high))
    if not abs(gap(math.log(root))) < 1e-3:
        return None
    # A target met only by saturating (tanh's rms creeps up to 1 as the scale grows without
    # bound) is out of range: there the output no longer responds to its input, nor its
    # gradient. A usable root responds: d log rms / d log c >= MIN_RESPONSE (IReLU: 2, ReLU: 1).
    response = (gap(math.log(root) + RESPONSE_STEP) - gap(math.log(root))) / RESPONSE_STEP
    return root if response >= MIN_RESPONSE else None
