"""`dcnn-train` as users type it: Hydra flags anywhere, exit statuses, sweep summaries, default
folders that never collide, and launchers that say what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO, TINY, dcnn_train, record


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]


def test_multirun_flag_at_the_end_of_the_line(tmp_path):
    done = dcnn_train(
        [*ONE_EPOCH, "loss.beta=1,100", f"hydra.sweep.dir={tmp_path / 'sweep'}", "-m"],
        cwd=tmp_path,
    )
    assert [record(tmp_path / "sweep" / job)["status"] for job in ("0", "1")] == ["ok", "ok"]
    assert f"[dcnn] sweep {tmp_path / 'sweep'}: 2 jobs: 2 ok" in done.stdout
    assert not (tmp_path / "outputs").exists()  # no stray run folder beside the sweep


def test_a_failed_job_is_recorded_and_the_sweep_goes_on_and_counts_it(tmp_path):
    sweep = tmp_path / "sweep"
    done = dcnn_train(
        [*ONE_EPOCH, "dataset.n_train=1000000,60", f"hydra.sweep.dir={sweep}", "-m"],
        cwd=tmp_path,
        expect=1,
    )
    failed, ok = record(sweep / "0"), record(sweep / "1")
    assert failed["status"] == "failed" and "n_train" in failed["error"]
    assert ok["status"] == "ok"
    assert "2 jobs: 1 ok, 1 failed" in done.stdout
    # A smaller launch into the same folder counts its own jobs only (job 1 is not in it).
    again = dcnn_train(
        [*ONE_EPOCH, "dataset.n_train=1000000", f"hydra.sweep.dir={sweep}", "-m"],
        cwd=tmp_path,
        expect=1,
    )
    assert f"[dcnn] sweep {sweep}: 1 jobs: 1 failed" in again.stdout


def test_cfg_and_info_flags_at_the_end_of_the_line(tmp_path):
    config = dcnn_train(["debug=fast", "loss.beta=7", "--cfg", "job"], cwd=tmp_path)
    assert "beta: 7" in config.stdout and "n_train: 40" in config.stdout
    info = dcnn_train(["debug=fast", "--info", "searchpath"], cwd=tmp_path)
    assert f"file://{REPO}" in info.stdout  # sweeps/ comes from dcnn's search-path plugin
    assert not (tmp_path / "outputs").exists()  # printing the config creates no run folder


def test_a_diverged_job_does_not_stop_the_sweep_but_the_exit_status_tells(tmp_path):
    sweep = tmp_path / "sweep"
    done = dcnn_train(
        [
            *ONE_EPOCH,
            "rescaling=fixed",
            "rescaling.scale=1e-300,1e4",
            f"hydra.sweep.dir={sweep}",
            "-m",
        ],
        cwd=tmp_path,
        expect=1,
    )
    assert [record(sweep / job)["status"] for job in ("0", "1")] == ["diverged", "ok"]
    assert "2 jobs: 1 ok, 1 diverged" in done.stdout
    single = dcnn_train(
        [
            *ONE_EPOCH,
            "rescaling=fixed",
            "rescaling.scale=1e-300",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        cwd=tmp_path,
        expect=1,
    )
    assert "status=diverged" in single.stdout


def test_slurm_launcher_without_slurm_says_what_to_use_instead(tmp_path):
    done = dcnn_train(["-m", "hydra/launcher=slurm", "loss.beta=1,2"], cwd=tmp_path, expect=2)
    assert "sbatch, which is not on this machine's PATH" in done.stderr
    assert "hydra/launcher=slurm_local" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_parallel_slots_with_ddp_jobs_say_what_to_use_instead(tmp_path):
    arguments = ["-m", "hydra/launcher=local_parallel", "trainer=ddp", "loss.beta=1,2"]
    done = dcnn_train([*arguments, "trainer.accelerator=cpu"], cwd=tmp_path, expect=2)
    assert "cannot start trainer=ddp's extra processes" in done.stderr
    assert "hydra/launcher=slurm" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_two_launches_at_once_get_two_default_folders(tmp_path):
    command = [sys.executable, "-m", "dcnn.train", "debug=fast", "trainer.max_epochs=1"]
    launches = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for launch in launches:
        _, stderr = launch.communicate(timeout=300)
        assert launch.returncode == 0, stderr.decode()[-2000:]
    (day,) = (tmp_path / "outputs" / "runs").iterdir()
    folders = sorted(day.iterdir())
    assert len(folders) == 2
    assert all(record(folder)["status"] == "ok" for folder in folders)
