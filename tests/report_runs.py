"""Synthetic run folders as dcnn-train leaves them, and the report command run on them, for
the tests of `dcnn-report`'s tables and figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from dcnn.report import main

MD17_UNITS = {"energy": "kcal/mol", "forces": "kcal/mol/Angstrom", "positions": "Angstrom"}


VARIANTS = {
    "baseline": ("original", "original", "none"),
    "dc": ("irelu", "none", "power_of_ten"),
    "standardized": ("original", "original", "standardize"),
    "irelu_only": ("irelu", "original", "none"),
}


def run_config(
    task: str = "potential",
    variant: str = "baseline",
    molecule: str | None = "aspirin",
    pde: str | None = None,
    seed: int = 0,
    beta: float = 30.0,
    model: str = "dcnn.models.schnet.SchNet",
    activation: str | None = None,
    normalization: str | None = None,
) -> dict:
    default_activation, default_normalization, rescaling = VARIANTS[variant]
    dataset = {"molecule": molecule, "path": "rmd17", "n_train": 1000}
    if pde is not None:
        dataset = {"pde": pde, "path": f"{pde}.hdf5", "sample_index": -10}
    return {
        "task": task,
        "seed": seed,
        "tags": ["test"],
        "dataset": dataset,
        "model": {"_target_": model, "hidden_channels": 64},
        "activation": {"name": activation or default_activation, "scope": None},
        "normalization": {"name": normalization or default_normalization},
        "rescaling": {"name": rescaling},
        "loss": {"kind": "mae" if task == "potential" else "mse", "alpha": 1.0, "beta": beta},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.0001},
    }


def write_run(
    folder: Path,
    config: dict,
    status: str = "ok",
    test: dict | None = None,
    error: str | None = None,
    curve: list[tuple[int, float]] | None = None,
) -> Path:
    """A run folder as dcnn-train leaves it; ``curve`` adds csv/metrics.csv (train/loss)."""
    folder.mkdir(parents=True)
    record = {
        "status": status,
        "task": config["task"],
        "units": MD17_UNITS if config["task"] == "potential" and status != "failed" else {},
        "test": test or {},
        "train_last": {"loss": 1.0},
        "epochs": 5 if status == "ok" else 2,
        "wall_seconds": 12.5,
    }
    if error is not None:
        record["error"] = error
    (folder / "metrics.json").write_text(json.dumps(record))
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if curve is not None:
        (folder / "csv").mkdir()
        with open(folder / "csv" / "metrics.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", "step", "train/loss", "val/loss"])
            for step, loss in curve:
                writer.writerow([0, step, loss, ""])
            writer.writerow([0, curve[-1][0], "", 0.5])  # a validation-only row
    return folder


def mae(energy: float, force: float) -> dict:
    return {"energy_mae": energy, "force_mae": force, "energy_rmse": 2 * energy, "loss": 1.0}


@pytest.fixture
def md17_sweep(tmp_path: Path) -> Path:
    """Multirun folder: SchNet variants on aspirin and benzene, repeated seeds, a diverged
    cell, a failed run, and a run from a second model."""
    root = tmp_path / "sweep"
    runs = [
        (run_config(seed=0), "ok", mae(50.0, 1.2), None),
        (run_config(seed=1), "ok", mae(56.0, 1.22), None),
        (run_config(variant="dc", seed=0), "ok", mae(28.31, 1.67), None),
        (run_config(variant="dc", molecule="benzene", seed=0), "diverged", {}, "loss is nan"),
        (run_config(variant="dc", molecule="benzene", seed=1), "diverged", {}, "loss is inf"),
        (run_config(molecule="benzene", seed=0), "ok", mae(125.43, 0.39), None),
        (run_config(molecule="benzene", seed=1), "failed", {}, "RuntimeError: out of memory"),
        (run_config(variant="standardized"), "ok", mae(5.0, 0.5), None),
        (run_config(variant="irelu_only"), "ok", mae(7.0, 0.7), None),
        (run_config(model="dcnn.models.cgcnn.CGCNN"), "ok", mae(239.07, 14.2), None),
        (run_config(variant="dc", seed=1), "ok", {**mae(1.0, 1.0), "energy_mae": None}, None),
        (run_config(variant="dc", seed=2), "ok", mae(30.0, 1.7), None),
    ]
    for index, (config, status, test, error) in enumerate(runs):
        write_run(root / str(index), config, status, test, error)
    return root


def markdown_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row (header included, separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def report(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def beta_sweep(root: Path, with_curves: bool) -> Path:
    for index, (beta, energy, force) in enumerate(
        [(0.1, 10.0, 3.0), (1, 20.0, 1.0), (10, 40.0, 0.5)]
    ):
        curve = [(step, 10.0 / (1 + step * beta)) for step in range(0, 50, 10)]
        write_run(
            root / str(index),
            run_config(beta=beta),
            test=mae(energy, force),
            curve=curve if with_curves else None,
        )
    write_run(root / "3", run_config(beta=100), status="diverged", error="loss is nan")
    return root


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def size_sweep(root: Path) -> Path:
    """fig2 input: two variants x three sizes, two seeds at 100 frames, one diverged size."""
    runs = [
        ("dc", 100, 0, "ok", 40.0, 2.0),
        ("dc", 100, 1, "ok", 44.0, 2.2),
        ("dc", 400, 0, "ok", 20.0, 1.0),
        ("dc", 1600, 0, "diverged", None, None),
        ("standardized", 100, 0, "ok", 10.0, 1.5),
        ("standardized", 400, 0, "ok", 5.0, 0.8),
        ("standardized", 1600, 0, "ok", 2.5, 0.4),
    ]
    for index, (variant, n_train, seed, status, energy, force) in enumerate(runs):
        config = run_config(variant=variant, seed=seed)
        config["dataset"]["n_train"] = n_train
        test = mae(energy, force) if status == "ok" else {}
        write_run(root / str(index), config, status, test, None if status == "ok" else "nan")
    return root
