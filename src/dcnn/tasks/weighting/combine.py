"""What every weighting strategy shares: the weighted sum of named loss terms (with a clear error
for a term that has no weight), fixed weights, and the mean over the processes of a DDP run."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def weighted_total(
    terms: Mapping[str, Tensor], weights: Mapping[str, float], factors: Mapping[str, float]
) -> tuple[Tensor, dict[str, float]]:
    """sum_i weights_i factors_i L_i, and the products used; ``weights`` are the configured ones
    (loss.alpha, loss.beta), ``factors`` what a strategy puts on top of them."""
    missing = set(terms) - set(weights)
    if missing:
        raise KeyError(
            f"no weight given for loss term(s) {sorted(missing)}; the configured weights are "
            f"{sorted(weights)}"
        )
    used = {name: float(weights[name]) * factors[name] for name in terms}
    total = sum(used[name] * value for name, value in terms.items())
    return total, used


class FixedWeights:
    """total = sum_i w_i L_i with the configured weights."""

    def combine(
        self, terms: Mapping[str, Tensor], weights: Mapping[str, float], model: nn.Module, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        return weighted_total(terms, weights, dict.fromkeys(terms, 1.0))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def mean_over_processes(values: Tensor) -> Tensor:
    """The mean of ``values`` over the processes of a DDP run (``values`` itself otherwise), so
    that every process derives the same weights."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return values
    world = distributed.get_world_size()
    if world == 1:
        return values
    total = values.detach().clone()
    distributed.all_reduce(total)
    return total / world
