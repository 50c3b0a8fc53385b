"""PINN training step of DeepXDE vs dcnn on PDEBench's three problems, same points and weights.

Problems: 1D advection, 1D compressible flow ("cfd", the inviscid Euler system in its correct
conservation form) and 2D diffusion-reaction ("diffreact"). Each is one sample of a
PDEBench-layout file (made with dcnn's generators in a temporary folder, or read from ``--data``)
set up as PDEBench's PINN baseline (``protocol=pdebench``): 1,000 Hammersley domain points,
1,000 boundary points, 5,000 initial points (diffreact: the whole t = 0 grid plus a data term on
30 % of the solution values), and the PDE residual on domain + 5,000 initial-time + boundary
points as DeepXDE's TimePDE does. Network: 6 x 40 tanh MLP, Glorot normal, zero biases
(``dcnn.models.mlp.MLP``), float32; Adam, lr 1e-3, full batch; loss = sum of all terms.

Shared points: dcnn draws them (``PdeProblem.training_points()``) and DeepXDE gets exactly those
sets: ``dde.data.PDE`` with no sampled points and dcnn's residual set as ``anchors``; one
``PointSetBC`` per channel for the initial condition (and the data term); the periodic and
zero-flux conditions as DeepXDE's own ``PeriodicBC`` / ``NeumannBC`` on dcnn's point pairs and
outward normals. DeepXDE's residual functions below are written for the same equations, term by
term as ``dcnn.pde.residuals``. DeepXDE's FNN gets dcnn's initial weights. So at equal
parameters every DeepXDE loss group equals the dcnn term it maps to (checked, relative 1e-4).
The work differs: DeepXDE runs every row of its ``train_x`` (each BC's copy of its points, then
the residual points) through the network and takes input derivatives on all of them; dcnn takes
them only on the sets whose terms need them.

Measured: median ms per full training step over interleaved rounds (``time_rounds`` of
``benchmarks/pinn_derivatives.py``) of DeepXDE's internal ``Model._train_step`` and dcnn's step
(``problem.loss_terms`` summed + backward + fused Adam, as dcnn-train), with
``derivative_method`` "auto" and "autograd". After the same number of steps from the same
weights, each dcnn variant's test nRMSE (``problem.evaluate``, last 20 saved steps of the
sample's grid) must not exceed DeepXDE's by more than ``--tolerance`` (relative).

Usage: python benchmarks/pinn_deepxde_problems.py [--problems advection cfd diffreact]
    [--steps 100] [--rounds 5] [--warmup 10] [--threads 1] [--data data/pdebench]
Needs DeepXDE (``pip install 'deepxde>=1.11'``, the ``bench`` extra). On a CPU shared with busy
processes pass ``--threads 1``. A full-size PDEBench diffreact file (128 x 128 grid) makes the
data term about 500,000 points; the generated default (32 x 32) has about 31,000.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from pinn_derivatives import (  # same timing and DeepXDE plumbing as the advection benchmark
    DcnnVariant,
    DeepxdeVariant,
    copy_into_deepxde,
    import_deepxde,
    synchronize,
    time_rounds,
)
from pinn_problem_steps import FILES

from dcnn.data.generate import generate_advection, generate_cfd, generate_diffreact
from dcnn.data.pdebench import read_pdebench_sample
from dcnn.models.mlp import MLP
from dcnn.pde.problems import PdeProblem, build_problem

GENERATORS = {"advection": generate_advection, "cfd": generate_cfd, "diffreact": generate_diffreact}
# PDEBench's protocol (conf/protocol/pdebench.yaml with each dataset's `pdebench` block).
PROTOCOL = {"n_domain": 1000, "n_boundary": 1000, "residual_points": "all"}
PER_PROBLEM = {
    "advection": {"n_initial": 5000, "data_fraction": 0.0},
    "cfd": {"n_initial": 5000, "data_fraction": 0.0},
    "diffreact": {"n_initial": None, "data_fraction": 0.3},
}
HIDDEN, DEPTH, LEARNING_RATE = 40, 6, 1e-3
DCNN_METHODS = ("auto", "autograd")
LOSS_RTOL = 1e-4


def load_problem(pde: str, args, folder: Path) -> PdeProblem:
    """dcnn's problem on one sample, from --data or a freshly generated one-sample file."""
    if args.data is not None:
        path = args.data / FILES[pde]
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `dcnn-data {pde} --out {args.data}` first")
    else:
        path = GENERATORS[pde](folder / FILES[pde], n_samples=1, seed=args.seed, progress=False)
    sample = read_pdebench_sample(path, pde, sample_index=args.sample_index)
    return build_problem(sample, **PROTOCOL, **PER_PROBLEM[pde], seed=args.seed)


# ------------------------------------------------------------------ DeepXDE residual functions
def deepxde_residual(dde, problem: PdeProblem):
    """DeepXDE PDE function of the problem and the dcnn term each of its outputs belongs to."""
    jacobian, hessian = dde.grad.jacobian, dde.grad.hessian
    params = problem.params
    if problem.name == "advection":

        def advection(x, y):  # u_t + beta u_x
            return jacobian(y, x, i=0, j=1) + params["beta"] * jacobian(y, x, i=0, j=0)

        return advection, ["pde"]
    if problem.name == "cfd":
        gamma = params["gamma"]

        def euler(x, y):  # as dcnn.pde.residuals.euler_1d_residuals, term by term
            rho, v, p = y[:, 0:1], y[:, 1:2], y[:, 2:3]
            rho_x, rho_t = jacobian(y, x, i=0, j=0), jacobian(y, x, i=0, j=1)
            v_x, v_t = jacobian(y, x, i=1, j=0), jacobian(y, x, i=1, j=1)
            p_x, p_t = jacobian(y, x, i=2, j=0), jacobian(y, x, i=2, j=1)
            mass = rho_t + rho_x * v + rho * v_x
            momentum = (rho_t * v + rho * v_t) + (rho_x * v * v + 2.0 * rho * v * v_x + p_x)
            energy_density = p / (gamma - 1.0) + 0.5 * rho * v * v
            energy_t = p_t / (gamma - 1.0) + 0.5 * rho_t * v * v + rho * v * v_t
            energy_x = p_x / (gamma - 1.0) + 0.5 * rho_x * v * v + rho * v * v_x
            energy = energy_t + ((energy_x + p_x) * v + (energy_density + p) * v_x)
            return [mass, momentum, energy]

        return euler, ["pde"] * 3
    du, dv, k = params["Du"], params["Dv"], params["k"]

    def diffusion_reaction(x, y):  # as dcnn.pde.residuals.diffusion_reaction_residuals
        u, v = y[:, 0:1], y[:, 1:2]
        lap_u = hessian(y, x, component=0, i=0, j=0) + hessian(y, x, component=0, i=1, j=1)
        lap_v = hessian(y, x, component=1, i=0, j=0) + hessian(y, x, component=1, i=1, j=1)
        residual_u = jacobian(y, x, i=0, j=2) - du * lap_u - (u - u**3 - k - v)
        residual_v = jacobian(y, x, i=1, j=2) - dv * lap_v - (u - v)
        return [residual_u, residual_v]

    return diffusion_reaction, ["pde"] * 2


def point_set_bc_classes(dde):
    """DeepXDE's PeriodicBC and NeumannBC on given points (they normally filter train_x_all)."""

    class PeriodicPairs(dde.icbc.PeriodicBC):
        """u(left_i) - u(right_i), DeepXDE's periodic error, on dcnn's boundary pairs."""

        def __init__(self, geometry, left: np.ndarray, right: np.ndarray, component: int):
            super().__init__(geometry, 0, lambda _, on_boundary: on_boundary, component=component)
            self.pairs = np.concatenate([left, right]).astype(np.float32)

        def collocation_points(self, X):
            return self.pairs

    class NeumannOnPoints(dde.icbc.NeumannBC):
        """Zero outward normal derivative, DeepXDE's Neumann error, with dcnn's normals."""

        def __init__(self, geometry, points: np.ndarray, normals: torch.Tensor, component: int):
            super().__init__(
                geometry, lambda x: np.zeros((len(x), 1), np.float32), lambda _, on: on, component
            )
            self.points = points.astype(np.float32)
            self.boundary_normal = lambda X, beg, end, aux_var: normals

        def collocation_points(self, X):
            return self.points

    return PeriodicPairs, NeumannOnPoints


def build_deepxde(dde, problem: PdeProblem, device: torch.device):
    """DeepXDE model on dcnn's point sets; returns it and the dcnn term of each DeepXDE loss."""
    points = {key: value.numpy() for key, value in problem.training_points().items()}
    domain = problem.sample.domain
    if problem.n_inputs == 2:
        space = dde.geometry.Interval(*domain["x"])
    else:
        space = dde.geometry.Rectangle(
            [domain["x"][0], domain["y"][0]], [domain["x"][1], domain["y"][1]]
        )
    geometry = dde.geometry.GeometryXTime(space, dde.geometry.TimeDomain(*domain["t"]))
    PeriodicPairs, NeumannOnPoints = point_set_bc_classes(dde)
    channels = range(problem.n_outputs)
    names = problem.term_names
    ic_names = [name for name in names if name.startswith("ic")]
    bcs, groups = [], []
    for c in channels:
        target = points["initial_target"][:, c : c + 1]
        bcs.append(dde.icbc.PointSetBC(points["initial"], target, component=c))
        groups.append(ic_names[c])
    if problem.name == "diffreact":
        normals = torch.as_tensor(points["boundary_normal"], dtype=torch.float32, device=device)
        for c in channels:
            bcs.append(NeumannOnPoints(geometry, points["boundary"], normals, c))
            groups.append("bc")
    else:
        bc_names = [name for name in names if name.startswith("bc")]
        for c in channels:
            left, right = points["boundary_left"], points["boundary_right"]
            bcs.append(PeriodicPairs(geometry, left, right, c))
            groups.append(bc_names[c])
    if "data" in names:
        for c in channels:
            target = points["data_target"][:, c : c + 1]
            bcs.append(dde.icbc.PointSetBC(points["data"], target, component=c))
            groups.append("data")
    pde, pde_groups = deepxde_residual(dde, problem)
    data = dde.data.PDE(geometry, pde, bcs, num_domain=0, num_boundary=0, anchors=points["domain"])
    if not np.array_equal(data.train_x_all, points["domain"]) or len(data.train_x) != sum(
        data.num_bcs
    ) + len(points["domain"]):
        raise SystemExit("DeepXDE's train_x is not [BC points, dcnn's residual points]")
    net = dde.nn.FNN(
        [problem.n_inputs] + [HIDDEN] * DEPTH + [problem.n_outputs], "tanh", "Glorot normal"
    )
    model = dde.Model(data, net)
    model.compile("adam", lr=LEARNING_RATE)
    return model, pde_groups + groups


def dcnn_variant(problem: PdeProblem, network: MLP, method: str, device) -> DcnnVariant:
    """dcnn-train's step: the problem's loss terms summed (weights 1), backward, fused Adam."""
    points = {key: value.to(device) for key, value in problem.training_points().items()}

    def loss() -> torch.Tensor:
        return sum(problem.loss_terms(network, points, method).values())

    return DcnnVariant(network, loss, fused=True)


def compare_terms(problem, network, deepxde: DeepxdeVariant, groups, device) -> list[str]:
    """Each dcnn term vs the sum of the DeepXDE losses that map to it, at equal parameters."""
    points = {key: value.to(device) for key, value in problem.training_points().items()}
    ours = problem.loss_terms(network, points, "autograd")
    theirs = deepxde.model.outputs_losses_train(*deepxde.batch)[1].detach()
    if len(theirs) != len(groups):
        return [f"{problem.name}: DeepXDE gave {len(theirs)} losses, expected {len(groups)}"]
    problems = []
    for name, value in ours.items():
        dde_value = float(sum(theirs[i] for i, group in enumerate(groups) if group == name))
        value = float(value.detach())
        if abs(dde_value - value) > LOSS_RTOL * max(abs(value), abs(dde_value)) + 1e-12:
            problems.append(
                f"{problem.name}: term {name!r} is {value:.7e} in dcnn, {dde_value:.7e} in DeepXDE"
            )
    return problems


def run_problem(pde: str, args, dde, device, folder: Path) -> tuple[list[dict], list[str]]:
    problem = load_problem(pde, args, folder)
    torch.manual_seed(args.seed)
    reference_net = MLP(problem.n_inputs, problem.n_outputs, hidden=HIDDEN, depth=DEPTH).to(device)
    deepxde_model, groups = build_deepxde(dde, problem, device)
    copy_into_deepxde(reference_net, deepxde_model)
    variants = {"deepxde": DeepxdeVariant(deepxde_model)}
    for method in DCNN_METHODS:
        variants[method] = dcnn_variant(problem, copy.deepcopy(reference_net), method, device)
    problems = compare_terms(problem, reference_net, variants["deepxde"], groups, device)
    initial_losses = {name: variant.current_loss() for name, variant in variants.items()}
    for variant in variants.values():
        for _ in range(args.warmup):
            variant.step()
    synchronize(device)
    timings = time_rounds(
        {name: variant.step for name, variant in variants.items()}, args.steps, args.rounds, device
    )
    networks = {name: variant.network for name, variant in variants.items() if name != "deepxde"}
    networks["deepxde"] = deepxde_model.net
    errors = {name: problem.evaluate(network)["nrmse"] for name, network in networks.items()}

    points = problem.training_points()
    dcnn_rows = sum(len(points[key]) for key in problem.input_keys())
    rows = []
    for method in DCNN_METHODS:
        reference_loss = initial_losses["deepxde"]
        gap = abs(initial_losses[method] - reference_loss) / abs(reference_loss)
        if gap > LOSS_RTOL:
            problems.append(f"{pde}: dcnn {method} loss at init differs by {gap:.1e} (relative)")
        limit = (1 + args.tolerance) * errors["deepxde"]
        if not math.isfinite(errors[method]) or errors[method] > limit:
            problems.append(
                f"{pde}: dcnn {method} nRMSE {errors[method]:.4e} is more than "
                f"{args.tolerance:.0%} above DeepXDE's {errors['deepxde']:.4e}"
            )
        rows.append(
            {
                "problem": pde,
                "residual": len(points["domain"]),
                "rows": f"{len(deepxde_model.data.train_x)} / {dcnn_rows}",
                "method": method,
                "deepxde_ms": timings["deepxde"],
                "dcnn_ms": timings[method],
                "init_deepxde": initial_losses["deepxde"],
                "init_dcnn": initial_losses[method],
                "error_deepxde": errors["deepxde"],
                "error_dcnn": errors[method],
            }
        )
    return rows, problems


def print_table(rows: list[dict], total_steps: int) -> None:
    print(
        "| problem | residual points | net rows DeepXDE / dcnn | dcnn method | DeepXDE ms | "
        "dcnn ms | DeepXDE/dcnn | loss at init DeepXDE | loss at init dcnn | "
        f"nRMSE DeepXDE ({total_steps} steps) | nRMSE dcnn |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['problem']} | {r['residual']} | {r['rows']} | {r['method']} | "
            f"{r['deepxde_ms']:.2f} | {r['dcnn_ms']:.2f} | {r['deepxde_ms'] / r['dcnn_ms']:.2f} | "
            f"{r['init_deepxde']:.6e} | {r['init_dcnn']:.6e} | {r['error_deepxde']:.4e} | "
            f"{r['error_dcnn']:.4e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--problems", nargs="+", default=list(FILES), choices=list(FILES), help="PDEs to run"
    )
    parser.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--data", type=Path, default=None, help="folder of PDEBench files (default: generate)"
    )
    parser.add_argument("--sample-index", type=int, default=0, help="sample of each file")
    parser.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed relative excess of dcnn's nRMSE"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be >= 1 and --warmup >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dde = import_deepxde(device)
    total_steps = args.warmup + args.rounds * max(1, args.steps // args.rounds)
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"deepxde={dde.__version__} steps={args.steps} warmup={args.warmup} "
        f"rounds={args.rounds} load average={os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    all_rows, problems = [], []
    with tempfile.TemporaryDirectory() as folder:
        for pde in args.problems:
            rows, found = run_problem(pde, args, dde, device, Path(folder))
            all_rows += rows
            problems += found
    print_table(all_rows, total_steps)
    print(
        "net rows: points the network runs on per step (DeepXDE: len(train_x), input derivatives "
        "on all; dcnn: its input sets, derivatives only where a term needs them)"
    )
    if problems:
        print("\nCHECK FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)
    print(
        f"\nchecks passed: every loss term equal at the initial weights (rel. {LOSS_RTOL:g}); "
        f"dcnn's nRMSE after {total_steps} steps at most {args.tolerance:.0%} above DeepXDE's"
    )


if __name__ == "__main__":
    main()
