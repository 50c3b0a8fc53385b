"""What both tasks share: divergence detection, optimizer set-up, per-term logging, and the
training state a checkpoint must carry besides the weights (for an exact resume)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor

from dcnn.tasks.weighting.combine import mean_over_processes


class DivergedError(RuntimeError):
    """Training produced a non-finite or exploding loss; the run is recorded as diverged."""


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
    """Base LightningModule: combines named loss terms through a weighting strategy.

    A run diverges when its loss is not finite, or when the sum of its unweighted loss terms
    stays above ``divergence_ratio`` times its value at the first training step for
    ``divergence_patience`` steps in a row (a blow-up that never reaches NaN; a spike the run
    recovers from, as IReLU output layers give after their first steps, does not count;
    adaptive weights do not count either, since the terms are unweighted).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        weighting,
        optimizer: Callable,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        divergence_ratio: float | None = 1e6,
        divergence_patience: int = 100,
    ) -> None:
        super().__init__()
        if divergence_patience < 1:
            raise ValueError(
                f"divergence_patience={divergence_patience}; expected a number of steps >= 1"
            )
        if divergence_ratio is not None and not divergence_ratio > 1:
            raise ValueError(
                f"divergence_ratio={divergence_ratio}; expected a number above 1 (how many times "
                "its first value the training loss may grow) or null for no bound"
            )
        self.weights = dict(weights)
        self.weighting = weighting
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.divergence_ratio = divergence_ratio
        self.divergence_patience = int(divergence_patience)
        self.steps_above_bound = 0
        self.first_train_loss: float | None = None
        self.last_train_terms: dict[str, float] = {}

    def _check_divergence(self, stage: str, total: float, terms: dict[str, float]) -> None:
        described = ", ".join(f"{name}={value:.6g}" for name, value in terms.items())
        if not math.isfinite(total):
            raise DivergedError(f"non-finite {stage} loss at step {self.global_step}: {described}")
        if stage != "train":
            return
        unweighted = sum(terms.values())
        if self.first_train_loss is None:
            self.first_train_loss = unweighted
            return
        above = bool(self.divergence_ratio) and (
            unweighted > self.divergence_ratio * self.first_train_loss
        )
        self.steps_above_bound = self.steps_above_bound + 1 if above else 0
        if self.steps_above_bound >= self.divergence_patience:
            raise DivergedError(
                f"train loss terms sum to {unweighted:.6g} at step {self.global_step}, over "
                f"divergence_ratio={self.divergence_ratio:g} times their first value "
                f"{self.first_train_loss:.6g} for divergence_patience={self.divergence_patience} "
                f"steps ({described})"
            )

    def means_over_global_batch(
        self, terms: Mapping[str, Tensor], counts: Mapping[str, int], stage: str
    ) -> dict[str, Tensor]:
        """Each process's mean loss term times its share of the global batch (n W / N).

        DDP averages the processes' gradients, which is the gradient of the mean over the whole
        batch only when every process averages over as many elements; structures of different
        sizes, or with different numbers of fixed atoms, break that. ``counts`` holds how many
        elements each term averaged over on this process.
        """
        if stage != "train" or self.trainer.world_size == 1:
            return dict(terms)
        local = torch.tensor([float(counts[name]) for name in terms], device=self.device)
        total = local.clone()
        torch.distributed.all_reduce(total)
        shares = (local * self.trainer.world_size / total).tolist()
        return {
            name: value * share for (name, value), share in zip(terms.items(), shares, strict=True)
        }

    def combine_terms(self, terms: Mapping[str, Tensor], stage: str, batch_size: int) -> Tensor:
        total, used = self.weighting.combine(terms, self.weights, self, self.global_step)
        # One transfer from the device per step; under DDP one all-reduce gives every process
        # the mean over processes, so all of them log, and stop on divergence, alike.
        stacked = torch.stack([total.detach(), *(value.detach() for value in terms.values())])
        if stage == "train":
            stacked = mean_over_processes(stacked)
        total_value, *term_values = stacked.tolist()
        values = dict(zip(terms, term_values, strict=True))
        self._check_divergence(stage, total_value, values)
        if stage == "train":
            self.last_train_terms = {**values, "loss": total_value}
            for name, value in values.items():
                self.log(f"train/{name}_loss", value, batch_size=batch_size)
            if self.global_step % self.trainer.log_every_n_steps == 0:  # weights change slowly
                for name, weight in used.items():
                    self.log(f"weight/{name}", weight, batch_size=batch_size)
            self.log("train/loss", total_value, prog_bar=True, batch_size=batch_size)
            return total
        for name, value in terms.items():
            self.log(f"{stage}/{name}_loss", value.detach(), batch_size=batch_size, sync_dist=True)
        self.log(
            f"{stage}/loss", total.detach(), prog_bar=True, batch_size=batch_size, sync_dist=True
        )
        return total

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["task_state"] = {
            "weighting": self.weighting.state_dict(),
            "first_train_loss": self.first_train_loss,
            "steps_above_bound": self.steps_above_bound,
            "last_train_terms": self.last_train_terms,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("task_state")
        if state is None:
            raise RuntimeError(
                "this checkpoint holds no dcnn task state (loss weights, divergence bound): it "
                "was written by another program or by a dcnn older than resumable runs; start "
                "the run afresh (rerun=all) or load only its weights into the model"
            )
        self.weighting.load_state_dict(state["weighting"])
        self.first_train_loss = state["first_train_loss"]
        self.steps_above_bound = state["steps_above_bound"]
        self.last_train_terms = dict(state["last_train_terms"])

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
