"""Taylor-mode (forward) propagation of input derivatives through MLP and ModifiedMLP.

The value travels with K + S derivative slabs (:mod:`~dcnn.input_derivatives.slab_layout`), layer
by layer, so training needs one first-order backward pass instead of double backprop:

* :class:`~dcnn.models.mlp.MLP` with parameter-free activations runs the fused pass of
  :mod:`dcnn.input_derivatives.fused_mlp` (a hand-written backward, C++ on CPU);
* other MLPs and :class:`~dcnn.models.mlp.ModifiedMLP` compose ordinary differentiable torch ops
  (this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcnn.input_derivatives.activation_derivatives import activation_derivatives
from dcnn.input_derivatives.fused_mlp import eval_batchnorm_affine, is_batchnorm, mlp_fused
from dcnn.input_derivatives.slab_layout import SlabLayout
from dcnn.models.mlp import MLP, ModifiedMLP

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


def _activation(module: nn.Module, state: _State, layout: SlabLayout) -> _State:
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


def _gate(u: _State, v: _State, z: _State, layout: SlabLayout) -> _State:
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


def _mlp_composite(model: MLP, x: Tensor, directions: Tensor, layout: SlabLayout) -> _State:
    state = _input_linear(model.layers[0], x, directions)
    for i, activation in enumerate(model.activations):
        if i > 0:
            state = _linear(model.layers[i], state)
        state = _activation(activation, state, layout)
        if model.norms is not None and is_batchnorm(model.norms[i]):
            state = _affine(*eval_batchnorm_affine(model.norms[i]), state)
    return _linear(model.layers[-1], state)


def _modified_mlp_composite(
    model: ModifiedMLP, x: Tensor, directions: Tensor, layout: SlabLayout
) -> _State:
    u = _activation(model.activation_u, _input_linear(model.encoder_u, x, directions), layout)
    v = _activation(model.activation_v, _input_linear(model.encoder_v, x, directions), layout)
    h: _State | None = None  # H_1 = X (first_hidden="code"): the first gate reads the inputs
    if model.input_layer is not None:  # first_hidden="paper": H_1 = phi(X W_1 + b_1)
        h = _activation(
            model.input_activation, _input_linear(model.input_layer, x, directions), layout
        )
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
            if not is_batchnorm(norm):
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


def _has_trainable_parameters(modules: Sequence[nn.Module]) -> bool:
    return any(p.requires_grad for module in modules for p in module.parameters())


def taylor_outputs(
    model: nn.Module,
    x: Tensor,
    value_points: Tensor | None,
    directions: Tensor,
    layout: SlabLayout,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Taylor-mode propagation through a supported model (see ``taylor_unsupported_reason``).

    Returns the outputs at x (n, C), the first-derivative slabs (K, n, C) along the rows of
    ``directions`` (K, D), the second-derivative slabs (S, n, C) of ``layout.requested`` (None
    while identically zero) and the outputs at ``value_points`` (M, C) or None.
    """
    n_jet = x.shape[0]
    # Under torch.compile the composite ops are used: inductor fuses them and derives the backward.
    if (
        isinstance(model, MLP)
        and not torch.compiler.is_compiling()
        and not _has_trainable_parameters(model.activations)
    ):
        rows = x if value_points is None else torch.cat([x, value_points])
        outputs, slabs = mlp_fused(model, rows, directions, n_jet, layout)
        values = None if value_points is None else outputs[n_jet:]
        return outputs[:n_jet], slabs[layout.first], slabs[layout.second], values
    if isinstance(model, MLP):
        state = _mlp_composite(model, x, directions, layout)
    else:
        state = _modified_mlp_composite(model, x, directions, layout)
    values = None if value_points is None else model(value_points)
    return state.value, state.d1, state.d2, values
