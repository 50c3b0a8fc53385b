"""Error metrics of a prediction on a solution grid, as PDEBench reports them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# PDEBench's Fourier bands (metric_func iLow=4, iHigh=12): wavenumber index [0, 4) is low,
# [4, 12) mid, [12, Nyquist] high.
FOURIER_LOW_END = 4
FOURIER_MID_END = 12


def _band_means(amplitude: np.ndarray) -> dict[str, float]:
    """Mean amplitude over PDEBench's low/mid/high wavenumber bands; amplitude is (nt, K, C).

    A band with no wavenumbers on this grid (K <= 12) is NaN: there is nothing to report.
    """
    bands = {
        "fourier_low": amplitude[:, :FOURIER_LOW_END],
        "fourier_mid": amplitude[:, FOURIER_LOW_END:FOURIER_MID_END],
        "fourier_high": amplitude[:, FOURIER_MID_END:],
    }
    return {
        name: float(band.mean()) if band.shape[1] > 0 else math.nan for name, band in bands.items()
    }


def _fourier_error_amplitude(error: np.ndarray) -> np.ndarray:
    """Error spectrum per time step and channel as PDEBench's metric_func computes it, (nt, K, C).

    1D: |rfft over x| / nx for wavenumbers 0..nx//2. 2D: |fft2|^2 of the non-negative-frequency
    quadrant summed into radial bins floor(sqrt(i^2 + j^2)) < min(nx, ny) // 2, then the square
    root divided by nx * ny. (PDEBench's PINN evaluation uses its default domain lengths of 1.)
    """
    if error.ndim == 3:
        n_x = error.shape[1]
        return np.abs(np.fft.rfft(error, axis=1)) / n_x
    n_y, n_x = error.shape[1:3]
    power = np.abs(np.fft.fft2(error, axes=(1, 2))) ** 2
    quadrant = power[:, : n_y // 2, : n_x // 2, :]
    radius = np.floor(
        np.hypot(*np.meshgrid(np.arange(n_y // 2), np.arange(n_x // 2), indexing="ij"))
    )
    n_bins = min(n_x // 2, n_y // 2)
    radial = np.stack(
        [quadrant[:, radius == bin_index, :].sum(axis=1) for bin_index in range(n_bins)], 1
    )
    return np.sqrt(radial) / (n_x * n_y)


def grid_error_metrics(
    prediction: np.ndarray, target: np.ndarray, channel_names: Sequence[str] = ()
) -> dict[str, float]:
    """Error metrics of a prediction on a solution grid, as PDEBench reports them.

    prediction, target: (nt, nx, C) or (nt, ny, nx, C). Metrics are computed per time step and
    channel and then averaged over both, as PDEBench's metric_func does:
    - mse: mean squared error over all grid values;
    - rmse: root-mean-square error over space; nrmse: that divided by the target's RMS over space
      (PDEBench's nRMSE, which the paper's tables call "MSE");
    - max_error: the largest absolute error anywhere on the grid;
    - boundary_rmse: RMSE over the grid cells on the domain boundary (first and last cell along
      every spatial axis);
    - fourier_low / fourier_mid / fourier_high: mean error-spectrum amplitude over wavenumbers
      [0, 4), [4, 12) and [12, Nyquist] (radial wavenumber in 2D), see _fourier_error_amplitude;
    - rmse_<channel> / nrmse_<channel>: per-channel RMSE / nRMSE for each name in channel_names.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape or target.ndim not in (3, 4):
        raise ValueError(
            f"prediction and target must share the shape (nt, nx, C) or (nt, ny, nx, C), got "
            f"{prediction.shape} and {target.shape}"
        )
    if channel_names and len(channel_names) != target.shape[-1]:
        raise ValueError(
            f"got {len(channel_names)} channel names {tuple(channel_names)} for "
            f"{target.shape[-1]} channels"
        )
    error = prediction - target
    spatial_axes = tuple(range(1, target.ndim - 1))
    rmse_per_step = np.sqrt(np.mean(error**2, axis=spatial_axes))  # (nt, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        nrmse_per_step = rmse_per_step / np.sqrt(np.mean(target**2, axis=spatial_axes))

    on_boundary = np.zeros(target.shape[1:-1], dtype=bool)
    for axis in range(on_boundary.ndim):
        edge = [slice(None)] * on_boundary.ndim
        for index in (0, -1):
            edge[axis] = index
            on_boundary[tuple(edge)] = True
    boundary_rmse_per_step = np.sqrt(np.mean(error[:, on_boundary, :] ** 2, axis=1))

    metrics = {
        "mse": float(np.mean(error**2)),
        "rmse": float(rmse_per_step.mean()),
        "nrmse": float(nrmse_per_step.mean()),
        "max_error": float(np.max(np.abs(error))),
        "boundary_rmse": float(boundary_rmse_per_step.mean()),
        **_band_means(_fourier_error_amplitude(error)),
    }
    for channel, name in enumerate(channel_names):
        metrics[f"rmse_{name}"] = float(rmse_per_step[:, channel].mean())
        metrics[f"nrmse_{name}"] = float(nrmse_per_step[:, channel].mean())
    return metrics
