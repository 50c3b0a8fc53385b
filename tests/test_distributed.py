"""DDP on CPU (gloo, 2 processes): a multirun runs each job once, two processes train as one does
with the same seed and global batch (structures of different sizes and fixed atoms too), and an
interruption of one process stops both at the same step, to be resumed exactly."""

from __future__ import annotations

import csv
import math
import signal

import pytest
from helpers import TINY, dcnn_train, record, wait_for_wandb_run

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


def _losses(folder) -> list[tuple[int, float]]:
    with open(folder / "csv" / "metrics.csv") as handle:
        return [
            (int(r["step"]), float(r["train/loss"]))
            for r in csv.DictReader(handle)
            if r.get("train/loss")
        ]


def _epoch_metrics(folder) -> list[tuple[int, float, float]]:
    """(step, train energy MAE, train force MAE) of the epoch-level rows."""
    with open(folder / "csv" / "metrics.csv") as handle:
        return [
            (int(r["step"]), float(r["train/energy_mae"]), float(r["train/force_mae"]))
            for r in csv.DictReader(handle)
            if r.get("train/energy_mae")
        ]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-8)


def test_a_ddp_multirun_runs_each_job_once_into_one_folder_with_one_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    done = dcnn_train(
        [
            *TINY,
            "trainer.max_epochs=1",
            *DDP,
            "logger=wandb",
            "loss.beta=1,10",
            f"hydra.sweep.dir={sweep}",
            "-m",
        ],
        cwd=tmp_path,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no second sweep folder
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert record(sweep / job)["status"] == "ok"
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1
        wait_for_wandb_run(sweep / job)
        assert (sweep / job / "ddp_rank_1.log").is_file()  # the second process logged here
    assert "2 jobs: 2 ok" in done.stdout


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, data_root) -> tuple:
    folder = tmp_path_factory.mktemp("single") / "run"
    with pytest.MonkeyPatch.context() as patch:  # module scope: before the autouse fixture
        patch.setenv("DCNN_DATA_ROOT", str(data_root))
        dcnn_train([*TINY, f"hydra.run.dir={folder}"], cwd=folder.parent)
    return folder


def test_two_processes_train_as_one_does_with_the_same_global_batch(tmp_path, single_process):
    folder = tmp_path / "ddp"
    dcnn_train([*TINY, *DDP, f"hydra.run.dir={folder}"], cwd=tmp_path)
    ours, reference = _losses(folder), _losses(single_process)
    assert [step for step, _ in ours] == [step for step, _ in reference] and len(ours) == 24
    assert all(_close(a, b) for (_, a), (_, b) in zip(ours, reference, strict=True))
    expected = record(single_process)["test"]
    assert all(_close(record(folder)["test"][key], value) for key, value in expected.items())
    for ours, theirs in zip(_epoch_metrics(folder), _epoch_metrics(single_process), strict=True):
        assert ours[0] == theirs[0] and _close(ours[1], theirs[1]) and _close(ours[2], theirs[2])


def test_a_signal_to_one_process_stops_both_at_the_same_step(tmp_path, single_process):
    folder = tmp_path / "ddp"
    command = [
        *TINY,
        *DDP,
        f"hydra.run.dir={folder}",
        f"+callbacks.stop={{_target_:signal_at.SignalAt,step:9,rank:0,signum:{signal.SIGTERM}}}",
    ]
    dcnn_train(command, cwd=tmp_path, expect=128 + signal.SIGTERM)
    assert record(folder)["status"] == "interrupted"
    assert record(folder)["interrupted"]["step"] == 9
    dcnn_train(command, cwd=tmp_path)
    assert record(folder)["status"] == "ok"
    expected = record(single_process)["test"]
    assert all(_close(record(folder)["test"][key], value) for key, value in expected.items())
    assert all(
        _close(a, b)
        for (_, a), (_, b) in zip(_losses(folder), _losses(single_process), strict=True)
    )
    # The epoch the signal cut in two reports its training metrics over all of its batches, of
    # both processes, as the uninterrupted run does.
    resumed, uninterrupted = _epoch_metrics(folder), _epoch_metrics(single_process)
    assert len(resumed) == len(uninterrupted) == 4
    for ours, theirs in zip(resumed, uninterrupted, strict=True):
        assert ours[0] == theirs[0] and _close(ours[1], theirs[1]) and _close(ours[2], theirs[2])


def test_two_processes_train_as_one_on_structures_of_different_sizes_with_fixed_atoms(
    tmp_path, data_root
):
    # Slabs of 49 and 97 atoms, 36 and 72 of them fixed: the processes' halves of a batch hold
    # different numbers of free atoms, so their mean force losses must be weighted by them.
    folder = tmp_path / "slabs"
    folder.mkdir()
    for name in ("random1000156.traj", "random1000163.traj"):
        (folder / name).symlink_to(data_root / "oc20" / name)
    overrides = [
        *TINY,
        "dataset=oc20",
        f"dataset.path={folder}",
        "dataset.split=frames",
        "dataset.n_train=40",
        "dataset.n_val=8",
        "dataset.n_test=15",
        "dataset.batch_size=8",
        "trainer.max_epochs=2",
        "model.cutoff=3.0",
    ]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    dcnn_train([*overrides, f"hydra.run.dir={single}"], cwd=tmp_path)
    dcnn_train([*overrides, *DDP, f"hydra.run.dir={ddp}"], cwd=tmp_path)
    ours, reference = _losses(ddp), _losses(single)
    assert len(ours) == len(reference) == 10
    assert all(_close(a, b) for (_, a), (_, b) in zip(ours, reference, strict=True))
    expected = record(single)["test"]
    assert all(_close(record(ddp)["test"][key], value) for key, value in expected.items())
