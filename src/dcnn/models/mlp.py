"""Fully connected networks for physics-informed training.

Plain ``torch.nn`` modules built from constructor arguments (no Hydra, no Lightning). The layer
structure is kept explicit (``ModuleList``s of ``Linear`` and activation modules) so that
activation surgery can swap modules by name and the Taylor-mode derivative propagation in
:mod:`dcnn.input_derivatives.derivatives` can walk the layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

ActivationFactory = Callable[[], nn.Module]

INITIALIZATIONS = ("glorot_normal", "glorot_uniform", "torch_default")
NORMALIZATIONS = ("batchnorm",)


def _init_linear(layer: nn.Linear, init: str) -> None:
    """Initialise weights by ``init``; Glorot variants use zero biases (PDEBench, Wang et al.)."""
    if init == "torch_default":
        return
    if init == "glorot_normal":
        nn.init.xavier_normal_(layer.weight)
    elif init == "glorot_uniform":
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def _check_common_arguments(
    in_features: int, out_features: int, hidden: int, depth: int, init: str
) -> None:
    for name, value in (
        ("in_features", in_features),
        ("out_features", out_features),
        ("hidden", hidden),
        ("depth", depth),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if init not in INITIALIZATIONS:
        raise ValueError(f"init must be one of {INITIALIZATIONS}, got {init!r}")


def _make_activation(activation: ActivationFactory | None) -> nn.Module:
    module = nn.Tanh() if activation is None else activation()
    if not isinstance(module, nn.Module):
        raise TypeError(
            "activation must be a zero-argument callable returning an nn.Module "
            f"(e.g. nn.Tanh), but it returned {type(module).__name__}"
        )
    return module


class MLP(nn.Module):
    """Multilayer perceptron ``in -> depth x [hidden] -> out``.

    Layout: ``layers[i]`` (Linear) -> ``activations[i]`` -> ``norms[i]`` (BatchNorm1d, optional)
    for the ``depth`` hidden layers, then the output Linear ``layers[depth]``. The defaults
    (6 x 40, tanh, Glorot normal, zero biases) are the PDEBench PINN baseline.

    ``normalization="batchnorm"`` puts a registered ``BatchNorm1d`` after each hidden activation
    (the paper's PINN variant, with the layers trained, moved by ``.to()`` and switched by
    ``.eval()``, unlike the authors' unregistered ones).
    """

    default_activation_scope = "all"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 40,
        depth: int = 6,
        activation: ActivationFactory | None = None,
        normalization: str | None = None,
        init: str = "glorot_normal",
    ) -> None:
        super().__init__()
        _check_common_arguments(in_features, out_features, hidden, depth, init)
        if normalization == "none":
            normalization = None
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be None, 'none' or one of {NORMALIZATIONS}, "
                f"got {normalization!r}"
            )
        self.in_features = in_features
        self.out_features = out_features
        widths = [in_features] + [hidden] * depth + [out_features]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        for layer in self.layers:
            _init_linear(layer, init)
        self.activations = nn.ModuleList(_make_activation(activation) for _ in range(depth))
        self.norms = (
            nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(depth))
            if normalization == "batchnorm"
            else None
        )

    @property
    def activation_scopes(self) -> dict[str, list[str]]:
        """Module-name prefixes for activation surgery: everything, or the last hidden one."""
        return {"all": [""], "output": [f"activations.{len(self.activations) - 1}"]}

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for i, activation in enumerate(self.activations):
            h = activation(self.layers[i](h))
            if self.norms is not None:
                h = self.norms[i](h)
        return self.layers[-1](h)


FIRST_HIDDEN = ("code", "paper")


class ModifiedMLP(nn.Module):
    """Improved fully connected architecture of Wang, Teng & Perdikaris (2020).

    With ``L = depth`` gate layers, ``phi`` the activation and inputs ``X``::

        U = phi(X W_u + b_u)                    encoder_u, activation_u
        V = phi(X W_v + b_v)                    encoder_v, activation_v
        H_1 = X                                 first_hidden="code" (default)
        H_1 = phi(X W_1 + b_1)                  first_hidden="paper": input_layer, input_activation
        Z_k = phi(H_k Wz_k + bz_k)              gates[k-1], gate_activations[k-1], k = 1..L
        H_{k+1} = (1 - Z_k) * U + Z_k * V
        output = H_{L+1} W + b                  output

    The paper writes ``H_1 = phi(X Wz_1 + bz_1)`` and then ``Z_1 = phi(H_1 Wz_1 + bz_1)``, which
    uses ``Wz_1`` with two incompatible shapes. ``first_hidden`` picks a reading:

    * ``"code"`` (default), the authors' code: ``H_1 = X``, so the first gate reads the inputs
      directly; ``Wz_1`` is ``in x hidden`` and ``Wz_2..Wz_L`` are ``hidden x hidden``. The
      paper's Table 2 numbers come from this code.
    * ``"paper"``, the paper's formula for ``H_1``: a dense layer of its own (here ``W_1``, the
      paper's first ``Wz_1``) maps the inputs to ``H_1 = phi(X W_1 + b_1)``; then every gate
      ``Wz_1..Wz_L`` is ``hidden x hidden``. This adds ``hidden * (hidden + 1)`` parameters
      (``W_1`` is ``in x hidden`` like the code's first gate, plus one more square gate).

    ``depth`` counts the gate layers in both. The gate convention follows the paper's formula
    (the code's ``Z * U + (1 - Z) * V`` is the same family with U and V swapped).
    """

    default_activation_scope = "all"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 50,
        depth: int = 3,
        activation: ActivationFactory | None = None,
        init: str = "glorot_normal",
        first_hidden: str = "code",
    ) -> None:
        super().__init__()
        _check_common_arguments(in_features, out_features, hidden, depth, init)
        if first_hidden not in FIRST_HIDDEN:
            raise ValueError(
                f"first_hidden must be one of {FIRST_HIDDEN} (H_1 = X as in the authors' code, or "
                f"the paper's H_1 = phi(X W_1 + b_1)), got {first_hidden!r}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.first_hidden = first_hidden
        self.encoder_u = nn.Linear(in_features, hidden)
        self.encoder_v = nn.Linear(in_features, hidden)
        self.activation_u = _make_activation(activation)
        self.activation_v = _make_activation(activation)
        # The paper's H_1 layer; None (no parameters, no state-dict keys) in the code's form.
        self.input_layer = nn.Linear(in_features, hidden) if first_hidden == "paper" else None
        self.input_activation = _make_activation(activation) if first_hidden == "paper" else None
        first_width = in_features if first_hidden == "code" else hidden
        gate_widths = [first_width] + [hidden] * depth
        self.gates = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(gate_widths[:-1], gate_widths[1:], strict=True)
        )
        self.gate_activations = nn.ModuleList(_make_activation(activation) for _ in range(depth))
        self.output = nn.Linear(hidden, out_features)
        for layer in (self.encoder_u, self.encoder_v, *self._trunk_layers()):
            _init_linear(layer, init)

    def _trunk_layers(self) -> list[nn.Linear]:
        """The layers from the inputs to the output apart from the encoders U and V."""
        first = [] if self.input_layer is None else [self.input_layer]
        return [*first, *self.gates, self.output]

    def annealing_weights(self) -> list[nn.Parameter]:
        """The weight matrices the authors' code balances loss terms over (weighting.form=code):
        gates and output; their code keeps the encoders U and V outside that list. Their list
        is the trunk, every layer from X to the output, with the encoders on the side; the
        paper form's H_1 layer is a trunk layer (the one that reads X, as the code's first gate
        does), not an encoder, so it is listed too."""
        return [layer.weight for layer in self._trunk_layers()]

    @property
    def activation_scopes(self) -> dict[str, list[str]]:
        """Module-name prefixes for activation surgery: everything, or the last gate's one."""
        return {"all": [""], "output": [f"gate_activations.{len(self.gate_activations) - 1}"]}

    def forward(self, x: Tensor) -> Tensor:
        u = self.activation_u(self.encoder_u(x))
        v = self.activation_v(self.encoder_v(x))
        h = x if self.input_layer is None else self.input_activation(self.input_layer(x))
        for gate, activation in zip(self.gates, self.gate_activations, strict=True):
            z = activation(gate(h))
            h = torch.lerp(u, v, z)  # (1 - z) * u + z * v
        return self.output(h)
