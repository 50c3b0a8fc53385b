"""Input derivatives of networks for physics-informed losses.

``input_jet`` returns the network output together with its first derivatives along K directions
(by default the input coordinate axes) and its pure second derivatives along requested ones,
keeping the graph to the model parameters so that residual losses built from them can be
back-propagated. ``jet_and_values`` also returns the outputs at value-only points (initial and
boundary sets), which the fused path runs through the same layer calls.

Methods:

* ``"autograd"`` (reference): nested reverse-mode ``torch.autograd.grad`` with ``create_graph``.
* ``"taylor"``: forward propagation of (value, d1, d2) layer by layer through the known
  architectures, so training needs one first-order backward pass instead of double backprop.
  The derivatives travel as one ``(K + S, n, H)`` tensor of "slabs" (K first derivatives, S pure
  second derivatives), so each layer is a few batched tensor ops:

  - :class:`~dcnn.models.mlp.MLP` whose activations have no trainable parameters uses a fused
    autograd function with a hand-written backward pass (eval-mode BatchNorm is folded into the
    next Linear layer);
  - other MLPs and :class:`~dcnn.models.mlp.ModifiedMLP` compose ordinary differentiable torch ops.

* ``"auto"``: the method with the smaller estimated cost (below) where the model supports Taylor
  mode, else autograd.

Cost, in matrix products of a hidden layer per jet point (the products dominate on CPU and GPU),
for K directions, C outputs and S requested second derivatives, counting the training backward
pass: Taylor mode carries 1 + K + S slabs through the forward pass and back, and each slab's
backward needs two products (input and weight gradients): 3 (1 + K + S). Nested reverse mode runs
the forward pass (3 with its backward), one reverse sweep per output (3 each) and one sweep
through forward and reverse graph per output and second derivative (6 each): 3 + 3 C + 6 C S.
So for one output and one direction (advection: u_t + beta u_x is the derivative along (beta, 1))
both do the same matrix work, and the fused path wins only by fewer elementwise passes and
kernel calls. Measured on a 2-core CPU with the 6 x 40 tanh MLP of PDEBench and its point counts
(``benchmarks/pinn_problem_steps.py``), full training steps autograd / Taylor: advection about
1.0-1.1x, 1D Euler 1.2x, 2D diffusion-reaction 1.6x.

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
    """Network output and its input derivatives at N points, along K directions.

    value: (N, C) output u.
    d1: (N, C, K) first derivatives du_c/dv_k (du_c/dx_k when directions is None).
    d2: (N, C, K) pure second derivatives d2u_c/dv_k^2; zero for directions not requested.
    second_order: the directions whose second derivatives were computed (None: all of them).
    directions: (K, D) directions v_k; None for the input coordinate axes.
    """

    value: Tensor
    d1: Tensor
    d2: Tensor
    second_order: tuple[int, ...] | None = None
    directions: Tensor | None = None

    def first(self, c: int, k: int) -> Tensor:
        """du_c/dv_k (du_c/dx_k for coordinate axes), shape (N,)."""
        return self.d1[:, c, k]

    def second(self, c: int, k: int) -> Tensor:
        """d2u_c/dv_k^2, shape (N,); raises ValueError if direction k was not requested."""
        if self.second_order is not None and k not in self.second_order:
            what = "input coordinate" if self.directions is None else "direction"
            raise ValueError(
                f"second derivative along {what} {k} was not requested; "
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


# ---------------------------------------------------------------------------------------------
# Slab layout of the derivatives carried by the Taylor propagation.


@dataclass(frozen=True)
class _SlabLayout:
    """Derivative slabs: 0..K-1 first derivatives along the K directions, K..K+S-1 pure second
    derivatives along the requested directions.

    ``coords`` selects the requested directions among K things (first-derivative slabs, weight
    columns); a slice when contiguous.
    """

    dims: int
    requested: tuple[int, ...]
    coords: slice | Tensor | None

    @classmethod
    def build(cls, dims: int, requested: tuple[int, ...], device: torch.device) -> _SlabLayout:
        if not requested:
            return cls(dims, requested, None)
        if requested == tuple(range(requested[0], requested[-1] + 1)):
            return cls(dims, requested, slice(requested[0], requested[-1] + 1))
        return cls(dims, requested, torch.tensor(requested, device=device))

    @property
    def num_second(self) -> int:
        return len(self.requested)

    @property
    def first(self) -> slice:
        return slice(0, self.dims)

    @property
    def second(self) -> slice:
        return slice(self.dims, self.dims + self.num_second)


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


def _times_weight(grad: Tensor, weight: Tensor) -> Tensor:
    """grad @ weight; with one output row a broadcast product (matrix products with an inner
    size of 1 are slow on CPU)."""
    return grad * weight[0] if weight.shape[0] == 1 else grad @ weight


def _weight_gradient(
    grad_value: Tensor, value: Tensor, grad_slabs: Tensor, slabs: Tensor
) -> Tensor:
    """grad_value^T value + the same over all rows of all slabs, as two matrix products."""
    return torch.addmm(grad_value.t() @ value, grad_slabs.flatten(0, 1).t(), slabs.flatten(0, 1))


# ---------------------------------------------------------------------------------------------
# Fused Taylor propagation for MLP: hand-written backward pass.
#
# Rows: N value rows, the first n of them jet points, and a block of K + S derivative slabs of
# n rows each. A hidden layer with inputs h (N, H_in) and slabs p (K + S, n, H_in) computes
#   z = h W^T + b, q = p W^T, out = s(z), out_slabs = s'(z) q, out_second += s''(z) q_selected^2,
# so value-only points (initial and boundary sets) share the layer's calls with the jet points.
# The first layer sees x, whose derivative along direction v_k is v_k: its first-derivative slab
# k is s'(z) times the column v_k W^T, the same for every row.


class _FusedMLPJet(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        directions: Tensor,
        n_jet: int,
        activations: Sequence[nn.Module],
        layout: _SlabLayout,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        weights, biases = params[0::2], params[1::2]
        second = layout.num_second > 0
        order = 3 if second else 2  # backward needs one order more than forward
        z = torch.addmm(biases[0], x, weights[0].t())
        terms = activation_derivatives(activations[0], z, order)
        columns = (directions @ weights[0].t()).unsqueeze(1)  # (K, 1, H)
        slabs = z.new_empty((layout.dims + layout.num_second, n_jet, z.shape[1]))
        torch.mul(terms[1][:n_jet], columns, out=slabs[layout.first])
        if second:
            square = columns[layout.coords].square()
            torch.mul(terms[2][:n_jet], square, out=slabs[layout.second])
        layers = [(None, None, None, terms)]
        h = terms[0]
        for weight, bias, activation in zip(
            weights[1:-1], biases[1:-1], activations[1:], strict=True
        ):
            z = torch.addmm(bias, h, weight.t())
            pre = torch.matmul(slabs, weight.t())
            terms = activation_derivatives(activation, z, order)
            out = torch.mul(pre, terms[1][:n_jet])
            if second:
                out[layout.second].addcmul_(terms[2][:n_jet], pre[layout.coords].square())
            layers.append((h, slabs, pre, terms))
            h, slabs = terms[0], out
        value = torch.addmm(biases[-1], h, weights[-1].t())
        derivatives = torch.matmul(slabs, weights[-1].t())
        ctx.save_for_backward(x, directions, *params)
        ctx.layers, ctx.last, ctx.layout, ctx.n_jet = layers, (h, slabs), layout, n_jet
        return value, derivatives

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor, grad_derivatives: Tensor):
        x, directions, *params = ctx.saved_tensors
        weights = params[0::2]
        layout: _SlabLayout = ctx.layout
        n = ctx.n_jet
        second = layout.num_second > 0
        grad_weights: list[Tensor | None] = [None] * len(weights)
        grad_biases: list[Tensor | None] = [None] * len(weights)

        grad_value, grad_slabs = grad_value.contiguous(), grad_derivatives.contiguous()
        grad_weights[-1] = _weight_gradient(grad_value, ctx.last[0], grad_slabs, ctx.last[1])
        grad_biases[-1] = grad_value.sum(0)
        grad_h = _times_weight(grad_value, weights[-1])
        grad_slabs = _times_weight(grad_slabs, weights[-1])
        for i in range(len(weights) - 2, 0, -1):
            h, slabs, pre, terms = ctx.layers[i]
            jet_rows = slice(0, n)
            # d/dz of out_slabs = s'(z) pre gives s''(z) pre on every derivative slab.
            coupling = _slab_dot(grad_slabs, pre)
            if second:
                selected = pre[layout.coords]
                grad_second = grad_slabs[layout.second]
                curvature = _slab_dot(grad_second, selected.square())
                cross = 2 * terms[2][jet_rows] * selected * grad_second
            # grad_h and grad_slabs are fresh tensors: turn them into gradients w.r.t. z and pre.
            grad_z = grad_h.mul_(terms[1])
            grad_z[jet_rows].addcmul_(terms[2][jet_rows], coupling)
            grad_pre = grad_slabs.mul_(terms[1][jet_rows])
            if second:
                grad_z[jet_rows].addcmul_(terms[3][jet_rows], curvature)
                _add_at(grad_pre, layout.coords, cross)
            grad_weights[i] = _weight_gradient(grad_z, h, grad_pre, slabs)
            grad_biases[i] = grad_z.sum(0)
            grad_h = grad_z @ weights[i]
            grad_slabs = torch.matmul(grad_pre, weights[i])

        terms = ctx.layers[0][3]
        columns = (directions @ weights[0].t()).unsqueeze(1)
        grad_first = grad_slabs[layout.first]
        jet_terms = [term[:n] for term in terms]
        grad_z = grad_h.mul_(terms[1])
        grad_z[:n].addcmul_(jet_terms[2], _slab_dot(grad_first, columns))
        grad_columns = (grad_first * jet_terms[1]).sum(1)  # (K, H): shared by all rows
        if second:
            selected = columns[layout.coords]
            grad_second = grad_slabs[layout.second]
            grad_z[:n].addcmul_(jet_terms[3], _slab_dot(grad_second, selected.square()))
            _add_at(grad_columns, layout.coords, (2 * jet_terms[2] * selected * grad_second).sum(1))
        grad_weights[0] = torch.addmm(grad_z.t() @ x, grad_columns.t(), directions)
        grad_biases[0] = grad_z.sum(0)
        grad_x = grad_z @ weights[0] if ctx.needs_input_grad[0] else None

        grad_params = [g for pair in zip(grad_weights, grad_biases, strict=True) for g in pair]
        needed = ctx.needs_input_grad[5:]
        return (
            grad_x,
            None,
            None,
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


def _mlp_fused(
    model: MLP, x: Tensor, directions: Tensor, n_jet: int, layout: _SlabLayout
) -> tuple[Tensor, Tensor]:
    """MLP outputs at all rows of x (N, C) and the (K + S, n_jet, C) derivative slabs of its
    first n_jet rows; BatchNorm after layer i is folded into layer i + 1."""
    params: list[Tensor] = []
    for i, layer in enumerate(model.layers):
        weight, bias = layer.weight, layer.bias
        norm = model.norms[i - 1] if model.norms is not None and i > 0 else None
        if norm is not None and _is_batchnorm(norm):
            scale, shift = _eval_batchnorm_affine(norm)
            weight, bias = weight * scale, torch.addmv(bias, weight, shift)
        params += [weight, bias]
    return _FusedMLPJet.apply(x, directions, n_jet, list(model.activations), layout, *params)


# ---------------------------------------------------------------------------------------------
# Composite Taylor propagation (ordinary autograd ops): ModifiedMLP, MLP with learnable
# activations. State: value (N, H); d1 (K, N, H) or broadcastable (K, 1, H) after an input layer;
# d2 (S, N, H), or None while it is identically zero.


@dataclass
class _State:
    value: Tensor
    d1: Tensor
    d2: Tensor | None


def _input_linear(layer: nn.Linear, x: Tensor, directions: Tensor) -> _State:
    """Linear layer on the inputs: the derivative of x along v_k is v_k, so d1 is v_k W^T."""
    columns = (directions @ layer.weight.t()).unsqueeze(1)
    return _State(F.linear(x, layer.weight, layer.bias), columns, None)


def _linear(layer: nn.Linear, state: _State) -> _State:
    weight_t = layer.weight.t()
    d2 = None if state.d2 is None else state.d2 @ weight_t
    return _State(F.linear(state.value, layer.weight, layer.bias), state.d1 @ weight_t, d2)


def _activation(module: nn.Module, state: _State, layout: _SlabLayout) -> _State:
    """Chain rule: d1' = s' d1, d2' = s'' d1^2 + s' d2 (pure second derivatives)."""
    second = layout.num_second > 0
    terms = activation_derivatives(module, state.value, 2 if second else 1)
    d1 = terms[1] * state.d1
    if not second:
        return _State(terms[0], d1, None)
    selected = state.d1[layout.coords]
    d2 = terms[2] * selected.square()
    if state.d2 is not None:
        d2 = torch.addcmul(d2, terms[1], state.d2)
    return _State(terms[0], d1, d2)


def _affine(scale: Tensor, shift: Tensor, state: _State) -> _State:
    d2 = None if state.d2 is None else state.d2 * scale
    return _State(torch.addcmul(shift, state.value, scale), state.d1 * scale, d2)


def _gate(u: _State, v: _State, z: _State, layout: _SlabLayout) -> _State:
    """Product rule for h = u + z (v - u) = (1 - z) u + z v.

    u, v and z come out of activations, so their d2 are all present when second is requested.
    """
    delta_value = v.value - u.value
    delta_d1 = v.d1 - u.d1
    value = torch.addcmul(u.value, z.value, delta_value)
    d1 = u.d1 + z.d1 * delta_value + z.value * delta_d1
    if layout.num_second == 0:
        return _State(value, d1, None)
    coords = layout.coords
    # d2h = d2u + d2z (v - u) + 2 dz d(v - u) + z d2(v - u)
    d2 = u.d2 + z.d2 * delta_value + 2 * z.d1[coords] * delta_d1[coords]
    return _State(value, d1, torch.addcmul(d2, z.value, v.d2 - u.d2))


def _mlp_composite(model: MLP, x: Tensor, directions: Tensor, layout: _SlabLayout) -> _State:
    state = _input_linear(model.layers[0], x, directions)
    for i, activation in enumerate(model.activations):
        if i > 0:
            state = _linear(model.layers[i], state)
        state = _activation(activation, state, layout)
        if model.norms is not None and _is_batchnorm(model.norms[i]):
            state = _affine(*_eval_batchnorm_affine(model.norms[i]), state)
    return _linear(model.layers[-1], state)


def _modified_mlp_composite(
    model: ModifiedMLP, x: Tensor, directions: Tensor, layout: _SlabLayout
) -> _State:
    u = _activation(model.activation_u, _input_linear(model.encoder_u, x, directions), layout)
    v = _activation(model.activation_v, _input_linear(model.encoder_v, x, directions), layout)
    h: _State | None = None
    for gate, activation in zip(model.gates, model.gate_activations, strict=True):
        pre = _input_linear(gate, x, directions) if h is None else _linear(gate, h)
        h = _gate(u, v, _activation(activation, pre, layout), layout)
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


def estimated_costs(directions: int, outputs: int, num_second: int) -> dict[str, int]:
    """Hidden-layer matrix products per jet point of one training step, per method (module
    docs), for derivatives along ``directions`` directions."""
    return {
        "taylor": 3 * (1 + directions + num_second),
        "autograd": 3 + 3 * outputs + 6 * outputs * num_second,
    }


def _auto_method(model: nn.Module, directions: int, num_second: int) -> str:
    """Taylor where supported and not estimated costlier than nested autograd, else autograd."""
    if taylor_unsupported_reason(model) is not None:
        return "autograd"
    costs = estimated_costs(directions, model.out_features, num_second)
    return "taylor" if costs["taylor"] <= costs["autograd"] else "autograd"


def _has_trainable_parameters(modules: Sequence[nn.Module]) -> bool:
    return any(p.requires_grad for module in modules for p in module.parameters())


def _check_model_inputs(model: nn.Module, x: Tensor) -> None:
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


def _taylor_jet(
    model: nn.Module,
    x: Tensor,
    value_points: Tensor | None,
    directions: Tensor | None,
    requested: tuple[int, ...],
) -> tuple[Jet, Tensor | None]:
    _check_model_inputs(model, x)
    # The input layer's derivative slabs are v_k W^T: the axes are the identity matrix here.
    matrix = (
        torch.eye(x.shape[1], dtype=x.dtype, device=x.device) if directions is None else directions
    )
    layout = _SlabLayout.build(matrix.shape[0], requested, x.device)
    n_jet = x.shape[0]
    # Under torch.compile the composite ops are used: inductor fuses them and derives the backward.
    if (
        isinstance(model, MLP)
        and not torch.compiler.is_compiling()
        and not _has_trainable_parameters(model.activations)
    ):
        rows = x if value_points is None else torch.cat([x, value_points])
        outputs, slabs = _mlp_fused(model, rows, matrix, n_jet, layout)
        value, d1, d2 = outputs[:n_jet], slabs[layout.first], slabs[layout.second]
        values = None if value_points is None else outputs[n_jet:]
    else:
        if isinstance(model, MLP):
            state = _mlp_composite(model, x, matrix, layout)
        else:
            state = _modified_mlp_composite(model, x, matrix, layout)
        value, d1, d2 = state.value, state.d1, state.d2
        values = None if value_points is None else model(value_points)
    d2 = _scatter_second(d2, value, requested, layout.dims)
    jet = Jet(value, d1.permute(1, 2, 0), d2, requested, directions)
    return jet, values


def _scatter_second(
    d2: Tensor | None, value: Tensor, requested: tuple[int, ...], dims: int
) -> Tensor:
    """(S, N, C) second derivatives of the requested directions -> (N, C, K) with zeros."""
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


def _autograd_jet(
    model: nn.Module,
    x: Tensor,
    value_points: Tensor | None,
    directions: Tensor | None,
    requested: tuple[int, ...],
) -> tuple[Jet, Tensor | None]:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "input_jet(method='autograd') needs autograd, which inference mode disables; "
            "disable it (Lightning: Trainer(inference_mode=False)) or use method='taylor'"
        )
    axes = directions is None
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
            along = gradient if axes else gradient @ directions.t()  # (N, K)
            first_columns.append(along)
            pure_second = []
            for k in range(along.shape[1]):
                if k not in requested:
                    pure_second.append(zero)
                elif axes:
                    pure_second.append(_grad(along[:, k], x_in)[:, k])
                else:
                    pure_second.append(_grad(along[:, k], x_in) @ directions[k])
            second_columns.append(torch.stack(pure_second, dim=-1))
    values = None if value_points is None else model(value_points)
    jet = Jet(
        value,
        torch.stack(first_columns, dim=1),
        torch.stack(second_columns, dim=1),
        requested,
        directions,
    )
    return jet, values


# ---------------------------------------------------------------------------------------------
# Public entry points.


def _validate_points(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (N, D), got {shape}")
    return x


def _validate_directions(directions: object, x: Tensor) -> Tensor | None:
    """The (K, D) direction matrix in x's dtype and device; None for the input coordinate axes
    (not given, or given as the identity)."""
    dims = x.shape[1]
    if directions is None:
        return None
    matrix = torch.as_tensor(directions, dtype=x.dtype, device=x.device)
    if matrix.dim() != 2 or matrix.shape[0] == 0 or matrix.shape[1] != dims:
        raise ValueError(
            f"directions must have shape (K, {dims}) with K >= 1 (one row per direction in the "
            f"{dims} input coordinates), got {tuple(matrix.shape)}"
        )
    if matrix.requires_grad:
        raise ValueError("directions are constants; pass a tensor that does not require grad")
    if not torch.isfinite(matrix).all():
        raise ValueError(f"directions must be finite, got {matrix.tolist()}")
    if matrix.shape[0] == dims and torch.equal(
        matrix, torch.eye(dims, dtype=x.dtype, device=x.device)
    ):
        return None
    return matrix


def _validate(second_order: Sequence[int], method: str, count: int) -> tuple[int, ...]:
    """Sorted second-order direction indices, checked against the ``count`` directions."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    requested = tuple(second_order)
    for k in requested:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
            raise ValueError(
                f"second_order entries must be direction indices in 0..{count - 1} (input "
                f"coordinates unless directions are given), got {k!r} in {requested}"
            )
    if len(set(requested)) != len(requested):
        raise ValueError(f"second_order has repeated coordinates: {requested}")
    return tuple(sorted(requested))


def jet_and_values(
    model: nn.Module,
    x: Tensor,
    value_points: Tensor | None,
    second_order: Sequence[int] = (),
    method: str = "auto",
    directions: Tensor | Sequence[Sequence[float]] | None = None,
) -> tuple[Jet, Tensor | None]:
    """``input_jet(model, x, ...)`` and the outputs of ``model`` at ``value_points`` (M, D).

    Loss terms that only compare values (initial and boundary conditions) pass their points
    here: the fused Taylor path runs them through the same layer calls as the jet points,
    the other paths through one plain forward pass. Returns (jet, values (M, C) or None).
    """
    x = _validate_points(x, "x")
    if value_points is not None:
        value_points = _validate_points(value_points, "value_points")
        if value_points.shape[1] != x.shape[1] or value_points.dtype != x.dtype:
            raise ValueError(
                f"value_points {tuple(value_points.shape)} {value_points.dtype} must match x "
                f"{tuple(x.shape)} {x.dtype} in coordinates and dtype"
            )
    directions = _validate_directions(directions, x)
    count = x.shape[1] if directions is None else directions.shape[0]
    requested = _validate(second_order, method, count)
    if method == "auto":
        method = _auto_method(model, count, len(requested))
    if method == "autograd":
        return _autograd_jet(model, x, value_points, directions, requested)
    reason = taylor_unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"input_jet(method='taylor'): {reason}")
    return _taylor_jet(model, x, value_points, directions, requested)


def input_jet(
    model: nn.Module,
    x: Tensor,
    second_order: Sequence[int] = (),
    method: str = "auto",
    directions: Tensor | Sequence[Sequence[float]] | None = None,
) -> Jet:
    """Output of ``model`` at ``x`` (N, D) with first derivatives along every direction and pure
    second derivatives along the requested ones.

    ``directions`` (K, D): the directions v_k (default: the D input coordinate axes); the jet
    holds du/dv_k = grad u . v_k and, for k in ``second_order``, v_k^T (Hessian u) v_k. A PDE
    residual that is one directional derivative (advection: u_t + beta u_x is the derivative
    along (beta, 1) in (x, t)) needs a single direction instead of all D axes.

    The result keeps the graph to the model parameters (create_graph semantics) for first-order
    training gradients. ``method``: ``"autograd"`` (nested reverse mode), ``"taylor"``
    (layer-wise forward propagation; ValueError for unsupported models, including BatchNorm in
    training mode) or ``"auto"`` (the cheaper of the two by ``estimated_costs`` where Taylor
    mode supports the model, else autograd; both give the same jet). With BatchNorm in
    training mode, autograd returns derivatives of the batch-coupled outputs (d sum_j u_j / dx_i),
    as nested autograd always did. The fused MLP path back-propagates once: differentiating its
    parameter gradients again (double backward) is not supported.
    """
    return jet_and_values(model, x, None, second_order, method, directions)[0]
