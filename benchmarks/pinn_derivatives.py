"""Training-step speed of PINN input derivatives: DeepXDE vs dcnn's autograd and Taylor paths.

Problem: 1D advection u_t + beta u_x = 0 (beta = 0.1) on x in [0, 1], t in [0, 2], periodic in x,
u(x, 0) = sin(2 pi x) + 0.5 sin(6 pi x). Network: the PDEBench baseline MLP (2 -> 6 x 40 tanh
-> 1, Glorot normal, zero biases) in float32; Adam, lr 1e-3, full batch. Loss = mean squared PDE
residual + mean squared initial error + mean squared periodic mismatch (all weights 1).

The points are DeepXDE's own (``dde.data.TimePDE`` with Hammersley sampling, ``--boundary`` points
on x in {0, 1} and ``--initial`` points at t = 0), and every variant trains the same network from
the same initial weights on exactly those points, so that losses can be compared:

* residual: DeepXDE's ``train_x_all`` (domain + boundary + initial points, as DeepXDE does);
* initial: the IC collocation points; periodic: pairs (x = 0, t) / (x = 1, t).

Variants (one run, interleaved rounds so that machine load hits all alike):

* ``deepxde``: DeepXDE 1.x, PyTorch backend, its internal training step (``Model._train_step``);
* ``autograd``: ``input_jet(method="autograd")`` (nested reverse mode);
* ``taylor``: ``input_jet(method="taylor")`` (fused forward propagation, one backward pass);
* ``taylor+compile`` (``--compile``): the Taylor loss under ``torch.compile``.

Usage: python benchmarks/pinn_derivatives.py --steps 200 --points 1000 10000 [--device cuda]
On a CPU shared with other busy processes pass ``--threads 1``: with more threads than free cores
PyTorch's OpenMP workers wait on each other and steps slow down by orders of magnitude.
DeepXDE is imported only here (``pip install deepxde``); it must never enter the library, because
its PyTorch backend changes torch's global default device on import.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dcnn.models.mlp import MLP
from dcnn.pde.derivatives import input_jet

BETA = 0.1
HIDDEN, DEPTH = 40, 6
LEARNING_RATE = 1e-3


def initial_condition(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * x) + 0.5 * np.sin(6 * np.pi * x)


@dataclass
class Points:
    """The training points of one problem size, in DeepXDE's row order."""

    all_rows: Tensor  # DeepXDE's train_x: [initial, periodic left..right, residual]
    num_initial: int
    num_periodic: int  # rows of the periodic block (pairs: first half and its images)
    initial_target: Tensor

    @property
    def residual(self) -> Tensor:
        return self.all_rows[self.num_initial + self.num_periodic :]

    @property
    def constraint_rows(self) -> Tensor:
        return self.all_rows[: self.num_initial + self.num_periodic]


def import_deepxde(device: torch.device):
    """Import DeepXDE with the PyTorch backend, float32, and torch's default device restored."""
    os.environ["DDE_BACKEND"] = "pytorch"
    try:
        import deepxde as dde
    except ImportError as error:
        raise SystemExit(
            "DeepXDE is not installed: pip install 'deepxde>=1.11' (or pass --no-deepxde)"
        ) from error
    if dde.backend.backend_name != "pytorch":
        raise SystemExit(f"DeepXDE loaded backend {dde.backend.backend_name!r}, not pytorch")
    dde.config.set_default_float("float32")
    torch.set_default_device(device)  # DeepXDE picks CUDA whenever it exists
    return dde


def build_deepxde(dde, num_domain: int, num_boundary: int, num_initial: int):
    def pde(x, y):
        return dde.grad.jacobian(y, x, i=0, j=1) + BETA * dde.grad.jacobian(y, x, i=0, j=0)

    geometry = dde.geometry.GeometryXTime(
        dde.geometry.Interval(0.0, 1.0), dde.geometry.TimeDomain(0.0, 2.0)
    )
    initial = dde.icbc.IC(
        geometry, lambda x: initial_condition(x[:, :1]), lambda _, on_initial: on_initial
    )
    periodic = dde.icbc.PeriodicBC(geometry, 0, lambda _, on_boundary: on_boundary)
    data = dde.data.TimePDE(
        geometry,
        pde,
        [initial, periodic],
        num_domain=num_domain,
        num_boundary=num_boundary,
        num_initial=num_initial,
        train_distribution="Hammersley",
    )
    net = dde.nn.FNN([2] + [HIDDEN] * DEPTH + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=LEARNING_RATE)
    return model


def points_from_deepxde(model, device: torch.device) -> Points:
    data = model.data
    data.train_next_batch()
    num_initial, num_periodic = (int(n) for n in data.num_bcs)
    all_rows = torch.as_tensor(data.train_x, dtype=torch.float32, device=device)
    initial_rows = all_rows[:num_initial].cpu().numpy()
    target = torch.as_tensor(initial_condition(initial_rows[:, :1]), device=device)
    return Points(all_rows, num_initial, num_periodic, target.float())


def points_without_deepxde(num_domain: int, num_boundary: int, num_initial: int, device):
    """Same layout as DeepXDE's, from uniform random points (used with --no-deepxde)."""
    generator = np.random.default_rng(0)
    domain = generator.random((num_domain, 2)) * [1.0, 2.0]
    times = generator.random(num_boundary) * 2.0
    sides = generator.integers(0, 2, num_boundary).astype(float)
    boundary = np.stack([sides, times], axis=1)
    initial = np.stack([generator.random(num_initial), np.zeros(num_initial)], axis=1)
    images = np.stack([1.0 - sides, times], axis=1)
    rows = np.concatenate([initial, boundary, images, initial, domain, boundary])
    all_rows = torch.as_tensor(rows, dtype=torch.float32, device=device)
    target = torch.as_tensor(initial_condition(initial[:, :1]), dtype=torch.float32, device=device)
    return Points(all_rows, num_initial, 2 * num_boundary, target)


def dcnn_loss(model: MLP, points: Points, method: str) -> Tensor:
    jet = input_jet(model, points.residual, method=method)
    residual = jet.first(0, 1) + BETA * jet.first(0, 0)
    constraints = model(points.constraint_rows)
    initial_error = constraints[: points.num_initial] - points.initial_target
    periodic = constraints[points.num_initial :]
    half = points.num_periodic // 2
    periodic_error = periodic[:half] - periodic[half:]
    return residual.square().mean() + initial_error.square().mean() + periodic_error.square().mean()


class DcnnVariant:
    def __init__(self, network: MLP, points: Points, method: str, compiled: bool) -> None:
        self.network = network
        self.optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)

        def loss() -> Tensor:
            return dcnn_loss(network, points, method)

        self.loss = torch.compile(loss) if compiled else loss

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.loss().backward()
        self.optimizer.step()

    def current_loss(self) -> float:
        return float(self.loss().detach())


class DeepxdeVariant:
    def __init__(self, model) -> None:
        # What Model.train does before its loop, without taking a step.
        self.model = model
        model.train_state.set_data_train(*model.data.train_next_batch(model.batch_size))
        state = model.train_state
        self.batch = (state.X_train, state.y_train, state.train_aux_vars)

    def step(self) -> None:
        self.model._train_step(*self.batch)

    def current_loss(self) -> float:
        return float(self.model.outputs_losses_train(*self.batch)[1].sum().detach())


def copy_into_deepxde(network: MLP, deepxde_model) -> None:
    with torch.no_grad():
        for ours, theirs in zip(network.layers, deepxde_model.net.linears, strict=True):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(
    variants: dict[str, Callable[[], None]], steps: int, rounds: int, device: torch.device
) -> dict[str, float]:
    """Median over interleaved rounds of the per-step time in ms."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for name, step in variants.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / per_round * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def run_size(args, num_domain: int, device: torch.device, dde) -> list[dict]:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # DeepXDE samples some point sets with NumPy's global generator
    reference_net = MLP(2, 1, hidden=HIDDEN, depth=DEPTH).to(device)
    deepxde_model = None
    if dde is not None:
        deepxde_model = build_deepxde(dde, num_domain, args.boundary, args.initial)
        copy_into_deepxde(reference_net, deepxde_model)
        points = points_from_deepxde(deepxde_model, device)
    else:
        points = points_without_deepxde(num_domain, args.boundary, args.initial, device)

    variants = {}
    if deepxde_model is not None:
        variants["deepxde"] = DeepxdeVariant(deepxde_model)
    variants["autograd"] = DcnnVariant(copy.deepcopy(reference_net), points, "autograd", False)
    variants["taylor"] = DcnnVariant(copy.deepcopy(reference_net), points, "taylor", False)
    if args.compile:
        variants["taylor+compile"] = DcnnVariant(
            copy.deepcopy(reference_net), points, "taylor", True
        )

    initial_losses = {name: variant.current_loss() for name, variant in variants.items()}
    for name, variant in variants.items():
        start = time.perf_counter()
        for _ in range(args.warmup):
            variant.step()
        synchronize(device)
        if args.verbose:
            print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s")
    timings = time_rounds(
        {name: variant.step for name, variant in variants.items()}, args.steps, args.rounds, device
    )
    final_losses = {name: variant.current_loss() for name, variant in variants.items()}
    rows = []
    for name in variants:
        rows.append(
            {
                "points": num_domain,
                "rows": points.all_rows.shape[0],
                "variant": name,
                "ms": timings[name],
                "initial_loss": initial_losses[name],
                "final_loss": final_losses[name],
            }
        )
    return rows


def check_accuracy(rows: list[dict], tolerance: float) -> list[str]:
    """Problems found: initial losses differ (same parameters) or final losses diverge."""
    problems = []
    reference = rows[0]
    for row in rows[1:]:
        gap = abs(row["initial_loss"] - reference["initial_loss"]) / abs(reference["initial_loss"])
        if gap > 1e-4:
            problems.append(
                f"N={row['points']}: initial loss of {row['variant']} differs from "
                f"{reference['variant']} by {gap:.1e} (relative) at the same parameters"
            )
    finals = [row["final_loss"] for row in rows]
    if not all(math.isfinite(f) for f in finals) or max(finals) > (1 + tolerance) * min(finals):
        problems.append(
            f"N={rows[0]['points']}: final losses after the same steps are not comparable: "
            + ", ".join(f"{r['variant']}={r['final_loss']:.4e}" for r in rows)
        )
    return problems


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'N res':>6} {'rows':>6} {'variant':<15} {'ms/step':>8} {'DeepXDE/ours':>12} "
        f"{'loss at init':>13} {'final loss':>11}"
    )
    print(header)
    print("-" * len(header))
    deepxde_ms = {r["points"]: r["ms"] for r in rows if r["variant"] == "deepxde"}
    for r in rows:
        ratio = deepxde_ms.get(r["points"])
        ratio_text = f"{ratio / r['ms']:.2f}" if ratio and r["variant"] != "deepxde" else "-"
        print(
            f"{r['points']:>6} {r['rows']:>6} {r['variant']:<15} {r['ms']:>8.2f} "
            f"{ratio_text:>12} {r['initial_loss']:>13.6e} {r['final_loss']:>11.4e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per variant")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument(
        "--points", type=int, nargs="+", default=[1000, 10000], help="domain (residual) points"
    )
    parser.add_argument("--boundary", type=int, default=200, help="points on x = 0 or 1")
    parser.add_argument("--initial", type=int, default=200, help="points at t = 0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd Taylor")
    parser.add_argument("--no-deepxde", action="store_true", help="skip the DeepXDE variant")
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed relative spread of final losses"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be >= 1 and --warmup >= 0")

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dde = None if args.no_deepxde else import_deepxde(device)
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"deepxde={getattr(dde, '__version__', 'skipped')} steps={args.steps} "
        f"warmup={args.warmup} rounds={args.rounds} "
        f"load average={os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    all_rows, problems = [], []
    for num_domain in args.points:
        rows = run_size(args, num_domain, device, dde)
        problems += check_accuracy(rows, args.tolerance)
        all_rows += rows
    print_table(all_rows)
    if problems:
        print("\nACCURACY CHECK FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print(
        "\naccuracy check passed: equal losses at equal parameters (rel. 1e-4) and final "
        f"losses within {args.tolerance:.0%} after {args.warmup + args.steps} steps"
    )


if __name__ == "__main__":
    main()
