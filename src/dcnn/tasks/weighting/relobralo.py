"""ReLoBRaLo: Relative Loss Balancing with Random Lookback (Bischof & Kraus 2021, arXiv 2110.09813).

Built by :func:`dcnn.tasks.weighting.build_weighting` (``weighting=relobralo``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dcnn.tasks.weighting.combine import mean_over_processes, weighted_total

# Added to the denominator T * L_i(t') as in the authors' code, so that a term at exactly zero
# loss does not divide by zero.
EPS = 1e-12


def _number(key: str, value, accepts, requirement: str) -> float:
    """``value`` as a float if it is a finite number that ``accepts``, else an error naming
    ``weighting.<key>`` and its ``requirement``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"weighting.{key} must be a number {requirement}, got {value!r}")
    if not (math.isfinite(value) and accepts(float(value))):
        raise ValueError(f"weighting.{key} must be {requirement}, got {value!r}")
    return float(value)


class ReLoBRaLo:
    """Relative Loss Balancing with Random Lookback (Bischof & Kraus 2021).

    With m loss terms L_i, temperature T, decay alpha and expected "saudade" E[rho] (rho = 1
    keeps the history; rho = 0, with probability 1 - E[rho], looks back to L(0)), at training
    step t >= 1::

        bal_i(t, t') = m * softmax_i( L_i(t) / (T * L_i(t')) )
        rho          ~ Bernoulli(E[rho])
        lambda_i(t)  = alpha * (rho * lambda_i(t-1) + (1 - rho) * bal_i(t, 0))
                       + (1 - alpha) * bal_i(t, t-1)

    and lambda_i(0) = 1. Every term's weight is ``base_i * lambda_i`` (``base`` the configured
    weights, loss.alpha / loss.beta, a fixed factor on top); the lambdas always sum to m. A term
    whose loss falls faster than the others' (relative to its previous and to its first value)
    gets a smaller weight. The loss values are detached: the weights carry no gradient.

    Step t is the optimizer step: one update per training call with a new ``step`` (a repeated
    step, as under gradient accumulation, and validation/test calls reuse the current weights).
    L_i(0) is the loss at the first training step. The authors' code differs in its start only:
    it uses alpha = 0 at t = 1 and takes L_i(1), not L_i(0), as the lookback reference.

    rho is drawn from the strategy's own ``torch.Generator`` seeded with ``seed`` (never the
    global RNG, so that weighting does not move the model's random stream). Under DDP the loss
    values are averaged over the processes before use, and every process draws the same rho
    (same seed, same step sequence), so all of them hold the same weights. ``state_dict``
    carries the lambdas, L(0), L(t-1), the last step and the generator state: a resumed run
    continues exactly.
    """

    def __init__(
        self,
        alpha: float = 0.999,
        temperature: float = 0.1,
        expected_rho: float = 0.9999,
        seed: int = 0,
    ) -> None:
        unit = "in [0, 1]"
        self.alpha = _number("alpha", alpha, lambda a: 0 <= a <= 1, unit)
        self.temperature = _number("temperature", temperature, lambda t: t > 0, "> 0")
        self.expected_rho = _number("expected_rho", expected_rho, lambda p: 0 <= p <= 1, unit)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"weighting.seed must be an integer, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.names: list[str] | None = None
        self.lambdas: list[float] = []
        self.initial: list[float] | None = None  # L_i(0)
        self.previous: list[float] | None = None  # L_i(t-1)
        self.last_step: int | None = None

    def _balance(self, current: Tensor, reference: list[float]) -> Tensor:
        ratio = current / (self.temperature * torch.tensor(reference, dtype=torch.float64) + EPS)
        return len(current) * torch.softmax(ratio, dim=0)

    def _update(self, values: list[Tensor], step: int) -> None:
        stacked = mean_over_processes(torch.stack([value.detach() for value in values]))
        current = stacked.to("cpu", torch.float64)
        if not torch.isfinite(current).all():
            return  # the run stops as diverged; keep weights and history as they were
        self.last_step = step
        if self.initial is None:
            self.initial = current.tolist()
            self.previous = current.tolist()
            return
        rho = float(
            torch.rand((), generator=self.generator, dtype=torch.float64) < self.expected_rho
        )
        lookback = rho * torch.tensor(self.lambdas, dtype=torch.float64)
        lookback += (1 - rho) * self._balance(current, self.initial)
        recent = self._balance(current, self.previous)
        self.lambdas = (self.alpha * lookback + (1 - self.alpha) * recent).tolist()
        self.previous = current.tolist()

    def combine(
        self, terms: Mapping[str, Tensor], weights: Mapping[str, float], model: nn.Module, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        if self.names is None:
            self.names = list(terms)
            self.lambdas = [1.0] * len(self.names)
        elif set(terms) != set(self.names):
            raise KeyError(
                f"relobralo balances the loss terms {self.names}, but got {list(terms)}; the "
                "set of terms must not change during a run"
            )
        if model.training and step != self.last_step:
            self._update([terms[name] for name in self.names], step)
        return weighted_total(terms, weights, dict(zip(self.names, self.lambdas, strict=True)))

    def state_dict(self) -> dict:
        return {
            "names": None if self.names is None else list(self.names),
            "lambdas": list(self.lambdas),
            "initial": None if self.initial is None else list(self.initial),
            "previous": None if self.previous is None else list(self.previous),
            "last_step": self.last_step,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.names = None if state["names"] is None else list(state["names"])
        self.lambdas = [float(value) for value in state["lambdas"]]
        self.initial = None if state["initial"] is None else list(state["initial"])
        self.previous = None if state["previous"] is None else list(state["previous"])
        self.last_step = state["last_step"]
        self.generator.set_state(state["generator"])
