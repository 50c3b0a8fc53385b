"""Cell grids and PDEBench's random sine-sum initial conditions (its init_multi / init_multi_HD)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# PDEBench's window bounds are absolute coordinates (drawn for a [0, 1] domain) and its
# tanh transition width is 0.01; kept as is for every domain, as PDEBench does.
_WINDOW_LEFT_RANGE = (0.1, 0.45)
_WINDOW_RIGHT_RANGE = (0.55, 0.9)
_WINDOW_WIDTH = 0.01


def cell_centres(n_cells: int, domain: tuple[float, float]) -> np.ndarray:
    """Centres of ``n_cells`` equal cells covering ``domain`` (float64)."""
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    left, right = domain
    spacing = (right - left) / n_cells
    return left + (np.arange(n_cells) + 0.5) * spacing


@dataclass(frozen=True)
class SineSumProfile:
    """``sign * [abs](sum_k A_k sin(2 pi n_k x / L + phi_k)) * [tanh window]`` on ``domain``.

    ``wave_numbers`` holds n_k for every candidate mode; modes that were not drawn have
    n_k = 0 and contribute the constant ``A_k sin(phi_k)``, exactly as in PDEBench.
    """

    wave_numbers: np.ndarray
    amplitudes: np.ndarray
    phases: np.ndarray
    sign: float
    take_abs: bool
    window: tuple[float, float] | None
    domain: tuple[float, float]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        length = self.domain[1] - self.domain[0]
        angles = (2.0 * np.pi / length) * x[..., None] * self.wave_numbers + self.phases
        value = np.sum(self.amplitudes * np.sin(angles), axis=-1)
        if self.take_abs:
            value = np.abs(value)
        value = self.sign * value
        if self.window is not None:
            left, right = self.window
            value = (
                value
                * 0.5
                * (np.tanh((x - left) / _WINDOW_WIDTH) - np.tanh((x - right) / _WINDOW_WIDTH))
            )
        return value


def random_sine_sum(
    rng: np.random.Generator,
    domain: tuple[float, float],
    *,
    n_modes: int,
    n_chosen: int = 2,
    abs_probability: float = 0.1,
    window_probability: float = 0.1,
) -> SineSumProfile:
    """Draw one profile of PDEBench's family.

    ``n_chosen`` mode indices are drawn with replacement from 1..n_modes (a mode drawn twice
    gets twice the wave number), amplitudes ~ U(0, 1) and phases ~ U(0, 2 pi) for every mode,
    an absolute value with probability ``abs_probability``, a random sign, and a tanh window
    with probability ``window_probability``. Unlike PDEBench (which divides by x[-1] - x[0]),
    wave numbers use the domain length so that the profile is exactly periodic.
    """
    chosen = rng.integers(0, n_modes, size=n_chosen)
    multiplicity = np.bincount(chosen, minlength=n_modes)
    wave_numbers = np.arange(1, n_modes + 1) * multiplicity
    amplitudes = rng.uniform(0.0, 1.0, size=n_modes)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=n_modes)
    take_abs = bool(rng.random() < abs_probability)
    sign = float(rng.choice([1.0, -1.0]))
    use_window = bool(rng.random() < window_probability)
    window_left = rng.uniform(*_WINDOW_LEFT_RANGE)
    window_right = rng.uniform(*_WINDOW_RIGHT_RANGE)
    return SineSumProfile(
        wave_numbers=wave_numbers.astype(np.float64),
        amplitudes=amplitudes,
        phases=phases,
        sign=sign,
        take_abs=take_abs,
        window=(window_left, window_right) if use_window else None,
        domain=domain,
    )
