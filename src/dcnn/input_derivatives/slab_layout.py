"""Where each derivative of a Taylor-mode pass lives: first derivatives along K directions, then
pure second derivatives along S of them ("slabs"), shared by the fused and the composite pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SlabLayout:
    """Derivative slabs: 0..K-1 first derivatives along the K directions, K..K+S-1 pure second
    derivatives along the requested directions.

    ``coords`` selects the requested directions among K things (first-derivative slabs, weight
    columns); a slice when contiguous.
    """

    dims: int
    requested: tuple[int, ...]
    coords: slice | Tensor | None

    @classmethod
    def build(cls, dims: int, requested: tuple[int, ...], device: torch.device) -> SlabLayout:
        if not requested:
            return cls(dims, requested, None)
        if requested == tuple(range(requested[0], requested[-1] + 1)):
            return cls(dims, requested, slice(requested[0], requested[-1] + 1))
        return cls(dims, requested, torch.tensor(requested, device=device))

    @property
    def num_second(self) -> int:
        return len(self.requested)

    @property
    def first(self) -> slice:
        return slice(0, self.dims)

    @property
    def second(self) -> slice:
        return slice(self.dims, self.dims + self.num_second)

    @property
    def slabs(self) -> int:
        return self.dims + self.num_second
