"""PINN problems for PDEBench's 1D advection, 1D compressible flow and 2D diffusion-reaction.

A problem owns the fixed training point sets of one PDEBench sample (sampled once, as PDEBench's
DeepXDE baseline does), turns a network into its named loss terms, and evaluates a network on
the sample's saved solution grid. Networks get raw coordinates in PDEBench order: (x, t) for 1D
problems, (x, y, t) for 2D problems; no normalisation is hidden in here.

Combined terms ("pde" of a system of equations, "bc" of several channels, "data") are SUMS of the
per-equation / per-channel mean squares, so the total loss equals PDEBench's sum of per-term
losses.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dcnn.pde.derivatives import Jet, input_jet, jet_and_values
from dcnn.pde.residuals import (
    advection_residual,
    diffusion_reaction_residuals,
    euler_1d_residuals,
)
from dcnn.pde.sampling import hammersley, scale_to_box

if TYPE_CHECKING:
    from dcnn.data.pdebench import PdeSample

# PDEBench's Fourier bands (metric_func iLow=4, iHigh=12): wavenumber index [0, 4) is low,
# [4, 12) mid, [12, Nyquist] high.
FOURIER_LOW_END = 4
FOURIER_MID_END = 12

# Viscosities above this make the inviscid Euler residual the wrong physics for a CFD file.
EULER_VISCOSITY_TOLERANCE = 1e-6


def _check_count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class JetRequest:
    """The input derivatives that the loss terms of a point set use.

    First derivatives along ``directions`` (rows of input-coordinate weights; None: along every
    input coordinate) and pure second derivatives along the ``second_order`` ones (indices into
    the directions, or input coordinates when directions is None). Point sets without a request
    need output values only.
    """

    second_order: tuple[int, ...] = ()
    directions: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in self.second_order):
            raise ValueError(f"JetRequest.second_order must hold integers, got {self.second_order}")
        if self.directions is not None and not all(
            isinstance(row, tuple) and all(isinstance(w, float) for w in row)
            for row in self.directions
        ):
            raise ValueError(
                f"JetRequest.directions must be a tuple of tuples of floats, got {self.directions}"
            )


def _uses_batch_statistics(model: nn.Module) -> bool:
    """Whether a BatchNorm layer of `model` normalises with the statistics of its input batch."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and (module.training or module.running_mean is None)
        for module in model.modules()
    )


def _split_jet(jet: Jet, sizes: Sequence[int]) -> list[Jet]:
    """Cut a jet over concatenated point sets back into one jet per set."""
    pieces = []
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        pieces.append(replace(jet, value=jet.value[rows], d1=jet.d1[rows], d2=jet.d2[rows]))
        start += size
    return pieces


def _mean_square_per_channel(difference: Tensor) -> Tensor:
    """(N, C) -> (C,) mean over points of the squared difference."""
    return difference.square().mean(dim=0)


def _model_device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _predict(model: nn.Module, inputs: np.ndarray, n_outputs: int, batch_size: int) -> np.ndarray:
    """Model outputs at `inputs` (M, D) as float64 (M, C), in eval mode, without gradients."""
    device, dtype = _model_device_and_dtype(model)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = torch.as_tensor(
                    inputs[start : start + batch_size], dtype=dtype, device=device
                )
                output = model(batch)
                if output.shape != (len(batch), n_outputs):
                    raise ValueError(
                        f"model output has shape {tuple(output.shape)} for input of shape "
                        f"{tuple(batch.shape)}; expected ({len(batch)}, {n_outputs})"
                    )
                outputs.append(output.detach().to("cpu", torch.float64).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs, axis=0)


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


class PdeProblem(ABC):
    """A PDEBench sample turned into PINN training point sets, loss terms and an evaluation.

    Subclasses define the equation (class attributes and `_physics_terms`) and the boundary
    points (`_boundary_point_sets`). Point sets, all float32 CPU tensors from
    `training_points()`:
    - "domain" (n_domain, D): Hammersley points over the space-time box (PDE residual);
    - "initial" (Ni, D), "initial_target" (Ni, C): the sample's t = 0 slice on its grid,
      randomly subsampled to n_initial points when the grid has more;
    - boundary sets of the subclass, at uniformly random times;
    - "data" (Nd, D), "data_target" (Nd, C) when data_fraction > 0: a random fraction of all
      saved solution values (every time step and grid cell), used by the extra "data" term.
    """

    name: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    input_names: ClassVar[tuple[str, ...]]
    required_params: ClassVar[tuple[str, ...]]
    physics_term_names: ClassVar[tuple[str, ...]]
    boundary_input_keys: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        sample: PdeSample,
        *,
        n_domain: int = 1000,
        n_boundary: int = 1000,
        n_initial: int = 5000,
        data_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._check_sample(sample)
        self.sample = sample
        self.n_domain = _check_count("n_domain", n_domain)
        self.n_boundary = _check_count("n_boundary", n_boundary)
        self.n_initial = _check_count("n_initial", n_initial)
        if not 0.0 <= data_fraction <= 1.0:
            raise ValueError(f"data_fraction must lie in [0, 1], got {data_fraction!r}")
        self.data_fraction = float(data_fraction)
        self.seed = seed
        self.params = {key: float(sample.params[key]) for key in self.required_params}
        self.term_names: tuple[str, ...] = self.physics_term_names + (
            ("data",) if self.data_fraction > 0 else ()
        )
        self._points = self._sample_point_sets(np.random.default_rng(seed))

    @property
    def n_inputs(self) -> int:
        return len(self.input_names)

    @property
    def n_outputs(self) -> int:
        return len(self.channels)

    # ----------------------------------------------------------------------------- validation
    def _check_sample(self, sample: PdeSample) -> None:
        where = f"{sample.source} (sample {sample.sample_index})"
        if sample.pde != self.name:
            raise ValueError(
                f"{where}: sample is for PDE {sample.pde!r}, "
                f"{type(self).__name__} needs {self.name!r}"
            )
        if tuple(sample.channels) != self.channels:
            raise ValueError(f"{where}: channels {sample.channels}, expected {self.channels}")
        fields_axes = self._fields_axes()
        expected_ndim = len(fields_axes) + 1
        if sample.fields.ndim != expected_ndim or sample.fields.shape[-1] != len(self.channels):
            raise ValueError(
                f"{where}: fields have shape {sample.fields.shape}, expected "
                f"({', '.join(fields_axes)}, {len(self.channels)})"
            )
        for axis, coordinate in enumerate(fields_axes):
            grid = sample.grids.get(coordinate)
            if grid is None or np.shape(grid) != (sample.fields.shape[axis],):
                raise ValueError(
                    f"{where}: grid {coordinate!r} must have shape ({sample.fields.shape[axis]},) "
                    f"to match fields {sample.fields.shape}, got "
                    f"{None if grid is None else np.shape(grid)}"
                )
            extent = sample.domain.get(coordinate)
            if extent is None or not extent[0] < extent[1]:
                raise ValueError(
                    f"{where}: domain[{coordinate!r}] must be an interval (low, high) with "
                    f"low < high, got {extent}"
                )
        for key in self.required_params:
            value = sample.params.get(key)
            if value is None or not math.isfinite(float(value)):
                raise ValueError(
                    f"{where}: parameter {key!r} must be a finite number, got {value!r} "
                    f"(params {sample.params})"
                )

    # ------------------------------------------------------------------------ point sampling
    def _fields_axes(self) -> tuple[str, ...]:
        """Coordinate of each axis of `sample.fields` (time first, then space reversed: t, y, x)."""
        return ("t",) + tuple(reversed(self.input_names[:-1]))

    def _grid_coordinates(self, grid_index: tuple[np.ndarray, ...]) -> np.ndarray:
        """Network inputs (M, D) of the cells at `grid_index` (one index array per field axis)."""
        fields_axes = self._fields_axes()
        columns = [
            np.asarray(self.sample.grids[name], dtype=np.float64)[
                grid_index[fields_axes.index(name)]
            ]
            for name in self.input_names
        ]
        return np.stack(columns, axis=1)

    def _grid_points(
        self,
        time_steps: np.ndarray,
        max_points: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (M, D) and targets (M, C) of the grid cells at the given time steps.

        With `max_points`: a random subset of that many cells (drawn with `rng`) if there are more.
        """
        fields = self.sample.fields[time_steps]
        n_cells = fields.size // self.n_outputs
        flat = np.arange(n_cells)
        if max_points is not None and n_cells > max_points:
            flat = np.sort(rng.choice(n_cells, size=max_points, replace=False))
        index = np.unravel_index(flat, fields.shape[:-1])
        targets = fields.reshape(n_cells, self.n_outputs)[flat]
        return self._grid_coordinates((time_steps[index[0]], *index[1:])), targets

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        lows = np.array(
            [self.sample.domain[name][0] for name in self.input_names], dtype=np.float64
        )
        highs = np.array(
            [self.sample.domain[name][1] for name in self.input_names], dtype=np.float64
        )
        return lows, highs

    def _sample_point_sets(self, rng: np.random.Generator) -> dict[str, Tensor]:
        lows, highs = self._box()
        point_sets = {"domain": scale_to_box(hammersley(self.n_domain, self.n_inputs), lows, highs)}
        initial, initial_target = self._grid_points(np.array([0]), self.n_initial, rng)
        point_sets["initial"], point_sets["initial_target"] = initial, initial_target
        times = rng.uniform(lows[-1], highs[-1], size=self.n_boundary)
        point_sets.update(self._boundary_point_sets(times, rng))
        if self.data_fraction > 0:
            n_time_steps = self.sample.fields.shape[0]
            n_values = self.sample.fields.size // self.n_outputs
            n_data = max(1, round(self.data_fraction * n_values))
            data, data_target = self._grid_points(np.arange(n_time_steps), n_data, rng)
            point_sets["data"], point_sets["data_target"] = data, data_target
        return {
            key: torch.as_tensor(np.ascontiguousarray(value), dtype=torch.float32)
            for key, value in point_sets.items()
        }

    @abstractmethod
    def _boundary_point_sets(
        self, times: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Boundary point sets (and any per-point boundary data) at the given times."""

    def training_points(self) -> dict[str, Tensor]:
        """The fixed point sets and targets (float32 CPU tensors), see the class docstring."""
        return dict(self._points)

    # ---------------------------------------------------------------------------- loss terms
    def _input_keys(self) -> tuple[str, ...]:
        data_keys = ("data",) if self.data_fraction > 0 else ()
        return ("domain", "initial", *self.boundary_input_keys, *data_keys)

    def jet_requests(self) -> dict[str, JetRequest]:
        """Per input point set, the derivatives its loss terms use; other sets need values only."""
        return {"domain": JetRequest()}

    def loss_terms(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str = "auto"
    ) -> dict[str, Tensor]:
        """Scalar mean-squared loss terms, keys exactly `term_names` in that order.

        `points` is `training_points()` (possibly moved to the model's device). Input derivatives
        are computed only on the point sets that need them (`jet_requests`): one jet per distinct
        request, and the value-only sets ride along with the first one (the fused Taylor path
        runs them through the same layer calls). A model whose BatchNorm normalises with batch
        statistics (training mode) instead runs ONCE on all point sets together, as DeepXDE
        does: its outputs depend on the whole batch, so splitting the batch would change the
        loss. The result is differentiable w.r.t. the parameters.
        """
        missing = [key for key in self._points if key not in points]
        if missing:
            raise KeyError(
                f"{self.name} loss_terms: points lack {missing}; pass problem.training_points()"
            )
        if _uses_batch_statistics(model):
            outputs, jets = self._evaluate_as_one_batch(model, points, derivative_method)
        else:
            outputs, jets = self._evaluate_by_need(model, points, derivative_method)
        return self._terms(outputs, jets, points)

    def _needs(self) -> dict[str, JetRequest | None]:
        """The jet request of every input set (None: values only), in `_input_keys` order."""
        requests = self.jet_requests()
        for key, request in requests.items():
            if not isinstance(request, JetRequest):
                raise ValueError(
                    f"{type(self).__name__}.jet_requests()[{key!r}] must be a JetRequest, "
                    f"got {request!r}"
                )
        return {key: requests.get(key) for key in self._input_keys()}

    def _evaluate_as_one_batch(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str
    ) -> tuple[dict[str, Tensor], dict[str, Jet]]:
        """Outputs of all sets and jets of the derivative sets from one jet over all rows."""
        needs = self._needs()
        requests = [request for request in needs.values() if request is not None]
        directions = {request.directions for request in requests}
        if len(directions) > 1:
            raise ValueError(
                f"{self.name}: a model with batch statistics runs all point sets as one batch, "
                f"which needs one set of derivative directions, got {sorted(map(str, directions))}"
            )
        second_order = sorted({k for request in requests for k in request.second_order})
        inputs = [points[key] for key in needs]
        jet = input_jet(
            model,
            torch.cat(inputs),
            second_order,
            method=derivative_method,
            directions=directions.pop() if directions else None,
        )
        jets = dict(zip(needs, _split_jet(jet, [len(x) for x in inputs]), strict=True))
        outputs = {key: piece.value for key, piece in jets.items()}
        return outputs, {key: jets[key] for key, need in needs.items() if need is not None}

    def _evaluate_by_need(
        self, model: nn.Module, points: dict[str, Tensor], derivative_method: str
    ) -> tuple[dict[str, Tensor], dict[str, Jet]]:
        """One jet per distinct request, the value-only sets evaluated along with the first.

        Only valid when the points do not interact (no batch statistics).
        """
        groups: dict[JetRequest, list[str]] = {}
        value_keys: list[str] = []
        for key, request in self._needs().items():
            if request is None:
                value_keys.append(key)
            else:
                groups.setdefault(request, []).append(key)
        value_inputs = [points[key] for key in value_keys]
        value_sizes = [len(x) for x in value_inputs]
        pending = torch.cat(value_inputs) if value_inputs else None
        outputs: dict[str, Tensor] = {}
        jets: dict[str, Jet] = {}
        for request, keys in groups.items():
            inputs = [points[key] for key in keys]
            sizes = [len(x) for x in inputs]
            jet, values = jet_and_values(
                model,
                torch.cat(inputs),
                pending,
                request.second_order,
                method=derivative_method,
                directions=request.directions,
            )
            if values is not None:
                outputs.update(zip(value_keys, values.split(value_sizes), strict=True))
                pending = None
            for key, piece in zip(keys, _split_jet(jet, sizes), strict=True):
                jets[key], outputs[key] = piece, piece.value
        if pending is not None:  # no set needs derivatives
            outputs.update(zip(value_keys, model(pending).split(value_sizes), strict=True))
        return outputs, jets

    def _terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Loss terms, in `term_names` order, from the outputs of every set and the jets."""
        terms = self._physics_terms(outputs, jets, points)
        if self.data_fraction > 0:
            terms["data"] = _mean_square_per_channel(outputs["data"] - points["data_target"]).sum()
        return {name: terms[name] for name in self.term_names}

    @abstractmethod
    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Loss terms of the equation, initial and boundary conditions.

        outputs: network outputs (N, C) of every input set; jets: the sets with a derivative
        request in `jet_requests`.
        """

    # ---------------------------------------------------------------------------- evaluation
    def evaluate(
        self, model: nn.Module, last_steps: int = 20, batch_size: int = 65536
    ) -> dict[str, float]:
        """Metrics of the model on the sample's full grid over its last `last_steps` saved steps.

        Runs the model in eval mode without gradients on its own device and dtype, in batches of
        `batch_size` points; the model's training mode is restored afterwards. Metric
        definitions: see `grid_error_metrics`.
        """
        n_time_steps = self.sample.fields.shape[0]
        last_steps = _check_count("last_steps", last_steps)
        if last_steps > n_time_steps:
            raise ValueError(
                f"last_steps={last_steps} exceeds the {n_time_steps} time steps saved in "
                f"{self.sample.source}"
            )
        batch_size = _check_count("batch_size", batch_size)
        time_steps = np.arange(n_time_steps - last_steps, n_time_steps)
        inputs, targets = self._grid_points(time_steps)
        prediction = _predict(model, inputs, self.n_outputs, batch_size)
        grid_shape = self.sample.fields[time_steps].shape
        channel_names = self.channels if self.n_outputs > 1 else ()
        return grid_error_metrics(
            prediction.reshape(grid_shape), targets.reshape(grid_shape), channel_names
        )


class _PeriodicProblem1D(PdeProblem):
    """1D problem on [x_left, x_right] x [t0, t1], periodic: u(x_left, t) = u(x_right, t)."""

    input_names = ("x", "t")
    boundary_input_keys = ("boundary_left", "boundary_right")
    # The residual needs u_x and u_t (jet_requests default); initial and periodic terms compare
    # values.

    def _boundary_point_sets(
        self, times: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        x_left, x_right = self.sample.domain["x"]
        return {
            "boundary_left": np.stack([np.full_like(times, x_left), times], axis=1),
            "boundary_right": np.stack([np.full_like(times, x_right), times], axis=1),
        }

    @staticmethod
    def _periodic_mismatch(outputs: dict[str, Tensor]) -> Tensor:
        """(C,) mean squared difference between the two ends, per channel."""
        return _mean_square_per_channel(outputs["boundary_left"] - outputs["boundary_right"])


class AdvectionProblem(_PeriodicProblem1D):
    """1D advection u_t + beta u_x = 0, periodic. Terms: pde, ic, bc."""

    name = "advection"
    channels = ("u",)
    required_params = ("beta",)
    physics_term_names = ("pde", "ic", "bc")

    def jet_requests(self) -> dict[str, JetRequest]:
        # u_t + beta u_x is the derivative along (beta, 1) in (x, t): one direction, not two axes.
        return {"domain": JetRequest(directions=((self.params["beta"], 1.0),))}

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        residual = advection_residual(jets["domain"], self.params["beta"])
        initial_error = outputs["initial"] - points["initial_target"]
        return {
            "pde": residual.square().mean(),
            "ic": _mean_square_per_channel(initial_error).sum(),
            "bc": self._periodic_mismatch(outputs).sum(),
        }


class CfdProblem(_PeriodicProblem1D):
    """1D compressible flow as the inviscid Euler equations, outputs (density, Vx, pressure).

    Terms: "pde" = SUM of the mean squared mass, momentum and energy residuals (correct
    conservation form, see `euler_1d_residuals`); initial and periodic boundary terms for every
    field. PDEBench's PINN also drops viscosity (its files use eta = zeta = 1e-8).
    """

    name = "cfd"
    channels = ("density", "Vx", "pressure")
    required_params = ("gamma",)
    physics_term_names = (
        "pde",
        "ic_density",
        "ic_velocity",
        "ic_pressure",
        "bc_density",
        "bc_velocity",
        "bc_pressure",
    )

    def __init__(self, sample: PdeSample, **kwargs) -> None:
        super().__init__(sample, **kwargs)
        viscosities = {key: sample.params.get(key, 0.0) for key in ("eta", "zeta")}
        if any(abs(value) > EULER_VISCOSITY_TOLERANCE for value in viscosities.values()):
            warnings.warn(
                f"{sample.source}: viscosities {viscosities} are not negligible, but the CFD "
                f"residual is the inviscid Euler system (as in PDEBench's PINN baseline)",
                stacklevel=2,
            )

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        mass, momentum, energy = euler_1d_residuals(jets["domain"], self.params["gamma"])
        ic_density, ic_velocity, ic_pressure = _mean_square_per_channel(
            outputs["initial"] - points["initial_target"]
        )
        bc_density, bc_velocity, bc_pressure = self._periodic_mismatch(outputs)
        return {
            "pde": mass.square().mean() + momentum.square().mean() + energy.square().mean(),
            "ic_density": ic_density,
            "ic_velocity": ic_velocity,
            "ic_pressure": ic_pressure,
            "bc_density": bc_density,
            "bc_velocity": bc_velocity,
            "bc_pressure": bc_pressure,
        }


class DiffReactProblem(PdeProblem):
    """2D diffusion-reaction (FitzHugh-Nagumo) on a rectangle with zero-flux boundaries.

    Terms: "pde" = SUM of the mean squared u and v residuals; "bc" = SUM over u and v of the
    mean squared outward normal derivative on the four edges (boundary points are uniform along
    the perimeter); "ic_u", "ic_v"; plus "data" when data_fraction > 0.
    """

    name = "diffreact"
    channels = ("u", "v")
    input_names = ("x", "y", "t")
    required_params = ("Du", "Dv", "k")
    physics_term_names = ("pde", "bc", "ic_u", "ic_v")
    boundary_input_keys = ("boundary",)

    def jet_requests(self) -> dict[str, JetRequest]:
        # Laplacian in (x, y) on the domain; zero-flux (normal derivative) on the boundary.
        return {"domain": JetRequest(second_order=(0, 1)), "boundary": JetRequest()}

    def _boundary_point_sets(
        self, times: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        (x_low, x_high), (y_low, y_high) = self.sample.domain["x"], self.sample.domain["y"]
        # Edges x = x_low, x = x_high, y = y_low, y = y_high, picked in proportion to their length.
        edge_lengths = np.array([y_high - y_low, y_high - y_low, x_high - x_low, x_high - x_low])
        edge = rng.choice(4, size=len(times), p=edge_lengths / edge_lengths.sum())
        along = rng.uniform(0.0, 1.0, size=len(times))
        x = np.select([edge == 0, edge == 1], [x_low, x_high], x_low + along * (x_high - x_low))
        y = np.select([edge == 2, edge == 3], [y_low, y_high], y_low + along * (y_high - y_low))
        outward_normals = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0]], dtype=np.float64)
        return {
            "boundary": np.stack([x, y, times], axis=1),
            "boundary_normal": outward_normals[edge],
        }

    def _physics_terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        residual_u, residual_v = diffusion_reaction_residuals(
            jets["domain"], self.params["Du"], self.params["Dv"], self.params["k"]
        )
        normal_derivative = (jets["boundary"].d1 * points["boundary_normal"][:, None, :]).sum(-1)
        ic_u, ic_v = _mean_square_per_channel(outputs["initial"] - points["initial_target"])
        return {
            "pde": residual_u.square().mean() + residual_v.square().mean(),
            "bc": _mean_square_per_channel(normal_derivative).sum(),
            "ic_u": ic_u,
            "ic_v": ic_v,
        }


PROBLEMS: dict[str, type[PdeProblem]] = {
    problem.name: problem for problem in (AdvectionProblem, CfdProblem, DiffReactProblem)
}


def build_problem(sample: PdeSample, **kwargs) -> PdeProblem:
    """The problem class for `sample.pde`, constructed with keyword arguments `kwargs`."""
    problem_class = PROBLEMS.get(sample.pde)
    if problem_class is None:
        raise ValueError(
            f"{sample.source}: unknown PDE {sample.pde!r}; known PDE problems: {sorted(PROBLEMS)}"
        )
    return problem_class(sample, **kwargs)
