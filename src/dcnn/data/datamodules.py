"""Lightning DataModules: atomistic frames (mini-batches) and PINN point sets (full batch)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from dcnn.data.atoms import AtomsCollate, AtomsData, AtomsDataset, DataError, split_indices
from dcnn.data.loaders import (
    EpochOrder,
    ResumableLoader,
    StepOrder,
    evaluation_loader,
    training_loader,
)
from dcnn.data.readers import resolve_data_path
from dcnn.data.sources import read_frames, split_kind, split_sizes

log = logging.getLogger("dcnn")


def _rank_and_world(datamodule: pl.LightningDataModule) -> tuple[int, int]:
    trainer = datamodule.trainer
    return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)


class AtomsDataModule(pl.LightningDataModule):
    """Reads a dataset once (``dcnn.data.sources``), splits it with a seed, serves batches with
    neighbour lists."""

    def __init__(
        self,
        path: str,
        root: str | None,
        n_train: int,
        batch_size: int,
        eval_batch_size: int,
        cutoff: float,
        format: str = "auto",
        n_val: int | None = None,
        n_test: int | None = None,
        max_eval_frames: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
        molecule: str | None = None,
        label_source: str | None = None,
        energy_unit: str | None = None,
        length_unit: str | None = None,
        report_energy_unit: str | None = None,
        split: str = "auto",
        fixed_atoms: str = "exclude",
        cache_graphs: bool = True,
    ) -> None:
        super().__init__()
        self.source = resolve_data_path(path, root)
        self.frames = read_frames(
            self.source,
            format,
            molecule,
            label_source,
            energy_unit,
            length_unit,
            report_energy_unit,
        )
        self.data: AtomsData = self.frames.data
        sizes = split_sizes(
            len(self.data), n_train, n_val, n_test, max_eval_frames, str(self.source)
        )
        self.split_by = split_kind(split, self.data, str(self.source))
        systems = self.data.systems if self.split_by == "systems" else None
        indices = split_indices(len(self.data), *sizes, seed, systems=systems)
        self.splits = dict(zip(("train", "val", "test"), indices, strict=True))
        got = tuple(len(index) for index in indices)
        if got != sizes:
            log.warning(
                "%s: whole systems give train/val/test splits of %s frames (asked: %s)",
                self.source,
                got,
                sizes,
            )
        if fixed_atoms not in ("exclude", "include"):
            raise DataError(
                f"dataset.fixed_atoms={fixed_atoms!r}; expected exclude (forces of atoms a "
                "constraint holds are left out of the force loss and metrics, as in S2EF) or "
                "include"
            )
        self.fixed_atoms = fixed_atoms
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.collate = AtomsCollate(cutoff)
        self.graph_cutoff = float(cutoff) if cache_graphs else None

    @property
    def units(self) -> dict[str, str]:
        return dict(self.data.units)

    def split(self, name: str) -> AtomsData:
        return self.data.subset(self.splits[name])

    def _options(self) -> dict:
        return {
            "collate_fn": self.collate,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> ResumableLoader:
        """``batch_size`` frames per step in all, split evenly over DDP processes."""
        rank, world_size = _rank_and_world(self)
        dataset = AtomsDataset(self.split("train"), graph_cutoff=self.graph_cutoff)
        return training_loader(
            dataset,
            self.batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            **self._options(),
        )

    def val_dataloader(self) -> DataLoader:
        dataset = AtomsDataset(self.split("val"), graph_cutoff=self.graph_cutoff)
        return evaluation_loader(dataset, self.eval_batch_size, seed=self.seed, **self._options())

    def test_dataloader(self) -> DataLoader:
        dataset = AtomsDataset(self.split("test"), graph_cutoff=self.graph_cutoff)
        return evaluation_loader(dataset, self.eval_batch_size, seed=self.seed, **self._options())

    def describe(self) -> dict:
        """What was read and how it was split (logged with the run, kept in metrics.json)."""
        facts = {
            **self.frames.facts(),
            "source": str(self.source),
            "split": self.split_by,
            **{f"n_{name}": len(idx) for name, idx in self.splits.items()},
        }
        if self.data.fixed.any():
            facts["fixed_atoms"] = f"{self.fixed_atoms} ({int(self.data.fixed.sum())} held atoms)"
        return facts


class PinnDataModule(pl.LightningDataModule):
    """PINN point sets, one 'batch' per step: a problem's fixed point sets (full batch), or, for a
    problem with ``points_for_step``, minibatches drawn afresh at every step from the step's
    number. Testing uses ``problem.training_points()``."""

    def __init__(self, problem, steps_per_epoch: int = 100) -> None:
        super().__init__()
        self.problem = problem
        self.points = problem.training_points()
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> ResumableLoader:
        # Every process takes every step on the same batch (no sharding of a single batch).
        if hasattr(self.problem, "points_for_step"):
            steps = ResampledBatches(self.problem, self.steps_per_epoch)
            return ResumableLoader(steps, StepOrder(len(steps)), 1, collate_fn=_single)
        steps = RepeatedBatch(self.points, self.steps_per_epoch)
        return ResumableLoader(steps, EpochOrder(len(steps), shuffle=False), 1, collate_fn=_single)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(RepeatedBatch(self.points, 1), batch_size=1, collate_fn=_single)


class RepeatedBatch(torch.utils.data.Dataset):
    """One full batch of PINN points, served ``steps_per_epoch`` times per epoch."""

    def __init__(self, points: dict[str, torch.Tensor], steps_per_epoch: int) -> None:
        self.points = points
        self.steps_per_epoch = steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.points


class ResampledBatches(torch.utils.data.Dataset):
    """The minibatches of global step ``step`` (``StepOrder`` yields step numbers)."""

    def __init__(self, problem, steps_per_epoch: int) -> None:
        self.problem = problem
        self.steps_per_epoch = steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        return self.problem.points_for_step(step)


def _single(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return items[0]
