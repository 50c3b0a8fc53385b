"""Data loaders whose order is a function of (seed, epoch), that resume mid-epoch and shard DDP.

Training order: the permutation torch's ``DistributedSampler`` draws (``randperm`` seeded with
``seed + epoch``), padded to a multiple of the number of processes, rank r taking every
world-th index. One process and two processes with the same seed and global batch therefore
see the same frames at every step. A loader records how many batches of the current epoch it
served; Lightning saves that state in the checkpoint, and a resumed run skips those batches
instead of drawing a different order (its progress counters already say where the epoch stands).
Evaluation loaders are not sharded: every process evaluates the whole split, so metrics and
logged losses are exact under DDP and every process runs the same number of batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochOrder(Sampler[int]):
    """Indices ``0..n-1`` of one process: shuffled by (seed, epoch), or in order."""

    def __init__(
        self, n: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0  # indices of this epoch already trained on (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[int]:
        # A generator: the order is drawn at the first batch, after Lightning set the epoch.
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        padded = len(self) * self.world_size
        order += order[: padded - self.n]
        share = order[self.rank : padded : self.world_size]
        skip, self.skip = self.skip, 0
        yield from share[skip:]


class StepOrder(EpochOrder):
    """Global step numbers ``epoch * n + i`` in order: each step draws its own batch from its
    number (PINN minibatches resampled every step), on every process alike."""

    def __init__(self, n: int) -> None:
        super().__init__(n, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        for index in super().__iter__():
            yield self.epoch * self.n + index


class ResumableLoader(DataLoader):
    """A DataLoader over an ``EpochOrder`` whose position in the epoch is saved and restored.

    ``state_dict`` / ``load_state_dict`` make Lightning treat it as resumable: the state is the
    epoch and the number of batches served in it (no batch is fetched ahead: the loader has a
    length, so Lightning does not prefetch).
    """

    def __init__(self, dataset: Dataset, order: EpochOrder, batch_size: int, **options) -> None:
        # Its own generator: creating an iterator draws a seed, which must not move the
        # global RNG that training (and its resumption) depends on.
        generator = torch.Generator().manual_seed(order.seed)
        super().__init__(
            dataset, batch_size=batch_size, sampler=order, generator=generator, **options
        )
        self.order = order
        self.served = 0

    def __iter__(self) -> Iterator:
        self.served = self.order.skip // self.batch_size
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self.served >= len(self):
            return {"epoch": self.order.epoch + 1, "batches": 0}
        return {"epoch": self.order.epoch, "batches": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.order.set_epoch(int(state["epoch"]))
        self.order.skip = int(state["batches"]) * self.batch_size
        self.served = int(state["batches"])


def training_loader(
    dataset: Dataset, batch_size: int, *, seed: int, rank: int, world_size: int, **options
) -> ResumableLoader:
    """Shuffled, sharded loader; ``batch_size`` is the global batch over ``world_size``."""
    if batch_size % world_size:
        raise ValueError(
            f"dataset.batch_size={batch_size} is the global batch; it must divide evenly over "
            f"{world_size} processes (choose a multiple of {world_size})"
        )
    order = EpochOrder(len(dataset), seed=seed, rank=rank, world_size=world_size)
    return ResumableLoader(dataset, order, batch_size // world_size, **options)


def evaluation_loader(dataset: Dataset, batch_size: int, *, seed: int, **options) -> DataLoader:
    """The whole split in order, on every process."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, generator=generator, **options)
