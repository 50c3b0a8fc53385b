"""Learning-rate annealing of loss weights (Wang, Teng & Perdikaris 2021, Algorithm 1), in the
paper's form and in the form of the authors' code (``weighting=annealing`` / ``annealing_code``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from dcnn.tasks.weighting.combine import mean_over_processes, weighted_total


class LearningRateAnnealing:
    """Adaptive constraint weights of Wang, Teng & Perdikaris (2020), Algorithm 1.

    Every ``every`` steps, for each term i other than the reference (PDE residual) term:
        lambda_hat_i = max |grad_theta L_ref| / mean |grad_theta L_i|
        lambda_i <- (1 - rate) lambda_i + rate lambda_hat_i          (form="paper")
    ``form="code"`` reproduces their public code instead: lambda_i <- 0.9 lambda_i + 0.1
    lambda_hat_i, where lambda_hat_i is the largest |gradient| of L_ref over the weight matrices
    their code lists, divided by the mean over those matrices of the mean |gradient| of the
    already weighted term lambda_i L_i (a mean of per-layer means, not one mean over all
    entries). A model names those matrices with ``annealing_weights()`` (the modified MLP leaves
    out its encoders, which their code keeps outside the list); otherwise every weight matrix.
    The configured weight stays as a fixed factor on top.
    """

    def __init__(
        self, reference_term: str = "pde", rate: float = 0.9, every: int = 10, form: str = "paper"
    ) -> None:
        if form not in ("paper", "code"):
            raise ValueError(f"annealing form must be 'paper' or 'code', got {form!r}")
        if not 0 < rate <= 1:
            raise ValueError(f"annealing rate must lie in (0, 1], got {rate}")
        if every < 1:
            raise ValueError(f"annealing interval 'every' must be >= 1, got {every}")
        self.reference_term = reference_term
        self.rate = rate
        self.every = every
        self.form = form
        self.lambdas: dict[str, float] = {}

    def _parameters(self, model: nn.Module) -> Sequence[Tensor]:
        if self.form == "code":
            target = getattr(model, "model", model)  # the task's network
            listed = getattr(target, "annealing_weights", None)
            params = list(listed()) if listed else [p for p in model.parameters() if p.dim() > 1]
            return [p for p in params if p.requires_grad]
        return [p for p in model.parameters() if p.requires_grad]

    def _update(self, terms: Mapping[str, Tensor], model: nn.Module) -> None:
        params = self._parameters(model)

        def gradients(value: Tensor) -> list[Tensor]:
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            return [mean_over_processes(g) for g in grads if g is not None]

        def mean_size(grads: list[Tensor]) -> Tensor:
            if self.form == "code":  # the mean of the per-layer means
                return torch.stack([g.abs().mean() for g in grads]).mean()
            return torch.cat([g.reshape(-1) for g in grads]).abs().mean()

        reference_max = torch.stack(
            [g.abs().max() for g in gradients(terms[self.reference_term])]
        ).max()
        for name, value in terms.items():
            if name == self.reference_term:
                continue
            current = self.lambdas[name]
            weighted = value * current if self.form == "code" else value
            grads = gradients(weighted)
            if not grads:
                continue  # the term does not depend on these parameters
            denominator = mean_size(grads)
            if not torch.isfinite(denominator) or denominator == 0:
                continue  # a term with no gradient carries no information about its balance
            estimate = float(reference_max / denominator)
            keep = 0.9 if self.form == "code" else 1 - self.rate
            self.lambdas[name] = keep * current + (1 - keep) * estimate

    def combine(
        self, terms: Mapping[str, Tensor], weights: Mapping[str, float], model: nn.Module, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        if self.reference_term not in terms:
            raise KeyError(
                f"annealing reference term {self.reference_term!r} is not among the loss terms "
                f"{list(terms)}; set weighting.reference_term"
            )
        for name in terms:
            self.lambdas.setdefault(name, 1.0)
        if model.training and step % self.every == 0:
            self._update(terms, model)
        return weighted_total(terms, weights, self.lambdas)

    def state_dict(self) -> dict:
        return {"lambdas": dict(self.lambdas)}

    def load_state_dict(self, state: dict) -> None:
        self.lambdas = dict(state["lambdas"])
