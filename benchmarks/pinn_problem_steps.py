"""Training-step time of dcnn's PINN problems at PDEBench's point counts: autograd vs Taylor.

For each PDE (1D advection, 1D compressible flow, 2D diffusion-reaction) the problem is built
from a PDEBench-layout file with PDEBench's point sets (1000 domain, 1000 boundary, 5000 initial
points by default), and one full-batch training step (all loss terms, backward pass, Adam) of the
6 x 40 tanh MLP is timed with ``derivative_method=autograd`` (nested reverse mode) and
``taylor`` (directional forward propagation with the fused backward pass), in interleaved
rounds from the same initial weights. The two methods give the same loss terms (checked).

Usage: python benchmarks/pinn_problem_steps.py [--data data/pdebench] [--steps 100]
Files come from ``dcnn-data advection|cfd|diffreact --out <data>`` (the default sizes suffice).
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import torch
from pinn_derivatives import time_rounds  # same interleaved-median timing

from dcnn.data.generate import advection_filename, cfd_filename
from dcnn.data.pdebench import read_pdebench_sample
from dcnn.models.mlp import MLP
from dcnn.pde.problems import build_problem

FILES = {
    "advection": advection_filename(0.1),
    "cfd": cfd_filename(1e-8, 1e-8),
    "diffreact": "2D_diff-react_NA_NA.h5",
}
METHODS = ("autograd", "taylor")


def step_function(problem, network: MLP, method: str):
    points = problem.training_points()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, fused=True)  # as dcnn-train

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(problem.loss_terms(network, points, method).values()).backward()
        optimizer.step()

    return step


def time_problem(pde: str, path: Path, args) -> dict[str, float]:
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `dcnn-data {pde} --out {path.parent}` first")
    sample = read_pdebench_sample(path, pde, sample_index=0)
    problem = build_problem(
        sample, n_domain=args.domain, n_boundary=args.boundary, n_initial=args.initial
    )
    torch.manual_seed(0)
    network = MLP(problem.n_inputs, problem.n_outputs, hidden=40, depth=6)
    points = problem.training_points()
    terms = {m: problem.loss_terms(network, points, m) for m in METHODS}
    for name in problem.term_names:
        torch.testing.assert_close(
            terms["taylor"][name], terms["autograd"][name], rtol=1e-4, atol=1e-6
        )
    steps = {m: step_function(problem, copy.deepcopy(network), m) for m in METHODS}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    return time_rounds(steps, args.steps, args.rounds, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/pdebench"))
    parser.add_argument("--pdes", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--domain", type=int, default=1000)
    parser.add_argument("--boundary", type=int, default=1000)
    parser.add_argument("--initial", type=int, default=5000)
    args = parser.parse_args()
    print(
        f"threads={torch.get_num_threads()} torch={torch.__version__} steps={args.steps} "
        f"points={args.domain}/{args.boundary}/{args.initial} (domain/boundary/initial) "
        f"load average={os.getloadavg()[0]:.1f}"
    )
    print(f"{'PDE':<10} {'autograd ms':>11} {'taylor ms':>9} {'autograd/taylor':>15}")
    for pde in args.pdes:
        ms = time_problem(pde, args.data / FILES[pde], args)
        ratio = ms["autograd"] / ms["taylor"]
        print(f"{pde:<10} {ms['autograd']:>11.2f} {ms['taylor']:>9.2f} {ratio:>15.2f}")


if __name__ == "__main__":
    main()
