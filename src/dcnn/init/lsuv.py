"""Data-dependent initialisation: layer-sequential unit variance (LSUV) for any model here.

Why. IReLU(x) = max(0, x^2 / 2) is homogeneous of degree two: IReLU(c x) = c^2 IReLU(x). A
layer that preserves the second moment of its input (Glorot, He) therefore maps an activation
scale q of one hidden layer to about q^2 at the next, and q = 1 is an unstable fixed point:
below it the activations vanish doubly exponentially (PDEBench's 6 x 40 MLP with Glorot-normal
weights: 1.4e-2, 5.4e-4, 7.8e-7, 3.5e-12, 7.6e-23, 1.5e-43, a constant network whose PDE residual
is exactly 0), above it they overflow (SchNet's filter networks). No fixed gain can sit on an
unstable fixed point through depth: an error e in log-scale becomes 2^depth e. The scale has to
be set from the actual data, one layer after the other, which is what LSUV (Mishkin & Matas,
"All you need is a good init", 2016) does; ``analytic_gain`` gives the fixed point itself, for
comparison.

What ``lsuv_init`` does. Starting from the model's own initialisation, a batch of real training
inputs runs through the model with forward hooks on every weight layer (``WEIGHT_LAYERS``:
``nn.Linear``, ``nn.Embedding`` and GemNet's ``EfficientBilinear`` and
``CircularBasisDownProjection``; normalization layers, GemNet's fixed scale factors, basis
functions and other parameters are never touched). In forward order (the order of first calls),
each layer is changed, and the batch run again, until its measured scale is within
``tolerance`` of ``target`` (at most ``max_iterations`` times; one change normally suffices):

1. Mean shift (layers with a bias, ``center=True``): each output unit is centred on the batch,
   ``b <- b - mean(y)``. For IReLU this is what makes about half the units active: with raw PINN
   coordinates (x, t >= 0) and zero biases, the sign of a first-layer unit is fixed by the signs
   of its weights, so a unit is active everywhere (a mere quadratic) or nowhere (dead, with zero
   gradient: IReLU' = ReLU). Centred units are active on about half of the batch, and so is the
   second derivative (the unit step) that PDE residuals and force losses differentiate through.
2. Scale: the weight (and the centred bias) are multiplied by one scalar ``c`` per layer (the
   relative structure of the model's own initialisation is kept, as in LSUV).

What is measured. When the layer's output goes straight into an activation module (found by
tensor identity during the forward pass: ``Sequential(Linear, IReLU)``, ``act(lin(x))``,
GemNet's ``Dense``; a removed normalization layer in between is an identity and passes the same
tensor), the measured scale is the root mean square of that activation's output, computed by
applying the activation to the captured pre-activations, and ``c`` solves
``rms(act(c * y)) = target`` on the batch (bisection in log c). Otherwise, or when the target is
out of the activation's range (tanh and other bounded activations: rms < 1 for any input), the
layer's own output is measured (its rms; after centring that is its standard deviation) and
``c = target / rms(y)``. The layer's output is used in those cases because it is all that is
known to be linear in the weight: many outputs are multiplied with filters or gates, summed
over neighbours, or go through inline functions that no hook sees (CGCNN's sigmoid * softplus,
PyG's ``swish``).

Why the activation's second moment, and what that means for IReLU. The next layer sees the
activation including its mean: for random weights, E[(w . a)^2] = sum_i w_i^2 E[a_i^2], so the
second moment (not the standard deviation) is what propagates. For a centred Gaussian
pre-activation of standard deviation s, E[IReLU(s z)^2] = 3 s^4 / 8, so a unit-rms IReLU output
needs s = (8/3)^(1/4) = 1.28 (``analytic_gain(IReLU())``); its mean is s^2 / 4 = 0.41 and its
standard deviation 0.91, its derivative ReLU has rms s / sqrt(2) = 0.90 and the step is 1 on
half the batch: activations, first and second input derivatives are all of unit order. Because
LSUV measures the real batch, the non-Gaussian pre-activations of graph models (sums over
neighbours, products with filters) are handled as well, and errors do not compound with depth:
each layer is set for the inputs it actually receives.

Layers never called on the batch are listed in the report (``unreached``) and logged; so are
layers whose output is identically zero (a zero-initialised output layer such as DimeNet++'s,
kept as the model made it), layers that did not reach the tolerance, and the parameters no
weight layer owns (normalization weights, ForceNet's ``center_W``, basis frequencies).

Determinism and side effects. No random numbers are drawn (the inputs are chosen by the caller;
``training_inputs`` takes the first frames of the seeded training split, or a seeded subset of
PINN points with its own generator), and the global RNG state is restored anyway. Buffers
(BatchNorm running statistics) are restored after the passes, which run in training mode so
that batch statistics are used as in training (dropout, if any, is kept in eval mode). Given the
same model and inputs the result is identical on every DDP process; DDP also broadcasts rank 0's
parameters when it wraps the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dcnn.activations import ACTIVATION_MODULE_TYPES, IntegratedActivation
from dcnn.init.gain import solve_log_scale
from dcnn.models.gemnet_blocks import CircularBasisDownProjection, EfficientBilinear

log = logging.getLogger("dcnn")


def _whole(output: Tensor) -> Tensor:
    return output


def _replace_whole(output: Tensor, new: Tensor) -> Tensor:
    return new


def _first(output: tuple) -> Tensor:
    return output[0]


def _replace_first(output: tuple, new: Tensor) -> tuple:
    return (new, *output[1:])


@dataclass(frozen=True)
class WeightLayer:
    """How LSUV treats one kind of layer: its weight and bias attributes (the part of the output
    they produce must be linear in the weight, and affine in weight and bias together), how to
    take that part from the module's output and how to put a changed one back."""

    weight: str = "weight"
    bias: str | None = None
    output: Callable[[Any], Tensor] = _whole
    replace: Callable[[Any, Tensor], Any] = _replace_whole


# Layer kinds LSUV rescales. A model with another kind of weight layer adds its class here.
WEIGHT_LAYERS: dict[type[nn.Module], WeightLayer] = {
    nn.Linear: WeightLayer(bias="bias"),
    nn.Embedding: WeightLayer(),
    EfficientBilinear: WeightLayer(),
    CircularBasisDownProjection: WeightLayer(output=_first, replace=_replace_first),
}


class InitError(ValueError):
    """An initialisation that cannot be carried out as configured."""


def _spec(module: nn.Module) -> WeightLayer | None:
    for kind in type(module).__mro__:
        if kind in WEIGHT_LAYERS:
            return WEIGHT_LAYERS[kind]
    return None


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers LSUV may rescale, by qualified name (a module registered under two names is
    listed once, under the first)."""
    return {name: module for name, module in model.named_modules() if _spec(module) is not None}


@dataclass
class _Structure:
    """What the first (discovery) pass learned: forward order, calls, following activations."""

    order: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    followers: dict[str, list[nn.Module | None]] = field(default_factory=dict)
    # rms of the layer's output and of the activation after it, as the model made them
    initial: dict[str, tuple[float, float]] = field(default_factory=dict)

    def activation(self, name: str) -> nn.Module | None:
        """The activation module that every call of the layer fed its output to, else None."""
        followers = self.followers.get(name) or [None]
        first = followers[0]
        return first if first is not None and all(f is first for f in followers) else None


def rms(values: Tensor) -> float:
    """Root mean square (0 for an empty tensor)."""
    return float(values.double().square().mean().sqrt()) if values.numel() else 0.0


def _cast_inputs(inputs: Any, dtype: torch.dtype, device: torch.device) -> Any:
    if isinstance(inputs, Tensor):
        return inputs.to(device, dtype) if inputs.is_floating_point() else inputs.to(device)
    if isinstance(inputs, Mapping):
        return {key: _cast_inputs(value, dtype, device) for key, value in inputs.items()}
    return inputs


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype, parameter.device
    return torch.get_default_dtype(), torch.device("cpu")


def _forward(model: nn.Module, inputs: Any, hooks: list[tuple[nn.Module, Callable]]) -> None:
    """One pass of the batch under no_grad with the given forward hooks."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def _discover(model: nn.Module, inputs: Any, layers: dict[str, nn.Module]) -> _Structure:
    structure = _Structure()
    produced: dict[int, tuple[str, Tensor]] = {}  # id(output) -> (layer, output kept alive)

    def layer_hook(name: str, spec: WeightLayer):
        def hook(module, args, output):
            if name not in structure.calls:
                structure.order.append(name)
                structure.calls[name] = 0
                structure.followers[name] = []
            structure.calls[name] += 1
            structure.followers[name].append(None)
            tensor = spec.output(output)
            produced[id(tensor)] = (name, tensor)

        return hook

    def activation_hook(module, args, output):
        entry = produced.get(id(args[0])) if args and isinstance(args[0], Tensor) else None
        if entry is not None and entry[1] is args[0]:
            followers = structure.followers[entry[0]]
            if followers[-1] is None:
                followers[-1] = module

    activations = [m for m in model.modules() if isinstance(m, ACTIVATION_MODULE_TYPES)]
    hooks = [(module, layer_hook(name, _spec(module))) for name, module in layers.items()]
    _forward(model, inputs, hooks + [(module, activation_hook) for module in activations])
    outputs: dict[str, list[Tensor]] = {name: [] for name in structure.order}
    for name, tensor in produced.values():
        outputs[name].append(tensor.detach().reshape(-1, tensor.shape[-1]).double())
    for name, pieces in outputs.items():
        rows = _sample(torch.cat(pieces))
        activation = structure.activation(name)
        structure.initial[name] = (rms(rows), _scale_of(rows, activation, rows.dtype))
    return structure


def _sample(values: Tensor, limit: int = 200_000) -> Tensor:
    """At most ``limit`` rows of ``values``, evenly strided (no random numbers)."""
    if len(values) <= limit:
        return values
    return values[torch.linspace(0, len(values) - 1, limit, dtype=torch.float64).round().long()]


def _scale_of(values: Tensor, activation: nn.Module | None, dtype: torch.dtype) -> float:
    """rms of ``activation(values)`` (evaluated in the model's dtype), or of ``values``."""
    if activation is None:
        return rms(values)
    with torch.no_grad():
        return rms(activation(values.to(dtype)))


@dataclass
class LsuvReport:
    """What ``lsuv_init`` did, layer by layer (``to_dict`` for metrics.json)."""

    target: float
    tolerance: float
    offset: float
    inputs: str
    passes: int = 0
    layers: dict[str, dict] = field(default_factory=dict)
    unreached: list[str] = field(default_factory=list)
    zero_output: list[str] = field(default_factory=list)
    not_converged: list[str] = field(default_factory=list)
    shared_weight: list[str] = field(default_factory=list)
    untouched_parameters: list[str] = field(default_factory=list)
    output: dict | None = None  # the output layer matched to the labels (dcnn.init.labels)

    @property
    def rescaled(self) -> list[str]:
        return [name for name, entry in self.layers.items() if entry["status"] == "rescaled"]

    def to_dict(self) -> dict:
        return {
            "name": "lsuv",
            "target": self.target,
            "tolerance": self.tolerance,
            "offset": self.offset,
            "inputs": self.inputs,
            "passes": self.passes,
            "rescaled": len(self.rescaled),
            "unreached": list(self.unreached),
            "zero_output": list(self.zero_output),
            "not_converged": list(self.not_converged),
            "shared_weight": list(self.shared_weight),
            "untouched_parameters": list(self.untouched_parameters),
            "layers": {name: dict(entry) for name, entry in self.layers.items()},
            **({} if self.output is None else {"output": dict(self.output)}),
        }

    def summary(self) -> str:
        total = len(self.layers) + len(self.unreached)
        kept = sum(entry["status"] == "on target as initialised" for entry in self.layers.values())
        lines = [
            f"init lsuv: {len(self.rescaled)} of {total} weight layers rescaled to rms "
            f"{self.target:g} on {self.inputs}"
            + (f", {kept} on target as initialised" if kept else "")
            + f" ({self.passes} passes)"
        ]
        for name, entry in self.layers.items():
            active = entry.get("active_fraction")
            lines.append(
                f"  {name} ({entry['type']}, {entry['measured']}): {entry['initial']:.3g} -> "
                f"{entry['after']:.3g}, weight x {entry['scale']:.3g}"
                + ("" if active is None else f", {active:.0%} active")
                + f", {entry['status']}"
            )
        for label, names in (
            ("never reached by the batch (kept as initialised)", self.unreached),
            ("zero output (kept as initialised)", self.zero_output),
            ("not within tolerance", self.not_converged),
            ("weight shared with an earlier layer (not rescaled again)", self.shared_weight),
            ("parameters of no weight layer (not touched)", self.untouched_parameters),
        ):
            if names:
                lines.append(f"  {label}: {', '.join(names)}")
        if self.output is not None:
            lines.append(
                f"  output layer {self.output['layer']} to the labels' scale: "
                + (
                    ", ".join(
                        f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in self.output.items()
                        if key != "layer"
                    )
                )
            )
        return "\n".join(lines)


def _describe_inputs(inputs: Any) -> str:
    if isinstance(inputs, Tensor):
        return f"{len(inputs)} points"
    if isinstance(inputs, Mapping) and "n_atoms" in inputs:
        atoms = int(inputs["n_atoms"].sum())
        edges = int(inputs["edge_index"].shape[1]) if "edge_index" in inputs else 0
        return f"{len(inputs['n_atoms'])} frames ({atoms} atoms, {edges} edges)"
    return type(inputs).__name__


@dataclass
class _Layer:
    """One weight layer while LSUV runs: what it is and what has been done to it."""

    name: str
    module: nn.Module
    spec: WeightLayer
    calls: int
    activation: nn.Module | None  # measured after this activation (None: the layer's output)
    integrated: bool  # feeds an integrated activation: gets the offset
    entry: dict
    initial_output_rms: float
    frozen: bool = False  # shared weight or zero output: measured, never changed
    previous: tuple[float, float] | None = None  # (log weight scale, log measured): last pass
    rows: list[Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class _Settings:
    target: float
    tolerance: float
    offset: float
    center: bool
    dtype: torch.dtype


def lsuv_init(
    model: nn.Module,
    inputs: Any,
    target: float = 1.0,
    tolerance: float = 0.05,
    max_iterations: int = 5,
    center: bool = True,
    offset: float = 0.0,
) -> LsuvReport:
    """Rescale ``model``'s weight layers in place so that each has the target scale on ``inputs``
    (a tensor or a batch dict, as the model's forward takes it); see the module docstring.

    ``target``: the root mean square of the activation that follows a layer, or of the layer's
    output (after centring: its standard deviation). ``tolerance``: relative. ``center``: shift
    the biases so that every output unit has zero mean on the batch; ``offset``: for layers that
    feed an integrated activation, put the mean at ``offset`` times the layer's standard
    deviation instead (more than half the units active). ``max_iterations``: passes that may
    change weights; a last pass checks the result. Returns the report.
    """
    if not (isinstance(target, int | float) and math.isfinite(target) and target > 0):
        raise InitError(f"init.target must be a positive number, got {target!r}")
    if not (tolerance > 0 and int(max_iterations) >= 1 and math.isfinite(offset)):
        raise InitError(
            "init.tolerance must be > 0, init.max_iterations >= 1 and init.offset finite, got "
            f"{tolerance!r}, {max_iterations!r} and {offset!r}"
        )
    dtype, device = _model_dtype_device(model)
    named = weight_layers(model)
    if not named:
        raise InitError(
            f"init=lsuv: {type(model).__name__} has no weight layer LSUV knows "
            f"({', '.join(kind.__name__ for kind in WEIGHT_LAYERS)}); add its class to "
            "dcnn.init.WEIGHT_LAYERS"
        )
    inputs = _cast_inputs(inputs, dtype, device)
    settings = _Settings(float(target), float(tolerance), float(offset), bool(center), dtype)
    report = LsuvReport(
        settings.target, settings.tolerance, settings.offset, _describe_inputs(inputs)
    )
    owned = {id(p) for layer in named.values() for p in layer.parameters(recurse=False)}
    report.untouched_parameters = [
        name for name, p in model.named_parameters() if id(p) not in owned
    ]

    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    modes = {module: module.training for module in model.modules()}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            model.train()  # batch statistics, as in training; no dropout
            for module in model.modules():
                if isinstance(module, nn.modules.dropout._DropoutNd):
                    module.eval()
            structure = _discover(model, inputs, named)
            report.unreached = [name for name in named if name not in structure.calls]
            layers = _layers(named, structure, report)
            for iteration in range(int(max_iterations) + 1):
                report.passes += 1
                changing = iteration < int(max_iterations)
                if not _lsuv_pass(model, inputs, layers, settings, changing):
                    break
            _finish(layers, report, settings)
        finally:
            with torch.no_grad():
                for name, buffer in model.named_buffers():
                    buffer.copy_(buffers[name])
            for module, training in modes.items():
                module.train(training)
    if report.unreached:
        log.warning(
            "init=lsuv: %d weight layer(s) never reached by the batch, kept as initialised: %s",
            len(report.unreached),
            ", ".join(report.unreached),
        )
    return report


def _layers(named: dict[str, nn.Module], structure: _Structure, report: LsuvReport) -> list[_Layer]:
    layers: list[_Layer] = []
    owner: dict[int, str] = {}
    for name in structure.order:
        module = named[name]
        spec = _spec(module)
        activation = structure.activation(name)
        measured = "layer output" if activation is None else f"{type(activation).__name__} output"
        entry = {"type": type(module).__name__, "calls": structure.calls[name]}
        entry.update(measured=measured, initial=structure.initial[name][1], scale=1.0)
        entry.update(iterations=0, status="rescaled")
        layer = _Layer(
            name,
            module,
            spec,
            structure.calls[name],
            activation,
            isinstance(activation, IntegratedActivation),
            entry,
            structure.initial[name][0],
        )
        weight = getattr(module, spec.weight)
        if id(weight) in owner:  # tied weights: scaling again would scale the other layer too
            layer.frozen = True
            entry["status"] = f"weight shared with {owner[id(weight)]}"
            report.shared_weight.append(name)
        owner.setdefault(id(weight), name)
        layers.append(layer)
    return layers


def _lsuv_pass(
    model: nn.Module, inputs: Any, layers: list[_Layer], settings: _Settings, changing: bool
) -> bool:
    """One forward pass in which every layer is measured and, when ``changing``, set at once:
    the hook changes the weights and returns the output the new weights give, so the layers
    after it see their new inputs in the same pass. Layers called more than once are measured
    over all their calls and changed after the pass. Returns whether anything changed."""
    changed = False

    def hook_for(layer: _Layer):
        def hook(module, args, output):
            nonlocal changed
            tensor = layer.spec.output(output)
            rows = tensor.detach().reshape(-1, tensor.shape[-1]).double()
            if layer.calls > 1:
                layer.rows.append(rows)
                return None
            layer.rows = [rows]
            step = _step(layer, rows, settings) if changing else None
            if step is None:
                return None
            changed = True
            scale, shift = step
            new = (tensor - shift.to(tensor.dtype)) * scale if shift is not None else tensor * scale
            return layer.spec.replace(output, new)

        return hook

    for layer in layers:
        layer.rows = []
    _forward(model, inputs, [(layer.module, hook_for(layer)) for layer in layers])
    for layer in layers:
        if layer.calls > 1 and layer.rows and changing:
            changed = _step(layer, torch.cat(layer.rows), settings) is not None or changed
    return changed


def _step(layer: _Layer, rows: Tensor, settings: _Settings) -> tuple[float, Tensor | None] | None:
    """Measure the layer on ``rows``; when it is off target, change its weight (and bias) and
    return (scale, shift) with new output = (old - shift) * scale; None when nothing changed."""
    entry = layer.entry
    sample = _sample(rows)
    current = _scale_of(sample, layer.activation, settings.dtype)
    if layer.frozen:
        return None
    bias = getattr(layer.module, layer.spec.bias) if layer.spec.bias is not None else None
    mean = sample.mean(dim=0) if settings.center and bias is not None else None
    centred = sample if mean is None else sample - mean
    spread = rms(centred)
    if not (math.isfinite(spread) and spread > 0):
        layer.frozen = True
        entry["status"] = "zero output" if spread == 0 else "non-finite output"
        return None
    offset = settings.offset * spread if (layer.integrated and mean is not None) else 0.0
    placed = mean is None or rms(mean - offset) <= settings.tolerance * spread
    if placed and abs(current / settings.target - 1) <= settings.tolerance:
        return None
    factor = None
    if layer.activation is not None:
        shifted = centred + offset
        factor = solve_log_scale(
            lambda c: _scale_of(c * shifted, layer.activation, settings.dtype),
            settings.target,
            settings.target / spread,
        )
        if factor is None:  # out of the activation's range: set the layer's own output
            entry["measured"] = (
                f"layer output ({type(layer.activation).__name__} cannot reach rms "
                f"{settings.target:g})"
            )
            layer.activation = None
            entry["initial"] = layer.initial_output_rms
    if factor is None:
        factor = settings.target / spread
    if layer.calls > 1:  # its input depends on its own output: the response is steeper
        factor = _secant(layer, entry["scale"], current, settings.target, factor)
    shift = None if mean is None else mean - offset
    weight = getattr(layer.module, layer.spec.weight)
    with torch.no_grad():
        weight.mul_(factor)
        if shift is not None:
            bias.sub_(shift.to(bias.dtype)).mul_(factor)
    entry["scale"] *= factor
    entry["iterations"] += 1
    return factor, shift


def _secant(layer: _Layer, scale: float, current: float, target: float, factor: float) -> float:
    """For a layer called several times per pass (a layer fed its own output): the factor from
    the measured response d log(scale measured) / d log(weight scale) of its last two passes;
    the first time, or when the response is not usable, ``factor`` (the one-call estimate)."""
    point = (math.log(scale), math.log(current))
    previous, layer.previous = layer.previous, point
    if previous is None or abs(point[0] - previous[0]) < 1e-12:
        return factor
    slope = (point[1] - previous[1]) / (point[0] - previous[0])
    if not (math.isfinite(slope) and slope > 0.1):
        return factor
    return math.exp((math.log(target) - point[1]) / slope)


def _finish(layers: list[_Layer], report: LsuvReport, settings: _Settings) -> None:
    """Final scales (from the last pass, which changed nothing unless it ran out of passes)."""
    for layer in layers:
        entry = layer.entry
        rows = _sample(torch.cat(layer.rows))
        entry["after"] = _scale_of(rows, layer.activation, settings.dtype)
        if layer.activation is not None or layer.entry["measured"].startswith("layer output ("):
            entry["active_fraction"] = float((rows > 0).double().mean())
        if entry["status"] == "zero output" or entry["status"] == "non-finite output":
            report.zero_output.append(layer.name)
        elif entry["status"] == "rescaled":
            if not abs(entry["after"] / settings.target - 1) <= settings.tolerance:
                entry["status"] = "not within tolerance"
                report.not_converged.append(layer.name)
            elif entry["iterations"] == 0:
                entry["status"] = "on target as initialised"
        report.layers[layer.name] = entry
        layer.rows = []
