"""The fused Taylor-mode pass through :class:`~dcnn.models.mlp.MLP`: one autograd Function with a
hand-written backward pass, so training needs one first-order backward instead of double backprop.

Eval-mode BatchNorm is folded into the next Linear layer. Value-only points (initial and boundary
sets) share its matrix products with the jet points, and its large tensors come from a workspace
reused from step to step. On CPU, with tanh or IReLU, both passes are single C++ calls
(:mod:`dcnn.input_derivatives.native`), elsewhere torch ops.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dcnn.input_derivatives.activation_derivatives import activation_derivatives
from dcnn.input_derivatives.native import ACTIVATION_CODES, native_ops, native_unsupported_reason
from dcnn.input_derivatives.slab_layout import SlabLayout
from dcnn.models.mlp import MLP


def _slab_dot(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """sum_m a[m] * b[m] over the slab axis into ``out``, accumulated in place."""
    torch.mul(a[0], b[0], out=out)
    for m in range(1, a.shape[0]):
        out.addcmul_(a[m], b[m])
    return out


def _add_at(target: Tensor, selector: slice | Tensor, values: Tensor) -> None:
    """target[selector] += values along dim 0 (in place, no autograd)."""
    if isinstance(selector, slice):
        target[selector] += values
    else:
        target.index_add_(0, selector, values)


# ---------------------------------------------------------------------------------------------
# Workspace of the fused MLP pass.


def _key(shape: tuple[int, ...], tensor: Tensor, inference: bool) -> tuple:
    # Inference tensors cannot be updated outside inference mode: they are kept apart.
    return shape, tensor.dtype, tensor.device, inference


class Workspace:
    """Free tensors of the fused pass by (shape, dtype, device), reused from step to step.

    On CPU, glibc hands a freed multi-megabyte tensor back to the operating system, so a training
    step that allocates its activations afresh page-faults all of them in again; that cost up to
    a third of a PINN step on a 2-core machine (``benchmarks/pinn_derivatives.py``). A forward pass
    takes its tensors from here; they come back when autograd frees its graph. Bounded: at most
    ``max_free`` free tensors per shape and ``max_shapes`` shapes, least recently used dropped.
    """

    def __init__(self, max_free: int = 32, max_shapes: int = 16) -> None:
        self.max_free, self.max_shapes = max_free, max_shapes
        self._free: OrderedDict[tuple, list[Tensor]] = OrderedDict()
        self._lock = threading.Lock()  # backward passes may run on autograd's device threads

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        key = _key(shape, like, torch.is_inference_mode_enabled())
        with self._lock:
            free = self._free.get(key)
            if free:
                self._free.move_to_end(key)
                return free.pop()
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def give_back(self, tensors: Iterable[Tensor]) -> None:
        """Return tensors taken from here; their contents may be overwritten from now on."""
        with self._lock:
            for tensor in tensors:
                key = _key(tuple(tensor.shape), tensor, tensor.is_inference())
                free = self._free.setdefault(key, [])
                if len(free) < self.max_free:
                    free.append(tensor)
            while len(self._free) > self.max_shapes:
                self._free.popitem(last=False)

    def clear(self) -> None:
        """Drop every free tensor (frees their memory)."""
        with self._lock:
            self._free.clear()

    def free_tensors(self) -> int:
        with self._lock:
            return sum(len(free) for free in self._free.values())


WORKSPACE = Workspace()


class _Taker:
    """Takes tensors from the workspace and remembers them, to give them all back at once."""

    def __init__(self, like: Tensor) -> None:
        self.like, self.taken = like, []

    def __call__(self, *shape: int) -> Tensor:
        tensor = WORKSPACE.take(shape, self.like)
        self.taken.append(tensor)
        return tensor


# ---------------------------------------------------------------------------------------------
# Fused Taylor propagation for MLP: hand-written backward pass.
#
# Each hidden layer works on one row block of R = N + (K + S) n rows: N value rows (the first n
# of them jet points, then value-only points) and K + S derivative slabs of n rows each. With
# inputs [h; p] it computes pre = [h W^T + b; p W^T] in two products into one block, then
#   out = [s(z); s'(z) pre_slabs], out_second += s''(z) pre_selected^2,
# so its weight gradient and its input gradient are one matrix product each over all R rows.
# The first layer sees x, whose derivative along direction v_k is v_k: its first-derivative slab
# k is s'(z) times the column v_k W^T, the same for every row.


@dataclass
class _Layer:
    """What the backward pass needs of one activation layer."""

    inputs: Tensor  # rows the layer's Linear read (x for the first layer)
    pre: Tensor  # pre-activation rows: c z (N rows, c from _pre_scale), then the slabs' p W^T
    value: Tensor  # s(z), (N, H)
    slope: Tensor  # s'(z), (N, H)
    higher: tuple[Tensor, ...]  # (s'', s''') at all N rows; () where derived from value, slope
    # s'' at the jet rows as the forward pass formed it (second derivatives); read back for tanh
    jet_curvature: Tensor | None = None


def _uses_sigmoid_tanh(activation: nn.Module, device: torch.device) -> bool:
    # tanh(z) = 2 sigmoid(2 z) - 1: torch's vectorised CPU tanh takes 2.5x as long as sigmoid and
    # the two passes after it (AVX2, benchmarks/pinn_derivatives.py).
    return type(activation) is nn.Tanh and device.type == "cpu"


def _pre_scale(activation: nn.Module, device: torch.device) -> float:
    """The factor c in the value rows' pre-activations c z: the 2 of sigmoid(2 z) rides in the
    layer's matrix product."""
    return 2.0 if _uses_sigmoid_tanh(activation, device) else 1.0


def _activate(
    activation: nn.Module, scaled_z: Tensor, value_out: Tensor, order: int, take: _Taker
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Writes s(z) into ``value_out`` given c z (c from ``_pre_scale``); returns s'(z) and the
    higher terms up to ``order`` (none for tanh, whose terms derive from s and s')."""
    if type(activation) is nn.Tanh:
        slope = take(*scaled_z.shape)
        if _uses_sigmoid_tanh(activation, scaled_z.device):
            torch.sigmoid(scaled_z, out=slope)
            torch.add(slope.new_full((), -1.0), slope, alpha=2, out=value_out)
        else:
            torch.tanh(scaled_z, out=value_out)
        torch.addcmul(slope.new_ones(()), value_out, value_out, value=-1, out=slope)
        return slope, ()
    terms = activation_derivatives(activation, scaled_z, order)
    value_out.copy_(terms[0])
    return terms[1], terms[2:]


def _jet_terms(layer: _Layer, n: int, third: bool, take: _Taker) -> tuple[Tensor, Tensor | None]:
    """s''(z) and (if ``third``) s'''(z) at the n jet rows."""
    if layer.higher:
        return layer.higher[0][:n], layer.higher[1][:n] if third else None
    # tanh: s'' = -2 s s', s''' = s' (4 - 6 s')
    value, slope = layer.value[:n], layer.slope[:n]
    second = layer.jet_curvature
    if second is None:
        second = torch.addcmul(value.new_zeros(()), value, slope, value=-2, out=take(*value.shape))
    if not third:
        return second, None
    return second, torch.mul(slope, 4, out=take(*slope.shape)).addcmul_(slope, slope, value=-6)


def _chain_values(grad_values: Tensor, layer: _Layer, n: int, coupling: Tensor) -> None:
    """grad_values (w.r.t. s(z)) becomes the gradient w.r.t. z, in place: s'(z) grad_values
    plus s''(z) coupling at the jet rows."""
    if layer.higher:
        grad_values.mul_(layer.slope)
        grad_values[:n].addcmul_(layer.higher[0][:n], coupling)
    else:  # tanh: s'' = -2 s s', so this is s' (grad_values - 2 s coupling)
        grad_values[:n].addcmul_(layer.value[:n], coupling, value=-2)
        grad_values.mul_(layer.slope)


class _FusedMLPJet(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        directions: Tensor,
        n_jet: int,
        activations: Sequence[nn.Module],
        layout: SlabLayout,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        weights, biases = params[0::2], params[1::2]
        second = layout.num_second > 0
        order = 3 if second else 2  # backward needs one order more than forward
        rows, n = x.shape[0], n_jet
        block_rows = rows + layout.slabs * n
        take = _Taker(x)

        scale = _pre_scale(activations[0], x.device)
        z = take(rows, weights[0].shape[0])
        torch.addmm(biases[0], x, weights[0].t(), beta=scale, alpha=scale, out=z)
        out = take(block_rows, z.shape[1])
        slope, higher = _activate(activations[0], z, out[:rows], order, take)
        layers = [_Layer(x, z, out[:rows], slope, higher)]
        columns = (directions @ weights[0].t()).unsqueeze(1)  # (K, 1, H)
        slabs = out[rows:].view(layout.slabs, n, -1)
        torch.mul(slope[:n], columns, out=slabs[layout.first])
        if second:
            curvature, _ = _jet_terms(layers[0], n, False, take)
            layers[0].jet_curvature = curvature
            torch.mul(curvature, columns[layout.coords].square(), out=slabs[layout.second])
        h = out
        for weight, bias, activation in zip(
            weights[1:-1], biases[1:-1], activations[1:], strict=True
        ):
            pre = take(block_rows, weight.shape[0])
            scale = _pre_scale(activation, x.device)
            torch.addmm(bias, h[:rows], weight.t(), beta=scale, alpha=scale, out=pre[:rows])
            torch.mm(h[rows:], weight.t(), out=pre[rows:])
            out = take(*pre.shape)
            slope, higher = _activate(activation, pre[:rows], out[:rows], order, take)
            layer = _Layer(h, pre, out[:rows], slope, higher)
            pre_slabs = pre[rows:].view(layout.slabs, n, -1)
            out_slabs = out[rows:].view(layout.slabs, n, -1)
            torch.mul(pre_slabs, slope[:n], out=out_slabs)
            if second:
                curvature, _ = _jet_terms(layer, n, False, take)
                layer.jet_curvature = curvature
                out_slabs[layout.second].addcmul_(curvature, pre_slabs[layout.coords].square())
            layers.append(layer)
            h = out
        value = torch.addmm(biases[-1], h[:rows], weights[-1].t())
        derivatives = torch.matmul(h[rows:].view(layout.slabs, n, -1), weights[-1].t())
        ctx.save_for_backward(x, directions, *params)
        ctx.layers, ctx.last, ctx.layout, ctx.n_jet = layers, h, layout, n
        # The outputs are fresh tensors: the taken ones go back once autograd frees the graph
        # (at once when no graph is recorded), so backward may run more than once (retain_graph).
        weakref.finalize(ctx, WORKSPACE.give_back, take.taken)
        return value, derivatives

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor, grad_derivatives: Tensor):
        x, directions, *params = ctx.saved_tensors
        weights = params[0::2]
        layout: SlabLayout = ctx.layout
        second = layout.num_second > 0
        rows, n = x.shape[0], ctx.n_jet
        take = _Taker(x)
        grad_weights: list[Tensor | None] = [None] * len(weights)
        grad_biases: list[Tensor | None] = [None] * len(weights)

        # Output layer: the gradients of all rows as one (R, C) block.
        outputs = grad_value.shape[1]
        grad_out = take(ctx.last.shape[0], outputs)
        grad_out[:rows] = grad_value
        grad_out[rows:] = grad_derivatives.reshape(-1, outputs)
        grad_weights[-1] = grad_out.t() @ ctx.last
        grad_biases[-1] = grad_value.sum(0)
        grad = take(*ctx.last.shape)
        if outputs == 1:  # a product with an inner size of 1 is slow on CPU: broadcast instead
            torch.mul(grad_out, weights[-1][0], out=grad)
        else:
            torch.mm(grad_out, weights[-1], out=grad)

        for i in range(len(weights) - 2, 0, -1):
            layer: _Layer = ctx.layers[i]
            _activation_backward(grad, layer, rows, n, layout, take)
            grad_weights[i] = grad.t() @ layer.inputs
            grad_biases[i] = grad[:rows].sum(0)
            grad = torch.mm(grad, weights[i], out=take(grad.shape[0], weights[i].shape[1]))

        # First layer: the slabs' pre-activations are the columns v_k W^T shared by all rows.
        layer = ctx.layers[0]
        width = grad.shape[1]
        columns = (directions @ weights[0].t()).unsqueeze(1)
        grad_values = grad[:rows]
        grad_slabs = grad[rows:].view(layout.slabs, n, width)
        grad_first = grad_slabs[layout.first]
        coupling = _slab_dot(grad_first, columns, take(n, width))
        slope_products = torch.mul(grad_first, layer.slope[:n], out=take(*grad_first.shape))
        grad_columns = slope_products.sum(1)  # (K, H)
        if second:  # out_second_k = s''(z) c_k^2 for the columns c_k
            curvature, third = _jet_terms(layer, n, True, take)
            selected = columns[layout.coords]
            grad_second = grad_slabs[layout.second]
            product = _slab_dot(grad_second, selected.square(), take(n, width))
            _add_at(grad_columns, layout.coords, (2 * curvature * selected * grad_second).sum(1))
        _chain_values(grad_values, layer, n, coupling)
        if second:
            grad_values[:n].addcmul_(third, product)
        # x^T G is much faster than G^T x for the few input columns.
        grad_weights[0] = torch.addmm(directions.t() @ grad_columns, x.t(), grad_values).t()
        grad_biases[0] = grad_values.sum(0)
        grad_x = grad_values @ weights[0] if ctx.needs_input_grad[0] else None

        WORKSPACE.give_back(take.taken)
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


def _activation_backward(
    grad: Tensor, layer: _Layer, rows: int, n: int, layout: SlabLayout, take: _Taker
) -> None:
    """Turns the gradient w.r.t. a hidden layer's output rows into the gradient w.r.t. its
    pre-activation rows, in place.

    out_slab_m = s'(z) pre_m gives d/dz = s''(z) pre_m on every slab; with second derivatives,
    out_second_k += s''(z) pre_k^2 adds s'''(z) pre_k^2 to d/dz and 2 s''(z) pre_k to d/dpre_k.
    """
    width = grad.shape[1]
    grad_values = grad[:rows]
    grad_slabs = grad[rows:].view(layout.slabs, n, width)
    pre_slabs = layer.pre[rows:].view(layout.slabs, n, width)
    coupling = _slab_dot(grad_slabs, pre_slabs, take(n, width))
    second = layout.num_second > 0
    if second:
        curvature, third = _jet_terms(layer, n, True, take)
        selected = pre_slabs[layout.coords]
        grad_second = grad_slabs[layout.second]
        product = _slab_dot(grad_second, selected.square(), take(n, width))
        cross = 2 * curvature * selected * grad_second
    _chain_values(grad_values, layer, n, coupling)
    grad_slabs.mul_(layer.slope[:n])
    if second:
        grad_values[:n].addcmul_(third, product)
        _add_at(grad_slabs, layout.coords, cross)


class _NativeFusedMLPJet(torch.autograd.Function):
    """The fused pass of :class:`_FusedMLPJet` in one C++ call each way
    (:mod:`dcnn.input_derivatives.native`); its large tensors are views of one workspace
    tensor."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        directions: Tensor,
        n_jet: int,
        codes: list[int],
        layout: SlabLayout,
        ops,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        weights, biases = list(params[0::2]), list(params[1::2])
        size = ops.mlp_jet_forward_elements(x.shape[0], n_jet, layout.slabs, codes, weights)
        workspace = WORKSPACE.take((size,), x)
        value, derivatives, *blocks = ops.mlp_jet_forward(
            x, directions, n_jet, codes, list(layout.requested), weights, biases, workspace
        )
        ctx.save_for_backward(x, directions, *params)
        ctx.blocks, ctx.codes, ctx.layout, ctx.n_jet, ctx.ops = blocks, codes, layout, n_jet, ops
        weakref.finalize(ctx, WORKSPACE.give_back, [workspace])
        return value, derivatives

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor, grad_derivatives: Tensor):
        x, directions, *params = ctx.saved_tensors
        weights = list(params[0::2])
        layout: SlabLayout = ctx.layout
        block_rows = x.shape[0] + layout.slabs * ctx.n_jet
        widest = max(weight.shape[0] for weight in weights[:-1])
        scratch = WORKSPACE.take((2 * block_rows * widest,), x)
        grad_x, *grad_params = ctx.ops.mlp_jet_backward(
            grad_value.contiguous(),
            grad_derivatives.contiguous(),
            x,
            directions,
            ctx.n_jet,
            ctx.codes,
            list(layout.requested),
            weights,
            ctx.blocks,
            scratch,
            ctx.needs_input_grad[0],
        )
        WORKSPACE.give_back([scratch])
        needed = ctx.needs_input_grad[6:]
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            None,
            None,
            None,
            None,
            None,
            *(g if need else None for g, need in zip(grad_params, needed, strict=True)),
        )


def eval_batchnorm_affine(norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as h * scale + shift (per feature)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = norm.weight * scale
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def is_batchnorm(norm: nn.Module) -> bool:
    return isinstance(norm, nn.BatchNorm1d)


def mlp_fused(
    model: MLP, x: Tensor, directions: Tensor, n_jet: int, layout: SlabLayout
) -> tuple[Tensor, Tensor]:
    """MLP outputs at all rows of x (N, C) and the (K + S, n_jet, C) derivative slabs of its
    first n_jet rows; BatchNorm after layer i is folded into layer i + 1."""
    params: list[Tensor] = []
    for i, layer in enumerate(model.layers):
        weight, bias = layer.weight, layer.bias
        norm = model.norms[i - 1] if model.norms is not None and i > 0 else None
        if norm is not None and is_batchnorm(norm):
            scale, shift = eval_batchnorm_affine(norm)
            weight, bias = weight * scale, torch.addmv(bias, weight, shift)
        params += [weight, bias]
    activations = list(model.activations)
    if native_unsupported_reason(x, activations) is None:
        ops = native_ops()
        if ops is not None:
            codes = [ACTIVATION_CODES[type(activation)] for activation in activations]
            return _NativeFusedMLPJet.apply(
                x.contiguous(), directions.contiguous(), n_jet, codes, layout, ops, *params
            )
    return _FusedMLPJet.apply(x, directions, n_jet, activations, layout, *params)
