"""Shared test helpers: Hydra composition of the project's configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SWEEPS = REPO / "sweeps"
TESTS = Path(__file__).resolve().parent

# A SchNet small enough for a few seconds of training on real aspirin frames (6 steps an epoch).
TINY = [
    "dataset.n_train=60",
    "dataset.n_val=20",
    "dataset.n_test=40",
    "dataset.batch_size=10",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optimizer.lr=2e-3",
    "model.hidden_channels=32",
    "model.num_filters=32",
    "model.num_interactions=2",
    "model.num_gaussians=16",
]


def dcnn_train(
    arguments: list[str], cwd: Path, expect: int | None = 0, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `dcnn-train` in a new process (tests/ importable, for callbacks such as SignalAt)
    and wait for it to end; ``expect`` is the exit status it must end with."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dcnn.train", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if expect is not None and done.returncode != expect:
        raise AssertionError(
            f"dcnn-train exited with {done.returncode}, expected {expect}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
        )
    return done


def record(folder: Path) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def compose_train(
    overrides: list[str] = (), hydra_config: bool = False, searchpath: list[Path] = ()
) -> DictConfig:
    """Compose conf/train.yaml as dcnn-train does (sweeps/ comes from dcnn's search-path plugin)."""
    paths = ",".join(f"file://{p}" for p in searchpath)
    extra = [f"hydra.searchpath=[{paths}]"] if searchpath else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[*extra, *overrides],
            return_hydra_config=hydra_config,
        )


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# W&B offline runs are a LevelDB-style log of protobuf records (what `wandb sync` uploads):
# a 7-byte file header, then 32 KiB blocks of records, each with a 7-byte header
# (checksum, length, kind: full, or first/middle/last piece of a record split across blocks).
_WANDB_BLOCK = 32768
_WANDB_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``) as protobuf messages."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    records, pending, index = [], b"", _WANDB_HEADER
    while index + _WANDB_HEADER <= len(data):
        space_left = _WANDB_BLOCK - index % _WANDB_BLOCK
        if space_left < _WANDB_HEADER:
            index += space_left  # block padding
            continue
        _, length, kind = struct.unpack("<IHB", data[index : index + _WANDB_HEADER])
        index += _WANDB_HEADER
        piece, index = data[index : index + length], index + length
        if kind == 0 and length == 0:
            break  # zero-filled tail: the writer has not got this far
        pending = piece if kind in (_FULL, _FIRST) else pending + piece
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wait_for_wandb_run(run_folder: Path, timeout: float = 120) -> list:
    """Records of the one offline W&B run in ``run_folder/wandb``, once the writer has written
    its exit record (``wandb.finish`` returns before the file is complete on a busy machine)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        files = sorted((Path(run_folder) / "wandb").glob("offline-run-*/run-*.wandb"))
        records = wandb_records(files[-1]) if files else []
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        if time.monotonic() > deadline:
            kinds = [record.WhichOneof("record_type") for record in records]
            raise TimeoutError(f"no exit record in {files} after {timeout} s; records: {kinds}")
        time.sleep(0.2)


def assert_jet_matches_finite_differences(model, x, jet, step: float = 1e-4) -> None:
    """A float64 jet along the two input axes (value, d1, pure d2) against central finite
    differences of ``model`` at ``x``."""
    import torch

    with torch.no_grad():
        for k in range(2):
            shift = torch.zeros_like(x)
            shift[:, k] = step
            plus, minus, centre = model(x + shift), model(x - shift), model(x)
            torch.testing.assert_close(
                jet.d1[:, :, k], (plus - minus) / (2 * step), rtol=1e-7, atol=1e-8
            )
            torch.testing.assert_close(
                jet.d2[:, :, k], (plus - 2 * centre + minus) / step**2, rtol=1e-5, atol=1e-5
            )
        torch.testing.assert_close(jet.value, model(x), rtol=1e-14, atol=1e-14)
