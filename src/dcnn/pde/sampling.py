"""Collocation point sampling: Hammersley low-discrepancy points and scaling to a box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _first_primes(count: int) -> list[int]:
    primes: list[int] = []
    candidate = 2
    while len(primes) < count:
        if all(candidate % prime for prime in primes if prime * prime <= candidate):
            primes.append(candidate)
        candidate += 1
    return primes


def _radical_inverse(indices: np.ndarray, base: int) -> np.ndarray:
    """Van der Corput radical inverse: base-`base` digits of each index mirrored at the point."""
    remaining = indices.astype(np.int64)
    result = np.zeros(indices.shape, dtype=np.float64)
    digit_weight = 1.0 / base
    while np.any(remaining > 0):
        result += digit_weight * (remaining % base)
        remaining //= base
        digit_weight /= base
    return result


def hammersley(n: int, dim: int) -> np.ndarray:
    """`n` Hammersley points in [0, 1)^dim, shape (n, dim), float64, deterministic.

    Same sequence as DeepXDE's "Hammersley" sampler (scikit-optimize's Hammersly), which PDEBench
    uses for its domain points: point i = 1..n has radical inverses of i in the first dim - 1
    primes followed by i / (n + 1) in the last coordinate; in 1D it is the base-2 van der Corput
    sequence from index 1. Index 0 (the all-zero corner) is skipped, as DeepXDE does.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"hammersley: number of points n must be a positive integer, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"hammersley: dimension dim must be a positive integer, got {dim!r}")
    indices = np.arange(1, n + 1)
    if dim == 1:
        return _radical_inverse(indices, 2)[:, None]
    columns = [_radical_inverse(indices, prime) for prime in _first_primes(dim - 1)]
    columns.append(indices / (n + 1))
    return np.stack(columns, axis=1)


def scale_to_box(
    points: np.ndarray, lows: Sequence[float] | np.ndarray, highs: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Map points of the unit cube, shape (n, dim), affinely onto the box [lows, highs]."""
    points = np.asarray(points, dtype=np.float64)
    lows = np.asarray(lows, dtype=np.float64)
    highs = np.asarray(highs, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"scale_to_box: points must have shape (n, dim), got {points.shape}")
    dim = points.shape[1]
    if lows.shape != (dim,) or highs.shape != (dim,):
        raise ValueError(
            f"scale_to_box: lows and highs must have shape ({dim},) to match points of shape "
            f"{points.shape}, got {lows.shape} and {highs.shape}"
        )
    if not np.all(highs > lows):
        raise ValueError(
            f"scale_to_box: need lows < highs in every coordinate, got {lows}, {highs}"
        )
    return lows + points * (highs - lows)
