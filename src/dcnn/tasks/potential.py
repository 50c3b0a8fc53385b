"""Energy/force training of an atomistic potential (alpha * L(E) + beta * L(F))."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from dcnn.models.forces import EnergyForceModel
from dcnn.rescaling import LabelScaler
from dcnn.tasks.common import DerivativeTask, enable_grad_for_eval, loss_function

STAGES = ("train", "val", "test")


METRICS = {"mae": MeanAbsoluteError, "rmse": lambda: MeanSquaredError(squared=False)}


class PotentialTask(DerivativeTask):
    """Trains ``energy_model`` on energies and forces (F = -dE/dx, double backprop).

    Loss terms ``energy`` and ``forces`` are computed in rescaled units (the point of label
    rescaling); every metric is computed after the inverse transform, in the dataset's units.
    """

    def __init__(
        self,
        energy_model: nn.Module,
        scaler: LabelScaler,
        alpha: float,
        beta: float,
        loss_kind: str,
        weighting,
        optimizer: Callable,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        divergence_ratio: float | None = 1e6,
        divergence_patience: int = 100,
        exclude_fixed_atoms: bool = True,
    ) -> None:
        super().__init__(
            {"energy": alpha, "forces": beta},
            weighting,
            optimizer,
            scheduler,
            scheduler_interval,
            divergence_ratio,
            divergence_patience,
        )
        self.model = EnergyForceModel(energy_model)
        self.scaler = scaler
        self.exclude_fixed_atoms = exclude_fixed_atoms
        self.loss_fn = loss_function(loss_kind)
        # Keyed "<stage>/<quantity>_<metric>" with "/" -> ":" (module names cannot hold dots).
        self.metrics = nn.ModuleDict(
            {
                f"{stage}:{quantity}_{name}": make()
                for stage in STAGES
                for quantity in ("energy", "force")
                for name, make in METRICS.items()
            }
        )
        # In the checkpoint: a run resumed mid-epoch reports that epoch's training metrics
        # over all of its batches.
        for metric in self.metrics.values():
            metric.persistent(True)

    def encoded_labels(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The batch's energy and force labels in training units (float64)."""
        structure = (batch["n_atoms"], batch["numbers"], batch["batch"])
        return (
            self.scaler.encode_energy(batch["energy"], *structure),
            self.scaler.encode_forces(batch["forces"]),
        )

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        energy, forces = self.model(batch, create_graph=stage == "train")
        n_atoms = batch["n_atoms"]
        structure = (n_atoms, batch["numbers"], batch["batch"])
        encoded_energy, encoded_forces = self.encoded_labels(batch)
        target_energy, target_forces = (
            encoded_energy.to(energy.dtype),
            encoded_forces.to(forces.dtype),
        )
        # S2EF: atoms a constraint holds have no force to learn (their DFT force is not zero,
        # but the relaxation never moved them); they are left out of loss and metrics.
        free = ~batch["fixed"] if self.exclude_fixed_atoms else slice(None)
        terms = self.means_over_global_batch(
            {
                "energy": self.loss_fn(energy, target_energy),
                "forces": self.loss_fn(forces[free], target_forces[free]),
            },
            {"energy": energy.numel(), "forces": forces[free].numel()},
            stage,
        )
        total = self.combine_terms(terms, stage, batch_size=len(n_atoms))
        # Metrics in the dataset's units, after the inverse label transform. They are only
        # updated here and logged once per epoch (logging a Metric object every step is slow).
        pairs = {
            "energy": (self.scaler.decode_energy(energy.detach(), *structure), batch["energy"]),
            "force": (self.scaler.decode_forces(forces.detach()[free]), batch["forces"][free]),
        }
        with torch.no_grad():
            for quantity, (predicted, target) in pairs.items():
                for name in METRICS:
                    self.metrics[f"{stage}:{quantity}_{name}"].update(
                        predicted.reshape(-1), target.double().reshape(-1)
                    )
        return total

    def _log_epoch_metrics(self, stage: str) -> None:
        for quantity in ("energy", "force"):
            for name in METRICS:
                metric = self.metrics[f"{stage}:{quantity}_{name}"]
                if metric.update_called:
                    self.log(f"{stage}/{quantity}_{name}", metric.compute())
                    metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.trainer.world_size > 1:
            # Every process holds the sums of its own share of the epoch so far; the checkpoint
            # gets the sums over all of them (every process takes part in this gather).
            for name, metric in self.metrics.items():
                if name.startswith("train:"):
                    metric.sync()
                    prefix = f"metrics.{name}."
                    checkpoint["state_dict"].update(metric.state_dict(prefix=prefix))
                    metric.unsync()

    def on_train_start(self) -> None:
        if self.global_rank > 0:  # a resumed epoch's sums so far are the main process's to carry
            for name, metric in self.metrics.items():
                if name.startswith("train:"):
                    metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    @enable_grad_for_eval
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    @enable_grad_for_eval
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")


def build_potential_run(cfg: DictConfig, task_parts: dict):
    """DataModule, PotentialTask, units, surgery report and facts of an atomistic run, from the
    composed config (``task_parts``: weighting, optimizer, scheduler, divergence bound)."""
    import hydra

    from dcnn.build import build_model
    from dcnn.data.datamodules import AtomsDataModule
    from dcnn.rescaling import fit_label_scaler

    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    if "_target_" in dataset:
        datamodule = hydra.utils.instantiate(dataset, seed=cfg.seed)
    else:
        datamodule = AtomsDataModule(**dataset, seed=cfg.seed)
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    train = datamodule.split("train")
    scaler = fit_label_scaler(
        cfg.rescaling.name,
        train.energy,
        train.forces,
        train.n_atoms(),
        scale=cfg.rescaling.get("scale"),
        numbers=train.numbers,
    )
    task = PotentialTask(
        model,
        scaler,
        cfg.loss.alpha,
        cfg.loss.beta,
        cfg.loss.kind,
        exclude_fixed_atoms=getattr(datamodule, "fixed_atoms", "exclude") == "exclude",
        **task_parts,
    )
    info = {"data": datamodule.describe(), "label_scaler": scaler.describe()}
    return datamodule, task, datamodule.units, report, info
