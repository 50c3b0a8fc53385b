"""What every PINN problem shares: loss terms from named point sets, with input derivatives
taken only where a term needs them.

A problem names its input point sets (`input_keys`), the derivatives each set's terms use
(`jet_requests`), and its terms (`_physics_terms`); `loss_terms` evaluates a network on the
sets with as few passes as the derivative engines allow. Combined terms ("pde" of a system of
equations, "bc" of several channels) are SUMS of the per-equation / per-channel mean squares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dcnn.input_derivatives.derivatives import Jet, input_jet, jet_and_values


def check_count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class JetRequest:
    """The input derivatives that the loss terms of a point set use.

    First derivatives along ``directions`` (rows of input-coordinate weights; None: along every
    input coordinate) and pure second derivatives along the ``second_order`` ones (indices into
    the directions, or input coordinates when directions is None). Point sets without a request
    need output values only.
    """

    second_order: tuple[int, ...] = ()
    directions: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in self.second_order):
            raise ValueError(f"JetRequest.second_order must hold integers, got {self.second_order}")
        if self.directions is not None and not all(
            isinstance(row, tuple) and all(isinstance(w, float) for w in row)
            for row in self.directions
        ):
            raise ValueError(
                f"JetRequest.directions must be a tuple of tuples of floats, got {self.directions}"
            )


def _uses_batch_statistics(model: nn.Module) -> bool:
    """Whether a BatchNorm layer of `model` normalises with the statistics of its input batch."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and (module.training or module.running_mean is None)
        for module in model.modules()
    )


def _split_jet(jet: Jet, sizes: Sequence[int]) -> list[Jet]:
    """Cut a jet over concatenated point sets back into one jet per set."""
    pieces = []
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        pieces.append(replace(jet, value=jet.value[rows], d1=jet.d1[rows], d2=jet.d2[rows]))
        start += size
    return pieces


def mean_square_per_channel(difference: Tensor) -> Tensor:
    """(N, C) -> (C,) mean over points of the squared difference."""
    return difference.square().mean(dim=0)


def model_device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def predict(model: nn.Module, inputs: np.ndarray, n_outputs: int, batch_size: int) -> np.ndarray:
    """Model outputs at `inputs` (M, D) as float64 (M, C), in eval mode, without gradients."""
    device, dtype = model_device_and_dtype(model)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = torch.as_tensor(
                    inputs[start : start + batch_size], dtype=dtype, device=device
                )
                output = model(batch)
                if output.shape != (len(batch), n_outputs):
                    raise ValueError(
                        f"model output has shape {tuple(output.shape)} for input of shape "
                        f"{tuple(batch.shape)}; expected ({len(batch)}, {n_outputs})"
                    )
                outputs.append(output.detach().to("cpu", torch.float64).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs, axis=0)


class PinnProblem(ABC):
    """Named point sets in, named scalar loss terms out (see the module docstring).

    Subclasses set `name`, `channels` (output names) and `input_names`, and define
    `term_names`, `point_keys`, `input_keys`, `_physics_terms` and `evaluate`.
    """

    name: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    input_names: ClassVar[tuple[str, ...]]
    term_names: tuple[str, ...]

    @property
    def n_inputs(self) -> int:
        return len(self.input_names)

    @property
    def n_outputs(self) -> int:
        return len(self.channels)

    @abstractmethod
    def point_keys(self) -> tuple[str, ...]:
        """Keys of the points dict that `loss_terms` reads (inputs and their targets)."""

    @abstractmethod
    def input_keys(self) -> tuple[str, ...]:
        """The point sets the network runs on, in evaluation order."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Test metrics of the model against the problem's reference solution."""

    def jet_requests(self) -> dict[str, JetRequest]:
        """Per input point set, the derivatives its loss terms use; other sets need values only."""
        return {"domain": JetRequest()}

    def loss_terms(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str = "auto"
    ) -> dict[str, Tensor]:
        """Scalar mean-squared loss terms, keys exactly `term_names` in that order.

        `points` is `training_points()` (possibly moved to the model's device). Input derivatives
        are computed only on the point sets that need them (`jet_requests`): one jet per distinct
        request, and the value-only sets ride along with the first one (the fused Taylor path
        runs them through the same layer calls). A model whose BatchNorm normalises with batch
        statistics (training mode) instead runs ONCE on all point sets together, as DeepXDE
        does: its outputs depend on the whole batch, so splitting the batch would change the
        loss. The result is differentiable w.r.t. the parameters.
        """
        missing = [key for key in self.point_keys() if key not in points]
        if missing:
            raise KeyError(
                f"{self.name} loss_terms: points lack {missing}; pass the problem's training points"
            )
        if _uses_batch_statistics(model):
            outputs, jets = self._evaluate_as_one_batch(model, points, derivative_method)
        else:
            outputs, jets = self._evaluate_by_need(model, points, derivative_method)
        return self._terms(outputs, jets, points)

    def _needs(self) -> dict[str, JetRequest | None]:
        """The jet request of every input set (None: values only), in `input_keys` order."""
        requests = self.jet_requests()
        for key, request in requests.items():
            if not isinstance(request, JetRequest):
                raise ValueError(
                    f"{type(self).__name__}.jet_requests()[{key!r}] must be a JetRequest, "
                    f"got {request!r}"
                )
        return {key: requests.get(key) for key in self.input_keys()}

    def _evaluate_as_one_batch(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str
    ) -> tuple[dict[str, Tensor], dict[str, Jet]]:
        """Outputs of all sets and jets of the derivative sets from one jet over all rows."""
        needs = self._needs()
        requests = [request for request in needs.values() if request is not None]
        directions = {request.directions for request in requests}
        if len(directions) > 1:
            raise ValueError(
                f"{self.name}: a model with batch statistics runs all point sets as one batch, "
                f"which needs one set of derivative directions, got {sorted(map(str, directions))}"
            )
        second_order = sorted({k for request in requests for k in request.second_order})
        inputs = [points[key] for key in needs]
        jet = input_jet(
            model,
            torch.cat(inputs),
            second_order,
            method=derivative_method,
            directions=directions.pop() if directions else None,
        )
        jets = dict(zip(needs, _split_jet(jet, [len(x) for x in inputs]), strict=True))
        outputs = {key: piece.value for key, piece in jets.items()}
        return outputs, {key: jets[key] for key, need in needs.items() if need is not None}

    def _evaluate_by_need(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str
    ) -> tuple[dict[str, Tensor], dict[str, Jet]]:
        """One jet per distinct request, the value-only sets evaluated along with the first.

        Only valid when the points do not interact (no batch statistics).
        """
        groups: dict[JetRequest, list[str]] = {}
        value_keys: list[str] = []
        for key, request in self._needs().items():
            if request is None:
                value_keys.append(key)
            else:
                groups.setdefault(request, []).append(key)
        value_inputs = [points[key] for key in value_keys]
        value_sizes = [len(x) for x in value_inputs]
        pending = torch.cat(value_inputs) if value_inputs else None
        outputs: dict[str, Tensor] = {}
        jets: dict[str, Jet] = {}
        for request, keys in groups.items():
            inputs = [points[key] for key in keys]
            sizes = [len(x) for x in inputs]
            jet, values = jet_and_values(
                model,
                torch.cat(inputs),
                pending,
                request.second_order,
                method=derivative_method,
                directions=request.directions,
            )
            if values is not None:
                outputs.update(zip(value_keys, values.split(value_sizes), strict=True))
                pending = None
            for key, piece in zip(keys, _split_jet(jet, sizes), strict=True):
                jets[key], outputs[key] = piece, piece.value
        if pending is not None:  # no set needs derivatives
            outputs.update(zip(value_keys, model(pending).split(value_sizes), strict=True))
        return outputs, jets

    def _terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Loss terms, in `term_names` order, from the outputs of every set and the jets."""
        terms = self._physics_terms(outputs, jets, points)
        return {name: terms[name] for name in self.term_names}

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Loss terms of the equation, initial and boundary conditions.

        outputs: network outputs (N, C) of every input set; jets: the sets with a derivative
        request in `jet_requests`. Every problem defines it unless it overrides `loss_terms`
        (the cavity needs derivatives no jet carries).
        """
        raise NotImplementedError(f"{type(self).__name__} defines no loss terms")
