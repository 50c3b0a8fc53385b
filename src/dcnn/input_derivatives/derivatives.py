"""Input derivatives of networks for physics-informed losses.

``input_jet`` returns the network output together with its first derivatives along K directions
(by default the input coordinate axes) and its pure second derivatives along requested ones,
keeping the graph to the model parameters so that residual losses built from them can be
back-propagated. ``jet_and_values`` also returns the outputs at value-only points (initial and
boundary sets), which the fused path runs through the same layer calls.

Methods:

* ``"autograd"`` (reference): nested reverse-mode ``torch.autograd.grad`` with ``create_graph``.
* ``"taylor"``: forward propagation of (value, d1, d2) layer by layer through the known
  architectures (:mod:`dcnn.input_derivatives.taylor`), so training needs one first-order
  backward pass instead of double backprop. The derivatives travel as one ``(K + S, n, H)``
  tensor of "slabs" (K first derivatives, S pure second derivatives); a plain MLP runs one fused
  autograd function with a hand-written backward pass, other models compose ordinary torch ops.

* ``"auto"``: the method with the smaller estimated cost (below) where the model supports Taylor
  mode, else autograd.

Cost, in matrix products of a hidden layer per jet point (the products dominate on CPU and GPU),
for K directions, C outputs and S requested second derivatives, counting the training backward
pass: Taylor mode carries 1 + K + S slabs through the forward pass and back, and each slab's
backward needs two products (input and weight gradients): 3 (1 + K + S). Nested reverse mode runs
the forward pass (3 with its backward), one reverse sweep per output (3 each) and one sweep
through forward and reverse graph per output and second derivative (6 each): 3 + 3 C + 6 C S.
So for one output and one direction (advection: u_t + beta u_x is the derivative along (beta, 1))
both do the same matrix work, and the fused path wins by fewer elementwise passes, kernel calls
and allocations. Measured on a 2-core CPU with the 6 x 40 tanh MLP of PDEBench and its point
counts (``benchmarks/pinn_problem_steps.py``; figures in the README), full training steps are
faster with Taylor mode for all three PDEs, most for 2D diffusion-reaction (two second
derivatives).

Coordinate order follows PDEBench: 1D problems x = (x, t); 2D problems x = (x, y, t).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dcnn.input_derivatives.slab_layout import SlabLayout
from dcnn.input_derivatives.taylor import taylor_outputs, taylor_unsupported_reason

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
    layout = SlabLayout.build(matrix.shape[0], requested, x.device)
    value, d1, d2, values = taylor_outputs(model, x, value_points, matrix, layout)
    d2 = _scatter_second(d2, value, requested, layout.dims)
    return Jet(value, d1.permute(1, 2, 0), d2, requested, directions), values


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
