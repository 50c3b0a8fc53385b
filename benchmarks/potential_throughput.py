"""Training throughput of `dcnn-train`'s step versus a bare PyTorch loop (same model, data, batch).

Both sides train SchNet (energy + forces, double backprop) on the same aspirin frames with the
same batch size, loss and optimizer; the framework side runs the real PotentialTask inside a
Lightning Trainer with per-step loss logging and torchmetrics MAE/RMSE. Rounds alternate
between the two to share machine noise; the median conformations/s of each is compared.

    DCNN_DATA_ROOT=../shared/data .venv/bin/python benchmarks/potential_throughput.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from dcnn.models.forces import EnergyForceModel
from dcnn.paths import CONFIG_DIR
from dcnn.runs.checkpoint import RunCheckpoint
from dcnn.runs.interrupt import InterruptGuard
from dcnn.runs.loggers import RunCSVLogger
from dcnn.tasks.potential import build_potential_run
from dcnn.train import task_parts


def _setup(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(0)
    datamodule, task, *_ = build_potential_run(cfg, task_parts(cfg))
    return cfg, datamodule, task


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.frames = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step > self.warmup:
            self.frames += len(batch["n_atoms"])


def framework_rate(overrides: list[str], warmup: int, steps: int, device: str) -> float:
    _, datamodule, task = _setup(overrides)
    timer = _StepTimer(warmup)
    with tempfile.TemporaryDirectory() as folder, InterruptGuard() as guard:
        # What dcnn-train adds to Lightning: the CSV log, last.ckpt at every epoch end (every 50
        # steps here) and the signal check after every step.
        trainer = pl.Trainer(
            accelerator=device,
            devices=1,
            max_steps=warmup + steps,
            logger=RunCSVLogger(Path(folder)),
            callbacks=[timer, RunCheckpoint(Path(folder), guard=guard)],
            enable_progress_bar=False,
            limit_val_batches=0,
            enable_model_summary=False,
            inference_mode=False,
            use_distributed_sampler=False,
            log_every_n_steps=10,
        )
        trainer.fit(task, datamodule=datamodule)
    if device == "cuda":
        torch.cuda.synchronize()
    return timer.frames / (time.perf_counter() - timer.start)


def bare_rate(overrides: list[str], warmup: int, steps: int, device: str) -> float:
    cfg, datamodule, task = _setup(overrides)
    model = EnergyForceModel(task.model.energy_model).to(device).train()
    scaler = task.scaler.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr, fused=cfg.optimizer.fused)
    alpha, beta = cfg.loss.alpha, cfg.loss.beta
    frames, start, step = 0, 0.0, 0
    while step < warmup + steps:
        for batch in datamodule.train_dataloader():
            if step == warmup:
                start = time.perf_counter()
            batch = {key: value.to(device) for key, value in batch.items()}
            energy, forces = model(batch, create_graph=True)
            target_e = scaler.encode_energy(batch["energy"], batch["n_atoms"]).to(energy.dtype)
            target_f = scaler.encode_forces(batch["forces"]).to(forces.dtype)
            loss = (
                alpha * (energy - target_e).abs().mean() + beta * (forces - target_f).abs().mean()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step > warmup:
                frames += len(batch["n_atoms"])
            if step == warmup + steps:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=schnet_paper")
    args = parser.parse_args(argv)
    overrides = ["dataset.n_train=1000", "dataset.n_val=10", "dataset.n_test=10", *args.overrides]
    framework, bare = [], []
    for _ in range(args.rounds):
        bare.append(bare_rate(overrides, args.warmup, args.steps, args.device))
        framework.append(framework_rate(overrides, args.warmup, args.steps, args.device))
    fw, ref = statistics.median(framework), statistics.median(bare)
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"steps={args.steps} rounds={args.rounds} overrides={overrides}"
    )
    print(
        f"bare PyTorch loop : {ref:8.1f} conformations/s  (rounds: "
        + ", ".join(f"{r:.1f}" for r in bare)
        + ")"
    )
    print(
        f"dcnn-train step   : {fw:8.1f} conformations/s  (rounds: "
        + ", ".join(f"{r:.1f}" for r in framework)
        + ")"
    )
    print(f"framework overhead: {100 * (ref / fw - 1):+.1f}%  (target < 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
