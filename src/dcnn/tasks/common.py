"""What both tasks share: divergence detection, optimizer set-up, per-term logging."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the run is recorded as diverged."""


LOSS_KINDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mae": lambda pred, target: (pred - target).abs().mean(),
    "mse": lambda pred, target: (pred - target).square().mean(),
}


def loss_function(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return LOSS_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown loss.kind {kind!r}; expected one of {sorted(LOSS_KINDS)}"
        ) from None


class DerivativeTask(pl.LightningModule):
    """Base LightningModule: combines named loss terms through a weighting strategy."""

    def __init__(
        self,
        weights: Mapping[str, float],
        weighting,
        optimizer: Callable,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        self.weights = dict(weights)
        self.weighting = weighting
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.last_train_terms: dict[str, float] = {}

    def combine_terms(self, terms: Mapping[str, Tensor], stage: str, batch_size: int) -> Tensor:
        total, used = self.weighting.combine(terms, self.weights, self, self.global_step)
        values = {name: float(value.detach()) for name, value in terms.items()}
        total_value = float(total.detach())
        if not math.isfinite(total_value):
            raise DivergedError(
                f"non-finite {stage} loss at step {self.global_step}: "
                + ", ".join(f"{name}={value}" for name, value in values.items())
            )
        # Epoch-level val/test values are averaged over all processes under DDP.
        sync = stage != "train"
        for name, value in terms.items():
            self.log(f"{stage}/{name}_loss", value.detach(), batch_size=batch_size, sync_dist=sync)
        if stage == "train":
            self.last_train_terms = {**values, "loss": total_value}
            if self.global_step % self.trainer.log_every_n_steps == 0:  # weights change slowly
                for name, weight in used.items():
                    self.log(f"weight/{name}", weight, batch_size=batch_size)
        self.log(
            f"{stage}/loss", total.detach(), prog_bar=True, batch_size=batch_size, sync_dist=sync
        )
        return total

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }


def enable_grad_for_eval(step):
    """Validation/test steps need input gradients (forces, PDE residuals)."""

    def wrapped(self, *args, **kwargs):
        with torch.enable_grad():
            return step(self, *args, **kwargs)

    return wrapped
