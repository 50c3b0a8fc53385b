"""PINN problems built on one PDEBench sample: fixed point sets drawn once from the sample's
domain, grid and initial condition (as PDEBench's DeepXDE baseline does), evaluated on the
sample's saved solution grid.

Networks get raw coordinates in PDEBench order: (x, t) for 1D problems, (x, y, t) for 2D
problems; no normalisation is hidden in here. The optional "data" term is the SUM of the
per-channel mean squares on a fraction of all saved solution values, so the total loss equals
PDEBench's sum of per-term losses.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dcnn.input_derivatives.derivatives import Jet
from dcnn.pde.metrics import grid_error_metrics
from dcnn.pde.problems.base import PinnProblem, check_count, mean_square_per_channel, predict
from dcnn.pde.sampling import hammersley, scale_to_box

if TYPE_CHECKING:
    from dcnn.data.pdebench import PdeSample

# Where the PDE residual is evaluated: the domain points only (cheaper), or every training point
# (domain, initial and boundary), as DeepXDE's TimePDE in PDEBench's baseline does.
RESIDUAL_POINTS = ("domain", "all")


class PdeProblem(PinnProblem):
    """A PDEBench sample turned into PINN training point sets, loss terms and an evaluation.

    Subclasses define the equation (class attributes and `_physics_terms`) and the boundary
    points (`_boundary_point_sets`). Point sets, all float32 CPU tensors from
    `training_points()`:
    - "domain" (n_domain, D): Hammersley points over the space-time box, where the PDE
      residual is evaluated; with ``residual_points="all"`` it runs over every training point
      as in PDEBench's DeepXDE baseline (TimePDE): n_initial_residual uniformly random points at
      t = 0 and n_boundary of the boundary points follow the domain points (1,000 + 5,000 +
      1,000 = 7,000 for advection), while the initial and boundary terms keep their own sets;
    - "initial" (Ni, D), "initial_target" (Ni, C): the sample's t = 0 slice on its grid,
      randomly subsampled to n_initial points when the grid has more (n_initial None: all);
    - boundary sets of the subclass, at uniformly random times;
    - "data" (Nd, D), "data_target" (Nd, C) when data_fraction > 0: a random fraction of all
      saved solution values (every time step and grid cell), used by the extra "data" term.
    """

    required_params: ClassVar[tuple[str, ...]]
    physics_term_names: ClassVar[tuple[str, ...]]
    boundary_input_keys: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        sample: PdeSample,
        *,
        n_domain: int = 1000,
        n_boundary: int = 1000,
        n_initial: int | None = 5000,
        data_fraction: float = 0.0,
        residual_points: str = "domain",
        n_initial_residual: int = 5000,
        seed: int = 0,
    ) -> None:
        self._check_sample(sample)
        self.sample = sample
        self.n_domain = check_count("n_domain", n_domain)
        self.n_boundary = check_count("n_boundary", n_boundary)
        self.n_initial = None if n_initial is None else check_count("n_initial", n_initial)
        if residual_points not in RESIDUAL_POINTS:
            raise ValueError(
                f"residual_points must be one of {', '.join(RESIDUAL_POINTS)}, got "
                f"{residual_points!r}"
            )
        self.residual_points = residual_points
        self.n_initial_residual = check_count("n_initial_residual", n_initial_residual)
        if not 0.0 <= data_fraction <= 1.0:
            raise ValueError(f"data_fraction must lie in [0, 1], got {data_fraction!r}")
        self.data_fraction = float(data_fraction)
        self.seed = seed
        self.params = {key: float(sample.params[key]) for key in self.required_params}
        self.term_names: tuple[str, ...] = self.physics_term_names + (
            ("data",) if self.data_fraction > 0 else ()
        )
        self._points = self._sample_point_sets(np.random.default_rng(seed))

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
        if self.residual_points == "all":
            at_start = rng.uniform(lows, highs, size=(self.n_initial_residual, self.n_inputs))
            at_start[:, -1] = lows[-1]
            # n_boundary points in all, shared between the boundary sets (their times are random)
            share = -(-self.n_boundary // len(self.boundary_input_keys))
            on_boundary = [point_sets[key][:share] for key in self.boundary_input_keys]
            point_sets["domain"] = np.concatenate([point_sets["domain"], at_start, *on_boundary])[
                : self.n_domain + self.n_initial_residual + self.n_boundary
            ]
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

    def point_keys(self) -> tuple[str, ...]:
        return tuple(self._points)

    def input_keys(self) -> tuple[str, ...]:
        data_keys = ("data",) if self.data_fraction > 0 else ()
        return ("domain", "initial", *self.boundary_input_keys, *data_keys)

    def _terms(
        self, outputs: dict[str, Tensor], jets: dict[str, Jet], points: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        terms = self._physics_terms(outputs, jets, points)
        if self.data_fraction > 0:
            terms["data"] = mean_square_per_channel(outputs["data"] - points["data_target"]).sum()
        return {name: terms[name] for name in self.term_names}

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
        last_steps = check_count("last_steps", last_steps)
        if last_steps > n_time_steps:
            raise ValueError(
                f"last_steps={last_steps} exceeds the {n_time_steps} time steps saved in "
                f"{self.sample.source}"
            )
        batch_size = check_count("batch_size", batch_size)
        time_steps = np.arange(n_time_steps - last_steps, n_time_steps)
        inputs, targets = self._grid_points(time_steps)
        prediction = predict(model, inputs, self.n_outputs, batch_size)
        grid_shape = self.sample.fields[time_steps].shape
        channel_names = self.channels if self.n_outputs > 1 else ()
        return grid_error_metrics(
            prediction.reshape(grid_shape), targets.reshape(grid_shape), channel_names
        )


class PeriodicProblem1D(PdeProblem):
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
        return mean_square_per_channel(outputs["boundary_left"] - outputs["boundary_right"])
