"""Training step of dcnn's SchNet against schnetpack's SchNet: same sizes, frames, batch, loss
and optimizer, timed in one run (interleaved rounds), at three sizes.

Both models get the same precomputed neighbour lists (cutoff 5 A, real aspirin frames, batch of
20) and train on energy + 30 x force MAE (forces by autograd, double backprop) with fused Adam
1e-3; only forward, backward and the optimizer step are timed. Prints ms per step and the ratio.

schnetpack 2.1.1 pins sympy <= 1.12, which torch 2.13 does not accept, and pip then falls back
to an old CUDA torch; install it without its dependencies and add the few it imports:

    .venv/bin/pip install --no-deps schnetpack==2.1.1
    .venv/bin/pip install matscipy torch-ema dirsync fasteners hydra-colorlog rich tensorboardX
    DCNN_DATA_ROOT=../shared/data .venv/bin/python benchmarks/schnet_vs_schnetpack.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.utils.data.dataloader as torch_dataloader

from dcnn.data.atoms import AtomsCollate, AtomsDataset
from dcnn.data.readers import read_rmd17
from dcnn.models.forces import EnergyForceModel
from dcnn.models.schnet import SchNet

# schnetpack 2.1.1 imports T_co from torch's dataloader module, which torch has since removed.
if not hasattr(torch_dataloader, "T_co"):
    torch_dataloader.T_co = TypeVar("T_co", covariant=True)
import schnetpack as spk  # noqa: E402  (needs the shim above)

SIZES = {  # name: (atom basis / hidden, filters, interactions, gaussians)
    "small": (64, 64, 3, 25),
    "medium": (128, 128, 6, 50),
    "paper": (1024, 256, 5, 200),
}
CUTOFF = 5.0
FORCE_WEIGHT = 30.0


def batches(n_batches: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    data = read_rmd17(Path(os.environ["DCNN_DATA_ROOT"]) / "rmd17", "aspirin")
    frames = AtomsDataset(data.subset(np.arange(n_batches * batch_size)))
    collate = AtomsCollate(CUTOFF)
    return [
        collate([frames[k] for k in range(b * batch_size, (b + 1) * batch_size)])
        for b in range(n_batches)
    ]


def schnetpack_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    source, target = batch["edge_index"]
    return {
        spk.properties.Z: batch["numbers"],
        spk.properties.R: batch["positions"],
        spk.properties.idx_i: source,
        spk.properties.idx_j: target,
        spk.properties.offsets: batch["edge_shift"],
        spk.properties.n_atoms: batch["n_atoms"],
        spk.properties.idx_m: batch["batch"],
        spk.properties.cell: batch["cell"],
        spk.properties.pbc: batch["pbc"],
    }


class Trainer:
    """One side of the comparison: a model, its optimizer and its inputs."""

    def __init__(self, name: str, step, parameters, inputs: list) -> None:
        self.name = name
        self.step = step
        self.optimizer = torch.optim.Adam(parameters, lr=1e-3, fused=True)
        self.inputs = inputs

    def run(self, steps: int) -> float:
        """Seconds per training step over ``steps`` steps."""
        start = time.perf_counter()
        for k in range(steps):
            loss = self.step(self.inputs[k % len(self.inputs)])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / steps


def _loss(energy, forces, batch) -> torch.Tensor:
    # Labels centred so both sides see O(1) targets (the timing does not depend on them).
    target_energy = (batch["energy"] - batch["energy"].mean()).float()
    return (energy - target_energy).abs().mean() + FORCE_WEIGHT * (
        forces - batch["forces"].float()
    ).abs().mean()


def dcnn_side(size: tuple, data: list) -> Trainer:
    hidden, filters, interactions, gaussians = size
    torch.manual_seed(0)
    model = EnergyForceModel(
        SchNet(hidden, filters, interactions, gaussians, cutoff=CUTOFF)
    ).train()

    def step(batch):
        energy, forces = model(batch, create_graph=True)
        return _loss(energy, forces, batch)

    return Trainer("dcnn", step, model.parameters(), data)


def schnetpack_side(size: tuple, data: list) -> Trainer:
    hidden, filters, interactions, gaussians = size
    torch.manual_seed(0)
    representation = spk.representation.SchNet(
        n_atom_basis=hidden,
        n_interactions=interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=gaussians, cutoff=CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF),
        n_filters=filters,
    )
    model = spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=hidden, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
    ).train()
    inputs = [(schnetpack_inputs(batch), batch) for batch in data]

    def step(item):
        spk_inputs, batch = item
        # schnetpack writes derivatives into the input dict: give it a fresh copy each step.
        results = model({key: value.clone() for key, value in spk_inputs.items()})
        return _loss(results["energy"], results["forces"], batch)

    return Trainer("schnetpack", step, model.parameters(), inputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    data = batches(10, 20)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 20 aspirin, "
        f"cutoff {CUTOFF}, {args.rounds} interleaved rounds of {args.steps} steps"
    )
    print("| size | dcnn ms/step | schnetpack ms/step | schnetpack / dcnn |")
    print("|---|---|---|---|")
    for name in args.sizes:
        sides = [dcnn_side(SIZES[name], data), schnetpack_side(SIZES[name], data)]
        for side in sides:
            side.run(3)  # warm-up
        times = {side.name: [] for side in sides}
        for _ in range(args.rounds):
            for side in sides:
                times[side.name].append(side.run(args.steps))
        ours, theirs = (1e3 * statistics.median(times[s]) for s in ("dcnn", "schnetpack"))
        print(f"| {name} {SIZES[name]} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
