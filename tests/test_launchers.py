"""Sweeps through Hydra's launchers on this machine: jobs in parallel, each with its own slot, and
the local twin of the SLURM preset (submitit), whose preempted jobs are requeued and resume."""

from __future__ import annotations

import math
import os
import signal

import pytest
from helpers import TINY, dcnn_train, record


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_local_parallel_jobs_each_hold_a_slot_with_a_share_of_the_cores(tmp_path):
    sweep = tmp_path / "sweep"
    dcnn_train(
        [
            *TINY,
            "trainer.max_epochs=1",
            "loss.beta=1,10",
            "hydra/launcher=local_parallel",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}",
            "-m",
        ],
        cwd=tmp_path,
    )
    records = [record(sweep / job) for job in ("0", "1")]
    assert [r["status"] for r in records] == ["ok", "ok"]
    cores = len(os.sched_getaffinity(0))
    for r in records:
        assert r["resources"]["threads"] == max(1, cores // 2)
        assert r["resources"]["slot"] in (0, 1)


def test_slurm_local_twin_runs_jobs_as_processes_and_requeues_preempted_ones(tmp_path):
    """Each job is preempted once (SIGUSR2, the signal submitit and SLURM's --signal send), saves
    a checkpoint, is requeued by submitit and resumes to the result of an uninterrupted run."""
    sweep = tmp_path / "sweep"
    preempt = f"+callbacks.stop={{_target_:signal_at.SignalAt,step:9,signum:{signal.SIGUSR2}}}"
    dcnn_train(
        [
            *TINY,
            "loss.beta=1,10",
            preempt,
            "hydra/launcher=slurm_local",
            f"hydra.sweep.dir={sweep}",
            "-m",
        ],
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        final = record(sweep / job)
        assert final["status"] == "ok"
        assert final["launch"]["action"] == "resume"  # the requeued job resumed its checkpoint
    job_folders = [p for p in (sweep / ".submitit").iterdir() if any(p.glob("*_log.out"))]
    assert len(job_folders) == 2
    for folder in job_folders:  # each job was requeued by submitit
        assert "Requeued job" in "".join(log.read_text() for log in folder.glob("*_log.*"))
    reference = tmp_path / "reference"
    dcnn_train([*TINY, "loss.beta=1", f"hydra.run.dir={reference}"], cwd=tmp_path)
    for key, value in record(reference)["test"].items():
        assert math.isclose(record(sweep / "0")["test"][key], value, rel_tol=1e-6), key
