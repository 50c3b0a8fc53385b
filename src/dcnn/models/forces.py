"""Forces as the negative gradient of any energy model."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EnergyForceModel(nn.Module):
    """Wraps an energy model ``E(batch) -> (B,)`` and returns ``(E, F = -dE/dpositions)``.

    While training, the force graph is kept (``create_graph``) so that a loss on forces can be
    back-propagated into the parameters (double backprop). Evaluation needs the gradient too, so
    callers must run it with gradients enabled (Lightning's inference mode off).
    """

    def __init__(self, energy_model: nn.Module) -> None:
        super().__init__()
        self.energy_model = energy_model

    def forward(
        self, batch: dict[str, Tensor], create_graph: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        if not torch.is_grad_enabled():
            raise RuntimeError(
                "forces need autograd: call EnergyForceModel under torch.enable_grad() "
                "(and run Lightning with inference_mode=False)"
            )
        create_graph = self.training if create_graph is None else create_graph
        positions = batch["positions"]
        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        energy = self.energy_model({**batch, "positions": positions})
        (gradient,) = torch.autograd.grad(
            energy.sum(), positions, create_graph=create_graph, retain_graph=create_graph
        )
        return energy, -gradient
