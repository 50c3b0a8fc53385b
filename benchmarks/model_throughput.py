"""Training-step throughput of every model (small and paper presets), and what building the
graph and the triplets costs beside it.

For each preset: conformations per second of training (a step on energy + 30 x force MAE,
forces by autograd with double backprop, fused Adam 1e-3, the model as published: original
activations and normalization, plus joining its batch from kept graphs) on batches of 20 real
aspirin frames, median of interleaved rounds. Beside it, what a batch's graph costs: built from
scratch (neighbour lists and reverse edges: rebuilding every step, as PyG's own forward does)
against joined from the frames' kept lists (what dcnn's data loader does after a frame's first
use, `dataset.cache_graphs`), and the ratio of the two full steps. For DimeNet++ and GemNet-T,
the triplets their forward builds every step (part of the step) as a share of it: caching them
too would save at most that share.

    DCNN_DATA_ROOT=../shared/data .venv/bin/python benchmarks/model_throughput.py
    ... model_throughput.py --presets dimenet_pp gemnet_t --steps 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from dcnn.build import build_model
from dcnn.data.atoms import AtomsCollate, AtomsDataset
from dcnn.data.readers import read_rmd17
from dcnn.models.forces import EnergyForceModel
from dcnn.models.triplets import dimenet_triplets, gemnet_triplets
from dcnn.paths import CONFIG_DIR

PRESETS = [
    "schnet",
    "cgcnn",
    "dimenet_pp",
    "forcenet",
    "gemnet_t",
    "schnet_paper",
    "cgcnn_paper",
    "dimenet_pp_paper",
    "forcenet_paper",
    "gemnet_t_paper",
]
TRIPLETS = {"dimenet_pp": "dimenet", "gemnet_t": "gemnet"}


def _model(preset: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={preset}", "experiment=md17_baseline"])
    torch.manual_seed(0)
    model, _ = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    return model, float(cfg.model.cutoff)


def _frames(count: int):
    data = read_rmd17(Path(os.environ["DCNN_DATA_ROOT"]) / "rmd17", "aspirin")
    return data.subset(np.arange(count))


def _median_seconds(work, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # the first calls of a parallel op also start its thread pool
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(preset: str, data, steps: int, rounds: int) -> dict[str, float]:
    model, cutoff = _model(preset)
    wrapped = EnergyForceModel(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    collate = AtomsCollate(cutoff)
    plain, kept = AtomsDataset(data), AtomsDataset(data, graph_cutoff=cutoff)
    groups = [list(range(k, k + 20)) for k in range(0, len(data), 20)]
    batches = [collate([kept[k] for k in group]) for group in groups]

    def train(count: int) -> None:
        for k in range(count):
            batch = batches[k % len(batches)]
            energy, forces = wrapped(batch, create_graph=True)
            target = (batch["energy"] - batch["energy"].mean()).float()
            loss = (energy - target).abs().mean() + 30 * (
                forces - batch["forces"].float()
            ).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    train(2)  # warm-up
    step = _median_seconds(lambda: train(steps), rounds, warmup=0) / steps
    graph = _median_seconds(lambda: collate([plain[k] for k in groups[0]]), 9)
    kept_graph = _median_seconds(lambda: collate([kept[k] for k in groups[0]]), 9)
    triplets = 0.0
    kind = TRIPLETS.get(preset.removesuffix("_paper"))
    if kind:
        batch, n_atoms = batches[0], len(batches[0]["numbers"])
        build = (
            (lambda: dimenet_triplets(batch["edge_index"], batch["edge_shift"], n_atoms))
            if kind == "dimenet"
            else (lambda: gemnet_triplets(batch["edge_index"], n_atoms))
        )
        triplets = _median_seconds(build, 9)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "step": step,
        "graph": graph,
        "kept_graph": kept_graph,
        "triplets": triplets,
        "parameters": parameters,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    frames = _frames(60)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 20 aspirin, "
        f"median of {args.rounds} rounds of {args.steps} steps",
        file=sys.stderr,
    )
    print(
        "| preset | parameters | ms/step | conformations/s | graph from scratch ms (share) | "
        "graph from kept lists ms | rebuild / kept step | triplets ms (share) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        result = measure(preset, frames, args.steps, args.rounds)
        step_ms = 1e3 * result["step"]
        graph, kept = 1e3 * result["graph"], 1e3 * result["kept_graph"]
        triplets = 1e3 * result["triplets"]
        triplet_cell = f"{triplets:.1f} ({triplets / step_ms:.1%})" if triplets else "-"
        kept_rate = 20e3 / (step_ms + kept)
        print(
            f"| {preset} | {result['parameters']:,} | {step_ms:.0f} | {kept_rate:.1f} | "
            f"{graph:.1f} ({graph / step_ms:.1%}) | {kept:.2f} | "
            f"{(step_ms + graph) / (step_ms + kept):.2f}x | {triplet_cell} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
