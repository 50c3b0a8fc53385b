"""Problems on a box with a known solution, trained as Wang, Teng & Perdikaris (2020) train them.

Every step draws fresh minibatches: `batch_size` uniform points for the residual and as many on
each boundary face (an edge of the box where one input is fixed); the network sees standardised
inputs z = (x - mean) / std, with the mean and standard deviation of the uniform distribution
over the box (their code estimates the same from 1e5 samples). Derivatives with respect to the
physical inputs are requested as directional derivatives along e_i / std_i in z, so residuals
read du/dx and d2u/dx2 directly. The test metric is `rel_l2`, the relative L2 error
||u - u*|| / ||u*|| on a dense grid (their 100 x 100 grid by default) against the exact or
reference solution.

A point set's draw for step s depends only on (seed, s), so a resumed run sees the same points
as an uninterrupted one, and every DDP process sees the same batch.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dcnn.pde.problems.base import JetRequest, PinnProblem, check_count, predict

# The random stream of the fixed points that test loss terms are evaluated on (steps are >= 0).
TEST_STREAM = -1


class BoxProblem(PinnProblem):
    """A PDE on the box [lows, highs] with boundary (or initial) data on some of its faces.

    Subclasses set `input_names`, `channels`, `lows`, `highs`, `faces` (point-set name ->
    (input index, fixed value)), `term_names`, and define `_targets` (the data each point set
    is compared with), `_physics_terms` and `reference` (the solution on the test grid).
    """

    lows: ClassVar[tuple[float, ...]]
    highs: ClassVar[tuple[float, ...]]
    faces: ClassVar[dict[str, tuple[int, float]]]

    def __init__(
        self,
        *,
        batch_size: int = 128,
        standardize_inputs: bool = True,
        eval_points: int = 100,
        test_batches: int = 10,
        seed: int = 0,
    ) -> None:
        self.batch_size = check_count("batch_size", batch_size)
        self.eval_points = check_count("eval_points", eval_points, minimum=2)
        self.test_batches = check_count("test_batches", test_batches)
        self.seed = check_count("seed", seed, minimum=0)
        lows, highs = np.asarray(self.lows, float), np.asarray(self.highs, float)
        if standardize_inputs:
            self.input_mean, self.input_std = (lows + highs) / 2, (highs - lows) / math.sqrt(12.0)
        else:
            self.input_mean, self.input_std = np.zeros_like(lows), np.ones_like(lows)
        self.standardize_inputs = bool(standardize_inputs)

    # ------------------------------------------------------------------------------- points
    def _draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Physical coordinates: `n` uniform points in the box and on every face."""
        lows, highs = np.asarray(self.lows, float), np.asarray(self.highs, float)
        raw = {"domain": lows + (highs - lows) * rng.random((n, self.n_inputs))}
        for name, (axis, value) in self.faces.items():
            points = lows + (highs - lows) * rng.random((n, self.n_inputs))
            points[:, axis] = value
            raw[name] = points
        return raw

    @abstractmethod
    def _targets(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Target arrays ('<set>_target', (n, C) or (n,)) for the physical points of each set."""

    def to_network(self, physical: np.ndarray) -> np.ndarray:
        """The network's (standardised) inputs for physical coordinates (M, D)."""
        return (physical - self.input_mean) / self.input_std

    def _points(self, stream: int, n: int, dtype: torch.dtype) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, stream - TEST_STREAM])
        raw = self._draw(rng, n)
        arrays = {key: self.to_network(value) for key, value in raw.items()} | self._targets(raw)
        return {
            key: torch.as_tensor(np.ascontiguousarray(value), dtype=dtype)
            for key, value in arrays.items()
        }

    def points_for_step(self, step: int, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """The minibatches of global training step `step` (CPU tensors)."""
        return self._points(step, self.batch_size, dtype)

    def training_points(self, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """Fixed points (`test_batches` x `batch_size` per set) for the test loss terms."""
        return self._points(TEST_STREAM, self.test_batches * self.batch_size, dtype)

    def point_keys(self) -> tuple[str, ...]:
        if not hasattr(self, "_point_keys"):
            self._point_keys = tuple(self._points(TEST_STREAM, 1, torch.float32))
        return self._point_keys

    def input_keys(self) -> tuple[str, ...]:
        return ("domain", *self.faces)

    def axis_request(self, second_order: tuple[int, ...] = ()) -> JetRequest:
        """Derivatives along the physical input axes (e_i / std_i in network coordinates)."""
        directions = tuple(
            tuple(float(1.0 / std) if j == i else 0.0 for j in range(self.n_inputs))
            for i, std in enumerate(self.input_std)
        )
        return JetRequest(second_order=second_order, directions=directions)

    # --------------------------------------------------------------------------- evaluation
    def test_grid(self) -> np.ndarray:
        """Physical points (M, D) of the test grid: `eval_points` per axis, both ends included."""
        axes = [
            np.linspace(low, high, self.eval_points)
            for low, high in zip(self.lows, self.highs, strict=True)
        ]
        return np.stack([axis.ravel() for axis in np.meshgrid(*axes, indexing="ij")], axis=1)

    @abstractmethod
    def reference(self, physical: np.ndarray) -> np.ndarray:
        """The exact or reference solution (M, C) at physical points (M, D)."""

    def evaluate(self, model: nn.Module, batch_size: int = 65536) -> dict[str, float]:
        """rel_l2 (all channels together) and max_error on the test grid; rel_l2_<channel>."""
        grid = self.test_grid()
        prediction = predict(model, self.to_network(grid), self.n_outputs, batch_size)
        return relative_errors(prediction, self.reference(grid), self.channels)


def relative_errors(
    prediction: np.ndarray, target: np.ndarray, channels: tuple[str, ...]
) -> dict[str, float]:
    """rel_l2 = ||prediction - target|| / ||target|| over all values; per channel when C > 1."""
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ")
    error = prediction - target
    metrics = {
        "rel_l2": float(np.linalg.norm(error) / np.linalg.norm(target)),
        "max_error": float(np.abs(error).max()),
    }
    if target.shape[1] > 1:
        for channel, name in enumerate(channels):
            norm = np.linalg.norm(target[:, channel])
            metrics[f"rel_l2_{name}"] = float(np.linalg.norm(error[:, channel]) / norm)
    return metrics
