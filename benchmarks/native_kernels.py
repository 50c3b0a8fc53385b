"""The fused Taylor pass alone, C++ kernels against the same pass in torch ops (CPU).

One forward and backward pass of ``jet_and_values`` through the PDEBench MLP (2 -> 6 x 40 tanh
-> 1, float32): the derivative along (0.1, 1) at N residual points plus values at 600 initial and
boundary points, as in a 1D advection step. The two variants alternate over interleaved rounds
(``DCNN_NATIVE_KERNELS=require`` and ``off``), so that machine load hits both alike; the median
round is reported.

Usage: python benchmarks/native_kernels.py --points 1000 10000 [--rounds 6]
"""

from __future__ import annotations

import argparse
import os

import torch
from pinn_derivatives import time_rounds  # same interleaved-median timing

from dcnn.input_derivatives import native
from dcnn.input_derivatives.derivatives import jet_and_values
from dcnn.models.mlp import MLP

VALUE_POINTS = 600
DIRECTION = [[0.1, 1.0]]


def time_pass(points: int, rounds: int, calls: int) -> dict[str, float]:
    """Median ms of one forward and backward pass per setting of DCNN_NATIVE_KERNELS."""
    torch.manual_seed(0)
    network = MLP(2, 1, hidden=40, depth=6)
    x, value_points = torch.rand(points, 2), torch.rand(VALUE_POINTS, 2)
    directions = torch.tensor(DIRECTION)

    def forward_backward() -> None:
        jet, values = jet_and_values(
            network, x, value_points, method="taylor", directions=directions
        )
        (jet.d1.square().mean() + values.square().mean()).backward()

    def under(setting: str):
        def step() -> None:
            os.environ[native.SETTING] = setting
            forward_backward()

        return step

    variants = {setting: under(setting) for setting in ("require", "off")}
    for step in variants.values():
        for _ in range(3):  # warm-up: build, workspace
            step()
    return time_rounds(variants, calls * rounds, rounds, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} rounds={args.rounds}")
    print(f"{'points':>7} {'C++ ms':>8} {'torch ops ms':>13} {'torch ops / C++':>16}")
    for points in args.points:
        ms = time_pass(points, args.rounds, calls=max(10, 100_000 // points))
        ratio = ms["off"] / ms["require"]
        print(f"{points:>7} {ms['require']:>8.2f} {ms['off']:>13.2f} {ratio:>16.2f}")


if __name__ == "__main__":
    main()
