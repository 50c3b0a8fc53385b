"""Training-step speed of PINN input derivatives: DeepXDE vs dcnn's autograd and Taylor paths.

Problem: 1D advection u_t + beta u_x = 0 (beta = 0.1) on x in [0, 1], t in [0, 2], periodic in x,
u(x, 0) = sin(2 pi x) + 0.5 sin(6 pi x). Network: the PDEBench baseline MLP (2 -> 6 x 40 tanh
-> 1, Glorot normal, zero biases) in float32; Adam, lr 1e-3, full batch. Loss = mean squared PDE
residual + mean squared initial error + mean squared periodic mismatch (all weights 1).

The points are DeepXDE's own (``dde.data.TimePDE`` with Hammersley sampling, ``--boundary`` points
on x in {0, 1} and ``--initial`` points at t = 0), and every variant trains the same network from
the same initial weights on exactly those points. DeepXDE's loss uses them as

* residual: DeepXDE's ``train_x_all`` (domain + boundary + initial points, as DeepXDE does);
* initial: the IC collocation points; periodic: pairs (x = 0, t) / (x = 1, t).

Variants (one run, interleaved rounds so that machine load hits all alike):

* ``deepxde``: DeepXDE 1.x, PyTorch backend, its internal training step (``Model._train_step``);
* ``autograd`` / ``taylor``: DeepXDE's loss (residual on all of ``train_x_all``) with
  ``input_jet(method="autograd")`` (nested reverse mode) or ``method="taylor"`` (fused forward
  propagation, one backward pass): the derivative machinery alone, on equal work;
* ``taylor+compile`` (``--compile``): that Taylor loss under ``torch.compile``;
* ``dcnn step autograd`` / ``dcnn step taylor``: what dcnn-train does,
  ``AdvectionProblem.loss_terms`` (sum of its terms, all weights 1) + backward + Adam step, on
  point sets taken from DeepXDE's:
  "domain" = DeepXDE's Hammersley residual points, "initial" = its IC points, "boundary_left" /
  "boundary_right" = its periodic pairs. The PDE residual runs on the domain points only, not on
  DeepXDE's boundary and initial rows, so the loss differs from DeepXDE's and "equal accuracy" is
  judged by the test error (below). (``method="auto"`` picks Taylor: the residual is one
  directional derivative.)

Accuracy: after the same number of steps from the same initial weights, every trained network is
compared with the exact solution u0(x - beta t) on a grid (relative L2 error); a dcnn variant must
not be more than ``--tolerance`` (relative) worse than DeepXDE. Variants with DeepXDE's loss must
also agree with it at the initial weights.

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

from dcnn.data.pdebench import PdeSample
from dcnn.input_derivatives.derivatives import input_jet
from dcnn.models.mlp import MLP
from dcnn.pde.problems import AdvectionProblem

BETA = 0.1
HIDDEN, DEPTH = 40, 6
LEARNING_RATE = 1e-3
X_RANGE, T_RANGE = (0.0, 1.0), (0.0, 2.0)
# Test grid for the relative L2 error: cell centres in x, both ends in t.
TEST_NX, TEST_NT = 256, 101
DCNN_STEP = "dcnn step"


def initial_condition(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * x) + 0.5 * np.sin(6 * np.pi * x)


def exact_solution(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """u(x, t) = u0(x - beta t); u0 is 1-periodic, so this is the periodic solution."""
    return initial_condition(x - BETA * t)


def test_grid() -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates x (TEST_NX,) and t (TEST_NT,) for the test error."""
    x = X_RANGE[0] + (np.arange(TEST_NX) + 0.5) * (X_RANGE[1] - X_RANGE[0]) / TEST_NX
    return x, np.linspace(*T_RANGE, TEST_NT)


def exact_sample() -> PdeSample:
    """The exact solution on the test grid as a PdeSample, to build an AdvectionProblem."""
    x, t = test_grid()
    fields = exact_solution(x[None, :], t[:, None])[..., None]  # (nt, nx, 1)
    return PdeSample(
        pde="advection",
        grids={"x": x, "t": t},
        fields=fields,
        channels=("u",),
        params={"beta": BETA},
        domain={"x": X_RANGE, "t": T_RANGE},
        source="benchmarks/pinn_derivatives.py (exact solution)",
        sample_index=0,
    )


def relative_l2_error(network: torch.nn.Module, device: torch.device) -> float:
    """||u_net - u_exact|| / ||u_exact|| over the test grid, in eval mode without gradients."""
    x, t = test_grid()
    grid_x, grid_t = np.meshgrid(x, t, indexing="ij")
    inputs = torch.as_tensor(
        np.stack([grid_x.ravel(), grid_t.ravel()], axis=1), dtype=torch.float32, device=device
    )
    was_training = network.training
    network.eval()
    with torch.no_grad():
        prediction = network(inputs)[:, 0].double().cpu().numpy()
    network.train(was_training)
    exact = exact_solution(grid_x.ravel(), grid_t.ravel())
    return float(np.linalg.norm(prediction - exact) / np.linalg.norm(exact))


@dataclass
class Points:
    """The training points of one problem size, in DeepXDE's row order."""

    all_rows: Tensor  # DeepXDE's train_x: [initial, periodic left..right, residual]
    num_initial: int
    num_periodic: int  # rows of the periodic block (pairs: first half and its images)
    initial_target: Tensor
    num_domain: int  # the residual block ends with the domain (Hammersley) points

    @property
    def residual(self) -> Tensor:
        return self.all_rows[self.num_initial + self.num_periodic :]

    @property
    def constraint_rows(self) -> Tensor:
        return self.all_rows[: self.num_initial + self.num_periodic]

    def problem_point_sets(self) -> dict[str, Tensor]:
        """The same points as the point sets of an AdvectionProblem (see the module docs)."""
        periodic = self.all_rows[self.num_initial : self.num_initial + self.num_periodic]
        half = self.num_periodic // 2
        return {
            "domain": self.all_rows[-self.num_domain :],
            "initial": self.all_rows[: self.num_initial],
            "initial_target": self.initial_target,
            "boundary_left": periodic[:half],
            "boundary_right": periodic[half:],
        }


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
    # DeepXDE makes CUDA the default device whenever it exists. A default device is a torch
    # function mode that adds Python dispatch to every torch call (it doubled a 1,000-point CPU
    # step for every variant), so it is set only where DeepXDE needs it.
    torch.set_default_device(None if device.type == "cpu" else device)
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
    # train_x_all = [initial, boundary, domain] points (TimePDE.train_points).
    expected_rows = data.num_initial + data.num_boundary + data.num_domain
    if len(data.train_x_all) != expected_rows:
        raise SystemExit(
            f"DeepXDE's train_x_all has {len(data.train_x_all)} rows, expected {expected_rows} "
            "(initial + boundary + domain); its point layout changed"
        )
    all_rows = torch.as_tensor(data.train_x, dtype=torch.float32, device=device)
    initial_rows = all_rows[:num_initial].cpu().numpy()
    target = torch.as_tensor(initial_condition(initial_rows[:, :1]), device=device)
    return Points(all_rows, num_initial, num_periodic, target.float(), data.num_domain)


def points_without_deepxde(num_domain: int, num_boundary: int, num_initial: int, device):
    """Same layout as DeepXDE's, from uniform random points (used with --no-deepxde)."""
    generator = np.random.default_rng(0)
    domain = generator.random((num_domain, 2)) * [1.0, 2.0]
    times = generator.random(num_boundary) * 2.0
    sides = generator.integers(0, 2, num_boundary).astype(float)
    boundary = np.stack([sides, times], axis=1)
    initial = np.stack([generator.random(num_initial), np.zeros(num_initial)], axis=1)
    images = np.stack([1.0 - sides, times], axis=1)
    rows = np.concatenate([initial, boundary, images, initial, boundary, domain])
    all_rows = torch.as_tensor(rows, dtype=torch.float32, device=device)
    target = torch.as_tensor(initial_condition(initial[:, :1]), dtype=torch.float32, device=device)
    return Points(all_rows, num_initial, 2 * num_boundary, target, num_domain)


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
    def __init__(
        self, network: MLP, loss: Callable[[], Tensor], compiled: bool = False, fused: bool = False
    ) -> None:
        self.network = network
        self.optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE, fused=fused)
        self.loss = torch.compile(loss) if compiled else loss

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.loss().backward()
        self.optimizer.step()

    def current_loss(self) -> float:
        return float(self.loss().detach())

    def test_error(self, device: torch.device) -> float:
        return relative_l2_error(self.network, device)


def deepxde_like_variant(network: MLP, points: Points, method: str, compiled: bool):
    """DeepXDE's loss (residual on every train_x_all row) with dcnn's input_jet."""
    return DcnnVariant(network, lambda: dcnn_loss(network, points, method), compiled)


def problem_step_variant(network: MLP, points: Points, method: str) -> DcnnVariant:
    """dcnn-train's step: AdvectionProblem.loss_terms on DeepXDE's point sets, weights 1."""
    problem = AdvectionProblem(
        exact_sample(),
        n_domain=points.num_domain,
        n_boundary=points.num_periodic // 2,
        n_initial=points.num_initial,
    )
    point_sets = points.problem_point_sets()

    def loss() -> Tensor:
        return sum(problem.loss_terms(network, point_sets, method).values())

    # dcnn-train's default optimizer is the fused Adam (conf/train.yaml).
    return DcnnVariant(network, loss, fused=True)


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

    def test_error(self, device: torch.device) -> float:
        return relative_l2_error(self.model.net, device)


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
    for method in ("autograd", "taylor"):
        network = copy.deepcopy(reference_net)
        variants[method] = deepxde_like_variant(network, points, method, False)
    if args.compile:
        network = copy.deepcopy(reference_net)
        variants["taylor+compile"] = deepxde_like_variant(network, points, "taylor", True)
    for method in ("autograd", "taylor"):
        network = copy.deepcopy(reference_net)
        variants[f"{DCNN_STEP} {method}"] = problem_step_variant(network, points, method)

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
    test_errors = {name: variant.test_error(device) for name, variant in variants.items()}
    # Rows the network runs on; DeepXDE's loss takes input derivatives on all but the BC block.
    problem_rows = points.num_domain + points.num_initial + points.num_periodic
    rows = []
    for name in variants:
        rows.append(
            {
                "points": num_domain,
                "rows": problem_rows if name.startswith(DCNN_STEP) else points.all_rows.shape[0],
                "variant": name,
                "ms": timings[name],
                "initial_loss": initial_losses[name],
                "final_loss": final_losses[name],
                "test_error": test_errors[name],
            }
        )
    return rows


def check_accuracy(rows: list[dict], tolerance: float) -> list[str]:
    """Problems found: DeepXDE-loss variants disagree with the first row at the initial weights,
    or a variant's test error is non-finite or more than `tolerance` worse than the first row's.
    """
    problems = []
    reference = rows[0]
    for row in rows[1:]:
        if row["variant"].startswith(DCNN_STEP):
            continue  # residual on fewer rows: another loss by construction
        gap = abs(row["initial_loss"] - reference["initial_loss"]) / abs(reference["initial_loss"])
        if gap > 1e-4:
            problems.append(
                f"N={row['points']}: initial loss of {row['variant']} differs from "
                f"{reference['variant']} by {gap:.1e} (relative) at the same parameters"
            )
    for row in rows[1:]:
        error = row["test_error"]
        if not math.isfinite(error) or error > (1 + tolerance) * reference["test_error"]:
            problems.append(
                f"N={row['points']}: test error of {row['variant']} ({error:.4e}) is more than "
                f"{tolerance:.0%} above {reference['variant']}'s ({reference['test_error']:.4e})"
            )
    return problems


TABLE_NOTE = """\
What differs between the variants (same network, initial weights, optimizer and points):
  deepxde: takes u_x, u_t on ALL rows of its train_x ("rows": IC + periodic collocation rows +
    train_x_all) and averages the residual over train_x_all = domain + boundary + initial points.
  autograd, taylor: DeepXDE's loss with dcnn's input_jet: residual derivatives on train_x_all,
    values only on the IC + periodic rows.
  dcnn step *: AdvectionProblem.loss_terms (what dcnn-train runs): residual derivatives only on
    the N domain (Hammersley) points, values only on IC + periodic rows ("rows" = their sum).
    Its loss is another number by construction; compare accuracy by the test error.
  test rel L2: ||u_net - u_exact|| / ||u_exact|| on a 256 x 101 (x, t) grid after the
    warm-up + timed steps, all variants the same number of steps from the same weights."""


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'N res':>6} {'rows':>6} {'variant':<18} {'ms/step':>8} {'DeepXDE/ours':>12} "
        f"{'loss at init':>13} {'final loss':>11} {'test rel L2':>11}"
    )
    print(header)
    print("-" * len(header))
    deepxde_ms = {r["points"]: r["ms"] for r in rows if r["variant"] == "deepxde"}
    for r in rows:
        ratio = deepxde_ms.get(r["points"])
        ratio_text = f"{ratio / r['ms']:.2f}" if ratio and r["variant"] != "deepxde" else "-"
        print(
            f"{r['points']:>6} {r['rows']:>6} {r['variant']:<18} {r['ms']:>8.2f} "
            f"{ratio_text:>12} {r['initial_loss']:>13.6e} {r['final_loss']:>11.4e} "
            f"{r['test_error']:>11.4e}"
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
        "--tolerance",
        type=float,
        default=0.05,
        help="allowed relative excess of a variant's test error over DeepXDE's",
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
    print(TABLE_NOTE)
    print_table(all_rows)
    if problems:
        print("\nACCURACY CHECK FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print(
        "\naccuracy check passed: DeepXDE's loss reproduced at equal parameters (rel. 1e-4); "
        f"test errors after {args.warmup + args.steps} steps at most {args.tolerance:.0%} above "
        "DeepXDE's"
    )


if __name__ == "__main__":
    main()
