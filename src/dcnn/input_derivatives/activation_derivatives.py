"""Elementwise activation derivatives s(z), s'(z), ..., s^(order)(z) for Taylor-mode propagation.

Closed forms for the common activations, registered by exact class; an integrated activation F
uses F' = its base activation; anything else is differentiated by autograd (assumed elementwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcnn.activations import IntegratedActivation, IReLU

ActivationDerivatives = Callable[[nn.Module, Tensor, int], tuple[Tensor, ...]]

_CLOSED_FORMS: dict[type[nn.Module], ActivationDerivatives] = {}

MAX_ACTIVATION_ORDER = 3


def register_activation_derivatives(cls: type[nn.Module], terms: ActivationDerivatives) -> None:
    """Register ``terms(module, z, order) -> (s, s', ..., s^(order))`` for exactly class ``cls``.

    ``order`` is at most 3 (Taylor training with second derivatives needs s''' in the backward
    pass). Lookup is by exact type because a subclass may change ``forward``; activations without
    closed forms are differentiated by autograd.
    """
    _CLOSED_FORMS[cls] = terms


def _tanh(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    # Every derivative is a polynomial of s = tanh(z), each formed in one pass over memory.
    s = torch.tanh(z)
    s1 = torch.addcmul(s.new_ones(()), s, s, value=-1)  # 1 - s^2
    if order == 1:
        return s, s1
    s2 = torch.addcmul(s.new_zeros(()), s, s1, value=-2)  # -2 s s'
    if order == 2:
        return s, s1, s2
    return s, s1, s2, torch.addcmul(4 * s1, s1, s1, value=-6)  # s' (4 - 6 s')


def _step(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)  # 0 at z = 0, as autograd's relu'


def _relu(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    zero = torch.zeros_like(z)
    return (torch.relu(z), _step(z), zero, zero)[: order + 1]


def _irelu(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    relu = torch.relu(z)
    return (0.5 * relu * relu, relu, _step(z), torch.zeros_like(z))[: order + 1]


def _sigmoid(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    s = torch.sigmoid(z)
    s1 = s * (1 - s)
    if order == 1:
        return s, s1
    s2 = s1 * (1 - 2 * s)
    if order == 2:
        return s, s1, s2
    return s, s1, s2, s1 * (1 - 6 * s1)


def _silu(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    sig = torch.sigmoid(z)
    dsig = sig * (1 - sig)
    s, s1 = z * sig, sig + z * dsig
    if order == 1:
        return s, s1
    skew = 1 - 2 * sig  # sigma'' = sigma' * skew
    s2 = dsig * (2 + z * skew)
    if order == 2:
        return s, s1, s2
    return s, s1, s2, dsig * (skew * (3 + z * skew) - 2 * z * dsig)


def _softplus(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    beta, threshold = module.beta, module.threshold
    s = F.softplus(z, beta=beta, threshold=threshold)
    sig = torch.sigmoid(beta * z)
    linear = beta * z > threshold  # torch's softplus is exactly the identity there
    zero = torch.zeros_like(z)
    terms = [s, torch.where(linear, torch.ones_like(z), sig)]
    dsig = sig * (1 - sig)
    if order >= 2:
        terms.append(torch.where(linear, zero, beta * dsig))
    if order >= 3:
        terms.append(torch.where(linear, zero, beta * beta * dsig * (1 - 2 * sig)))
    return tuple(terms)


def _gelu(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    if module.approximate != "none":
        return _autograd_derivatives(module, z, order)
    cdf = 0.5 * (1 + torch.erf(z * (1 / math.sqrt(2))))
    pdf = torch.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi))
    terms = (z * cdf, cdf + z * pdf, pdf * (2 - z * z), z * pdf * (z * z - 4))
    return terms[: order + 1]


for _cls, _terms in (
    (nn.Tanh, _tanh),
    (nn.ReLU, _relu),
    (IReLU, _irelu),
    (nn.Sigmoid, _sigmoid),
    (nn.SiLU, _silu),
    (nn.Softplus, _softplus),
    (nn.GELU, _gelu),
):
    register_activation_derivatives(_cls, _terms)


def _autograd_derivatives(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    """Derivatives of an elementwise activation by repeatedly differentiating its sum."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"activation {type(module).__name__} has no closed-form derivatives and the autograd "
            "fallback cannot run in inference mode; disable inference mode "
            "(Lightning: Trainer(inference_mode=False)) or register closed forms with "
            "register_activation_derivatives"
        )
    with torch.enable_grad():
        detached = not z.requires_grad  # then nothing upstream needs the graph of the terms
        z_in = z.detach().requires_grad_(True) if detached else z
        terms = [module(z_in)]
        if terms[0].shape != z.shape:
            raise ValueError(
                f"activation {type(module).__name__} changed the shape {tuple(z.shape)} to "
                f"{tuple(terms[0].shape)}; Taylor-mode propagation needs elementwise activations"
            )
        for _ in range(order):
            previous = terms[-1]
            if previous.requires_grad:
                (derivative,) = torch.autograd.grad(
                    previous.sum(), z_in, create_graph=True, materialize_grads=True
                )
            else:  # the previous term is piecewise constant
                derivative = torch.zeros_like(z)
            terms.append(derivative)
    return tuple(term.detach() for term in terms) if detached else tuple(terms)


def activation_derivatives(module: nn.Module, z: Tensor, order: int) -> tuple[Tensor, ...]:
    """``(s(z), s'(z), ..., s^(order)(z))`` for an elementwise activation module.

    Closed forms for registered classes; an integrated activation F uses F' = its base
    activation; anything else is differentiated by autograd (assumed elementwise).
    """
    if not 0 <= order <= MAX_ACTIVATION_ORDER:
        raise ValueError(f"order must be in 0..{MAX_ACTIVATION_ORDER}, got {order}")
    closed_form = _CLOSED_FORMS.get(type(module))
    if closed_form is not None:
        return closed_form(module, z, order)[: order + 1]
    if isinstance(module, IntegratedActivation) and order > 0:
        base = activation_derivatives(module.base_activation(), z, order - 1)
        return (module(z), *base)
    return _autograd_derivatives(module, z, order)
