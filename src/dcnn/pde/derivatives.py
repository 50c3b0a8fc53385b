"""Input derivatives of networks for physics-informed losses.

``input_jet`` returns the network output together with its first derivatives along every input
coordinate and its pure second derivatives along requested coordinates, keeping the graph to the
model parameters so that residual losses built from them can be back-propagated.

Methods:

* ``"autograd"`` (reference): nested reverse-mode ``torch.autograd.grad`` with ``create_graph``.
* ``"taylor"``: forward propagation of (value, d1, d2) layer by layer through the known
  architectures, so training needs one first-order backward pass instead of double backprop.
  All directions travel as one ``(K, N, H)`` tensor of "slabs" (value, D first derivatives,
  S pure second derivatives), so each layer is a few batched tensor ops:

  - :class:`~dcnn.models.mlp.MLP` whose activations have no trainable parameters uses a fused
    autograd function with a hand-written backward pass (eval-mode BatchNorm is folded into the
    next Linear layer);
  - other MLPs and :class:`~dcnn.models.mlp.ModifiedMLP` compose ordinary differentiable torch ops.

* ``"auto"``: the method with the smaller estimated cost (below) where the model supports Taylor
  mode, else autograd.

Cost, in matrix products of a hidden layer per point (the products dominate on CPU and GPU), for
D inputs, C outputs and S requested second derivatives, counting the training backward pass:
Taylor mode carries 1 + D + S slabs through the forward pass and back, and each slab's backward
needs two products (input and weight gradients): 3 (1 + D + S). Nested reverse mode runs the
forward pass (3 with its backward), one reverse sweep per output (3 each) and one sweep through
forward and reverse graph per output and second derivative (6 each): 3 + 3 C + 6 C S. Measured
on a 2-core CPU with the 6 x 40 tanh MLP of PDEBench, full training steps of the PDE problems:
Taylor is about 1.3-1.5x faster on 2D diffusion-reaction domain points (D = 3, C = 2, S = 2) and
1.1-1.3x for 1D Euler (D = 2, C = 3, first derivatives), autograd about 1.35x faster for 1D
advection (D = 2, C = 1, first derivatives); the estimate picks the faster method in these cases.

Coordinate order follows PDEBench: 1D problems x = (x, t); 2D problems x = (x, y, t).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dcnn.activations import IntegratedActivation, IReLU
from dcnn.models.mlp import MLP, ModifiedMLP

METHODS = ("auto", "autograd", "taylor")


@dataclass
class Jet:
    """Network output and its input derivatives at N points.

    value: (N, C) output u.
    d1: (N, C, D) first derivatives du_c/dx_k.
    d2: (N, C, D) pure second derivatives d2u_c/dx_k^2; zero for coordinates not requested.
    second_order: the coordinates whose second derivatives were computed (None: all of them).
    """

    value: Tensor
    d1: Tensor
    d2: Tensor
    second_order: tuple[int, ...] | None = None

    def first(self, c: int, k: int) -> Tensor:
        """du_c/dx_k, shape (N,)."""
        return self.d1[:, c, k]

    def second(self, c: int, k: int) -> Tensor:
        """d2u_c/dx_k^2, shape (N,); raises ValueError if coordinate k was not requested."""
        if self.second_order is not None and k not in self.second_order:
            raise ValueError(
                f"second derivative along input coordinate {k} was not requested; "
                f"pass it in input_jet(..., second_order=...) (requested: {self.second_order})"
            )
        return self.d2[:, c, k]


# ---------------------------------------------------------------------------------------------
# Elementwise activation derivatives s(z), s'(z), ..., s^(order)(z).

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
    s = torch.tanh(z)
    s1 = 1 - s * s  # reuse tanh for all its derivatives
    if order == 1:
        return s, s1
    s2 = -2 * s * s1
    if order == 2:
        return s, s1, s2
    return s, s1, s2, -2 * s1 * (s1 - 2 * s * s)


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


# ---------------------------------------------------------------------------------------------
# Directions carried by the Taylor propagation.


@dataclass(frozen=True)
class _Directions:
    """Slab layout: 0 value, 1..D first derivatives, D+1..D+S pure second derivatives.

    ``coords`` selects the requested coordinates among D things (e.g. weight columns), ``selected``
    the first-derivative slabs of those coordinates; both are slices when contiguous.
    """

    dims: int
    requested: tuple[int, ...]
    coords: slice | Tensor | None
    selected: slice | Tensor | None

    @classmethod
    def build(cls, dims: int, requested: tuple[int, ...], device: torch.device) -> _Directions:
        if not requested:
            return cls(dims, requested, None, None)
        if requested == tuple(range(requested[0], requested[-1] + 1)):
            start, stop = requested[0], requested[-1] + 1
            return cls(dims, requested, slice(start, stop), slice(1 + start, 1 + stop))
        index = torch.tensor(requested, device=device)
        return cls(dims, requested, index, index + 1)

    @property
    def num_second(self) -> int:
        return len(self.requested)

    @property
    def slabs(self) -> int:
        return 1 + self.dims + self.num_second

    @property
    def first(self) -> slice:
        return slice(1, 1 + self.dims)

    @property
    def second(self) -> slice:
        return slice(1 + self.dims, self.slabs)


def _slab_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum_m a[m] * b[m] over the slab axis, accumulated in place (cheaper than (a * b).sum(0))."""
    total = torch.mul(a[0], b[0])
    for m in range(1, a.shape[0]):
        total.addcmul_(a[m], b[m])
    return total


def _add_at(target: Tensor, selector: slice | Tensor, values: Tensor) -> None:
    """target[selector] += values along dim 0 (in place, no autograd)."""
    if isinstance(selector, slice):
        target[selector] += values
    else:
        target.index_add_(0, selector, values)


# ---------------------------------------------------------------------------------------------
# Fused Taylor propagation for MLP: hand-written backward, all slabs of a layer in one op each.
#
# Hidden layer with input slabs h (K, N, H_in): pre = h W^T (+ b on slab 0), z = pre[0],
#   out[0] = s(z), out[first/second] = s'(z) pre[...], out[second] += s''(z) pre[selected]^2.
# The first layer sees x with dx/dx_k = e_k, so its derivative slabs are the weight columns.


class _FusedMLPJet(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: Tensor, activations: Sequence[nn.Module], directions: _Directions, *params: Tensor
    ) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        second = directions.num_second > 0
        order = 3 if second else 2  # backward needs one order more than forward
        columns = weights[0].t().unsqueeze(1)  # (D, 1, H): d(x W^T)/dx_k
        z = torch.addmm(biases[0], x, weights[0].t())
        terms = activation_derivatives(activations[0], z, order)
        out = z.new_empty((directions.slabs, *z.shape))
        out[0] = terms[0]
        torch.mul(terms[1], columns, out=out[directions.first])
        if second:
            torch.mul(terms[2], columns[directions.coords].square(), out=out[directions.second])
        layers = [(None, None, terms)]
        h = out
        for weight, bias, activation in zip(
            weights[1:-1], biases[1:-1], activations[1:], strict=True
        ):
            pre = h.new_empty((directions.slabs, h.shape[1], weight.shape[0]))
            torch.addmm(bias, h[0], weight.t(), out=pre[0])  # bias on the value slab only
            torch.matmul(h[1:], weight.t(), out=pre[1:])
            terms = activation_derivatives(activation, pre[0], order)
            out = torch.empty_like(pre)
            out[0] = terms[0]
            torch.mul(pre[1:], terms[1], out=out[1:])
            if second:
                out[directions.second].addcmul_(terms[2], pre[directions.selected].square())
            layers.append((h, pre, terms))
            h = out
        y = torch.matmul(h, weights[-1].t())
        y[0] += biases[-1]
        ctx.save_for_backward(x, *params)
        ctx.layers, ctx.last_hidden, ctx.directions = layers, h, directions
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, *params = ctx.saved_tensors
        weights = params[0::2]
        directions: _Directions = ctx.directions
        second = directions.num_second > 0
        grad_weights: list[Tensor | None] = [None] * len(weights)
        grad_biases: list[Tensor | None] = [None] * len(weights)

        grad_y = grad_y.contiguous()
        grad_weights[-1] = grad_y.flatten(0, 1).t() @ ctx.last_hidden.flatten(0, 1)
        grad_biases[-1] = grad_y[0].sum(0)
        grad_h = torch.matmul(grad_y, weights[-1])
        for i in range(len(weights) - 2, 0, -1):
            h, pre, terms = ctx.layers[i]
            # d/dz of out[m] = s'(z) pre[m] gives s''(z) pre[m] on every derivative slab.
            coupling = _slab_dot(grad_h[1:], pre[1:])
            if second:
                selected = pre[directions.selected]
                grad_second = grad_h[directions.second]
                curvature = _slab_dot(grad_second, selected.square())
                cross = 2 * terms[2] * selected * grad_second
            # grad_h is a fresh tensor: turn it into the gradient w.r.t. pre in place.
            grad_pre = grad_h
            grad_pre[0].mul_(terms[1]).addcmul_(terms[2], coupling)
            grad_pre[1:].mul_(terms[1])
            if second:
                grad_pre[0].addcmul_(terms[3], curvature)
                _add_at(grad_pre, directions.selected, cross)
            grad_weights[i] = grad_pre.flatten(0, 1).t() @ h.flatten(0, 1)
            grad_biases[i] = grad_pre[0].sum(0)
            grad_h = torch.matmul(grad_pre, weights[i])

        terms = ctx.layers[0][2]
        columns = weights[0].t().unsqueeze(1)
        grad_first = grad_h[directions.first]
        grad_z = torch.mul(terms[1], grad_h[0]).addcmul_(terms[2], _slab_dot(grad_first, columns))
        grad_columns = (grad_first * terms[1]).sum(1)  # (D, H): columns are shared by all points
        if second:
            selected = columns[directions.coords]
            grad_second = grad_h[directions.second]
            grad_z.addcmul_(terms[3], _slab_dot(grad_second, selected.square()))
            _add_at(grad_columns, directions.coords, (2 * terms[2] * selected * grad_second).sum(1))
        grad_weights[0] = grad_z.t() @ x + grad_columns.t()
        grad_biases[0] = grad_z.sum(0)
        grad_x = grad_z @ weights[0] if ctx.needs_input_grad[0] else None

        grad_params = [g for pair in zip(grad_weights, grad_biases, strict=True) for g in pair]
        needed = ctx.needs_input_grad[3:]
        return (
            grad_x,
            None,
            None,
            *(g if need else None for g, need in zip(grad_params, needed, strict=True)),
        )


def _eval_batchnorm_affine(norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as h * scale + shift (per feature)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def _is_batchnorm(norm: nn.Module) -> bool:
    return isinstance(norm, nn.BatchNorm1d)


def _mlp_fused(model: MLP, x: Tensor, directions: _Directions) -> Tensor:
    """(K, N, C) slabs of the MLP output; BatchNorm after layer i is folded into layer i + 1."""
    params: list[Tensor] = []
    for i, layer in enumerate(model.layers):
        weight, bias = layer.weight, layer.bias
        norm = model.norms[i - 1] if model.norms is not None and i > 0 else None
        if norm is not None and _is_batchnorm(norm):
            scale, shift = _eval_batchnorm_affine(norm)
            weight, bias = weight * scale, torch.addmv(bias, weight, shift)
        params += [weight, bias]
    return _FusedMLPJet.apply(x, list(model.activations), directions, *params)


# ---------------------------------------------------------------------------------------------
# Composite Taylor propagation (ordinary autograd ops): ModifiedMLP, MLP with learnable
# activations. State: value (N, H); d1 (D, N, H) or broadcastable (D, 1, H) after an input layer;
# d2 (S, N, H), or None while it is identically zero.


@dataclass
class _State:
    value: Tensor
    d1: Tensor
    d2: Tensor | None


def _input_linear(layer: nn.Linear, x: Tensor) -> _State:
    """Linear layer on the inputs: dx/dx_k = e_k, so d1 is weight column k."""
    return _State(F.linear(x, layer.weight, layer.bias), layer.weight.t().unsqueeze(1), None)


def _linear(layer: nn.Linear, state: _State) -> _State:
    weight_t = layer.weight.t()
    d2 = None if state.d2 is None else state.d2 @ weight_t
    return _State(F.linear(state.value, layer.weight, layer.bias), state.d1 @ weight_t, d2)


def _activation(module: nn.Module, state: _State, directions: _Directions) -> _State:
    """Chain rule: d1' = s' d1, d2' = s'' d1^2 + s' d2 (pure second derivatives)."""
    second = directions.num_second > 0
    terms = activation_derivatives(module, state.value, 2 if second else 1)
    d1 = terms[1] * state.d1
    if not second:
        return _State(terms[0], d1, None)
    selected = state.d1[directions.coords]
    d2 = terms[2] * selected.square()
    if state.d2 is not None:
        d2 = torch.addcmul(d2, terms[1], state.d2)
    return _State(terms[0], d1, d2)


def _affine(scale: Tensor, shift: Tensor, state: _State) -> _State:
    d2 = None if state.d2 is None else state.d2 * scale
    return _State(torch.addcmul(shift, state.value, scale), state.d1 * scale, d2)


def _gate(u: _State, v: _State, z: _State, directions: _Directions) -> _State:
    """Product rule for h = u + z (v - u) = (1 - z) u + z v.

    u, v and z come out of activations, so their d2 are all present when second is requested.
    """
    delta_value = v.value - u.value
    delta_d1 = v.d1 - u.d1
    value = torch.addcmul(u.value, z.value, delta_value)
    d1 = u.d1 + z.d1 * delta_value + z.value * delta_d1
    if directions.num_second == 0:
        return _State(value, d1, None)
    coords = directions.coords
    # d2h = d2u + d2z (v - u) + 2 dz d(v - u) + z d2(v - u)
    d2 = u.d2 + z.d2 * delta_value + 2 * z.d1[coords] * delta_d1[coords]
    return _State(value, d1, torch.addcmul(d2, z.value, v.d2 - u.d2))


def _mlp_composite(model: MLP, x: Tensor, directions: _Directions) -> _State:
    state = _input_linear(model.layers[0], x)
    for i, activation in enumerate(model.activations):
        if i > 0:
            state = _linear(model.layers[i], state)
        state = _activation(activation, state, directions)
        if model.norms is not None and _is_batchnorm(model.norms[i]):
            state = _affine(*_eval_batchnorm_affine(model.norms[i]), state)
    return _linear(model.layers[-1], state)


def _modified_mlp_composite(model: ModifiedMLP, x: Tensor, directions: _Directions) -> _State:
    u = _activation(model.activation_u, _input_linear(model.encoder_u, x), directions)
    v = _activation(model.activation_v, _input_linear(model.encoder_v, x), directions)
    h: _State | None = None
    for gate, activation in zip(model.gates, model.gate_activations, strict=True):
        pre = _input_linear(gate, x) if h is None else _linear(gate, h)
        h = _gate(u, v, _activation(activation, pre, directions), directions)
    return _linear(model.output, h)


def taylor_unsupported_reason(model: nn.Module) -> str | None:
    """Why Taylor mode cannot handle ``model`` (None if it can)."""
    if isinstance(model, MLP) and type(model).forward is MLP.forward:
        for i, layer in enumerate(model.layers):
            if type(layer) is not nn.Linear:
                return f"layers.{i} is {type(layer).__name__}; Taylor mode expects nn.Linear"
        for i, norm in enumerate(model.norms if model.norms is not None else ()):
            if isinstance(norm, nn.Identity):  # normalization stripped by surgery
                continue
            if not _is_batchnorm(norm):
                return f"norms.{i} is {type(norm).__name__}; only BatchNorm1d is supported"
            if norm.training or norm.running_mean is None:
                return (
                    f"norms.{i} (BatchNorm1d) normalises with batch statistics (training mode), "
                    "which couples the points of a batch, so per-point input derivatives are not "
                    "defined layer by layer; call model.eval() or use method='autograd'"
                )
        return None
    if isinstance(model, ModifiedMLP) and type(model).forward is ModifiedMLP.forward:
        return None
    return (
        f"Taylor mode supports dcnn.models.mlp.MLP and ModifiedMLP, got {type(model).__name__}; "
        "use method='autograd' or 'auto'"
    )


def estimated_costs(dims: int, outputs: int, num_second: int) -> dict[str, int]:
    """Hidden-layer matrix products per point of one training step, per method (module docs)."""
    return {
        "taylor": 3 * (1 + dims + num_second),
        "autograd": 3 + 3 * outputs + 6 * outputs * num_second,
    }


def _auto_method(model: nn.Module, dims: int, num_second: int) -> str:
    """Taylor where supported and not estimated costlier than nested autograd, else autograd."""
    if taylor_unsupported_reason(model) is not None:
        return "autograd"
    costs = estimated_costs(dims, model.out_features, num_second)
    return "taylor" if costs["taylor"] <= costs["autograd"] else "autograd"


def _has_trainable_parameters(modules: Sequence[nn.Module]) -> bool:
    return any(p.requires_grad for module in modules for p in module.parameters())


def _taylor_jet(model: nn.Module, x: Tensor, requested: tuple[int, ...]) -> Jet:
    if x.shape[1] != model.in_features:
        raise ValueError(
            f"x has {x.shape[1]} input coordinates but {type(model).__name__} expects "
            f"{model.in_features}"
        )
    parameter = next(model.parameters())
    if x.dtype != parameter.dtype or x.device != parameter.device:
        raise ValueError(
            f"x is {x.dtype} on {x.device} but the parameters of {type(model).__name__} are "
            f"{parameter.dtype} on {parameter.device}; convert x (or the model) first"
        )
    directions = _Directions.build(x.shape[1], requested, x.device)
    # Under torch.compile the composite ops are used: inductor fuses them and derives the backward.
    if (
        isinstance(model, MLP)
        and not torch.compiler.is_compiling()
        and not _has_trainable_parameters(model.activations)
    ):
        y = _mlp_fused(model, x, directions)
        value, d1, d2 = y[0], y[directions.first], y[directions.second]
    else:
        if isinstance(model, MLP):
            state = _mlp_composite(model, x, directions)
        else:
            state = _modified_mlp_composite(model, x, directions)
        value, d1, d2 = state.value, state.d1, state.d2
    return Jet(
        value, d1.permute(1, 2, 0), _scatter_second(d2, value, requested, x.shape[1]), requested
    )


def _scatter_second(
    d2: Tensor | None, value: Tensor, requested: tuple[int, ...], dims: int
) -> Tensor:
    """(S, N, C) second derivatives of the requested coordinates -> (N, C, D) with zeros."""
    if d2 is None or d2.shape[0] == 0:
        return value.new_zeros((*value.shape, dims))
    if len(requested) == dims:
        return d2.permute(1, 2, 0)
    position = {k: i for i, k in enumerate(requested)}
    zero = torch.zeros_like(value)
    return torch.stack([d2[position[k]] if k in position else zero for k in range(dims)], dim=-1)


# ---------------------------------------------------------------------------------------------
# Reverse-mode reference.


def _grad(output: Tensor, x: Tensor) -> Tensor:
    """d(sum output)/dx with graph kept; zero when output does not depend on x."""
    if not output.requires_grad:
        return torch.zeros_like(x)
    (gradient,) = torch.autograd.grad(
        output.sum(), x, create_graph=True, allow_unused=True, materialize_grads=True
    )
    return gradient


def _autograd_jet(model: nn.Module, x: Tensor, requested: tuple[int, ...]) -> Jet:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "input_jet(method='autograd') needs autograd, which inference mode disables; "
            "disable it (Lightning: Trainer(inference_mode=False)) or use method='taylor'"
        )
    with torch.enable_grad():
        x_in = x if x.requires_grad else x.detach().requires_grad_(True)
        value = model(x_in)
        if value.dim() != 2 or value.shape[0] != x.shape[0]:
            raise ValueError(
                f"{type(model).__name__} returned shape {tuple(value.shape)} for inputs "
                f"{tuple(x.shape)}; input_jet expects outputs of shape (N, C)"
            )
        first_columns, second_columns = [], []
        zero = x.new_zeros(x.shape[0])
        for c in range(value.shape[1]):
            gradient = _grad(value[:, c], x_in)  # (N, D)
            first_columns.append(gradient)
            pure_second = [
                _grad(gradient[:, k], x_in)[:, k] if k in requested else zero
                for k in range(x.shape[1])
            ]
            second_columns.append(torch.stack(pure_second, dim=-1))
    return Jet(
        value, torch.stack(first_columns, dim=1), torch.stack(second_columns, dim=1), requested
    )


# ---------------------------------------------------------------------------------------------
# Public entry point.


def _validate(x: Tensor, second_order: Sequence[int], method: str) -> tuple[int, ...]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor of shape (N, D), got {shape}")
    dims = x.shape[1]
    requested = tuple(second_order)
    for k in requested:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < dims:
            raise ValueError(
                f"second_order entries must be input coordinates in 0..{dims - 1}, "
                f"got {k!r} in {requested}"
            )
    if len(set(requested)) != len(requested):
        raise ValueError(f"second_order has repeated coordinates: {requested}")
    return tuple(sorted(requested))


def input_jet(
    model: nn.Module, x: Tensor, second_order: Sequence[int] = (), method: str = "auto"
) -> Jet:
    """Output of ``model`` at ``x`` (N, D) with d/dx_k for all k and d2/dx_k^2 for requested k.

    The result keeps the graph to the model parameters (create_graph semantics) for first-order
    training gradients. ``method``: ``"autograd"`` (nested reverse mode), ``"taylor"``
    (layer-wise forward propagation; ValueError for unsupported models, including BatchNorm in
    training mode) or ``"auto"`` (the cheaper of the two by ``estimated_costs`` where Taylor
    mode supports the model, else autograd; both give the same jet). With BatchNorm in
    training mode, autograd returns derivatives of the batch-coupled outputs (d sum_j u_j / dx_i),
    as nested autograd always did. The fused MLP path back-propagates once: differentiating its
    parameter gradients again (double backward) is not supported.
    """
    requested = _validate(x, second_order, method)
    if method == "auto":
        method = _auto_method(model, x.shape[1], len(requested))
    if method == "autograd":
        return _autograd_jet(model, x, requested)
    reason = taylor_unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"input_jet(method='taylor'): {reason}")
    return _taylor_jet(model, x, requested)
