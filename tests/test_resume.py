"""Stopping and resuming runs: a run interrupted anywhere and relaunched with the same command ends
with the metrics and curves of the uninterrupted run; relaunching skips finished runs, refuses
changed settings and never deletes what a previous launch wrote."""

from __future__ import annotations

import csv
import json
import math
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_train, dcnn_train, record

from dcnn.data.generate import generate_advection
from dcnn.runs.folder import RunFolderError
from dcnn.train import run


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


def _signal_at(step: int, signum: int = signal.SIGTERM, times: int = 1) -> str:
    return (
        f"+callbacks.stop={{_target_:signal_at.SignalAt,step:{step},signum:{signum},times:{times}}}"
    )


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def _assert_same_numbers(ours: dict, reference: dict, what: str) -> None:
    assert set(ours) == set(reference), what
    for key, value in reference.items():
        assert math.isclose(ours[key], value, rel_tol=1e-6, abs_tol=1e-9), (what, key)


def _assert_same_curves(folder: Path, reference: Path) -> None:
    """The same rows, in the same order, with the same values to 1e-6 relative."""
    ours, theirs = _rows(folder), _rows(reference)
    assert [row["step"] for row in ours] == [row["step"] for row in theirs]
    for mine, their in zip(ours, theirs, strict=True):
        assert {k for k, v in mine.items() if v} == {k for k, v in their.items() if v}
        _assert_same_numbers(
            {k: float(v) for k, v in mine.items() if v},
            {k: float(v) for k, v in their.items() if v},
            f"row at step {their['step']}",
        )


def _checkpoint_step(folder: Path) -> int:
    state = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return int(state["global_step"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root) -> Path:
    """The uninterrupted run (4 epochs of 6 steps) that every resumed run must reproduce."""
    folder = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as patch:  # module scope: no leak into later tests
        patch.setenv("DCNN_DATA_ROOT", str(data_root))
        patch.setenv("WANDB_MODE", "offline")
        dcnn_train([*TINY, f"hydra.run.dir={folder}"], cwd=folder.parent)
    assert record(folder)["status"] == "ok"
    return folder


@pytest.mark.parametrize(
    "step,where",
    [(9, "mid-epoch"), (12, "an epoch's last step"), (24, "the last training step")],
)
def test_sigterm_then_the_same_command_resumes_to_the_uninterrupted_result(
    tmp_path, reference, step, where
):
    folder = tmp_path / "run"
    command = [*TINY, f"hydra.run.dir={folder}", _signal_at(step)]
    stopped = dcnn_train(command, cwd=tmp_path, expect=128 + signal.SIGTERM)
    interrupted = record(folder)
    assert interrupted["status"] == "interrupted", where
    assert interrupted["interrupted"]["signal"] == "SIGTERM"
    assert interrupted["interrupted"]["step"] == step
    assert interrupted["interrupted"]["checkpoint"] == str(folder / "checkpoints" / "last.ckpt")
    assert _checkpoint_step(folder) == step
    assert "saving a checkpoint" in stopped.stderr

    resumed = dcnn_train(command, cwd=tmp_path)
    final = record(folder)
    assert final["status"] == "ok" and final["launch"]["action"] == "resume"
    assert "resuming the interrupted run" in resumed.stdout
    _assert_same_numbers(final["test"], record(reference)["test"], where)
    _assert_same_numbers(final["train_last"], record(reference)["train_last"], where)
    _assert_same_curves(folder, reference)


def test_a_second_ctrl_c_stops_at_once_and_the_run_resumes_from_its_last_checkpoint(
    tmp_path, reference
):
    folder = tmp_path / "run"
    command = [*TINY, f"hydra.run.dir={folder}", _signal_at(9, signal.SIGINT, times=2)]
    dcnn_train(command, cwd=tmp_path, expect=130)
    interrupted = record(folder)
    assert interrupted["status"] == "interrupted"
    assert interrupted["interrupted"]["signal"] == "SIGINT"
    assert _checkpoint_step(folder) == 6  # the end of the first epoch: nothing saved at step 9
    assert interrupted["interrupted"]["step"] == 6  # where the resumption starts

    dcnn_train(command, cwd=tmp_path)
    assert record(folder)["status"] == "ok"
    _assert_same_numbers(record(folder)["test"], record(reference)["test"], "double Ctrl-C")
    _assert_same_curves(folder, reference)


def test_a_killed_run_leaves_its_checkpoint_and_curve_and_resumes_from_them(tmp_path, reference):
    folder = tmp_path / "run"
    command = [*TINY, f"hydra.run.dir={folder}", _signal_at(9, signal.SIGKILL)]
    dcnn_train(command, cwd=tmp_path, expect=-signal.SIGKILL)
    assert not (folder / "metrics.json").exists()
    assert _checkpoint_step(folder) == 6

    dcnn_train(command, cwd=tmp_path)
    final = record(folder)
    assert final["status"] == "ok" and final["launch"]["action"] == "resume"
    _assert_same_numbers(final["test"], record(reference)["test"], "SIGKILL")
    _assert_same_curves(folder, reference)


def test_step_checkpoints_that_fall_on_an_epoch_end_keep_the_epoch_end_state(tmp_path, reference):
    # Every 3 steps divides the 6-step epoch: the checkpoint at step 6 must be the one taken
    # after validation and the epoch-end hooks, or the resumed epoch's metrics go wrong.
    folder = tmp_path / "run"
    command = [
        *TINY,
        f"hydra.run.dir={folder}",
        "checkpoint_every_n_steps=3",
        _signal_at(7, signal.SIGKILL),
    ]
    dcnn_train(command, cwd=tmp_path, expect=-signal.SIGKILL)
    state = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 6
    loop = state["loops"]["fit_loop"]
    assert loop["epoch_progress"]["current"]["processed"] == 1  # saved at the epoch's end
    assert loop["epoch_loop.val_loop.batch_progress"]["total"]["completed"] > 0

    dcnn_train(command, cwd=tmp_path)
    _assert_same_numbers(record(folder)["test"], record(reference)["test"], "every 3 steps")
    _assert_same_curves(folder, reference)


def test_an_interrupted_wandb_run_is_marked_and_the_resumed_run_continues_it(tmp_path):
    from helpers import wait_for_wandb_run

    folder = tmp_path / "run"
    command = [*TINY, "trainer.max_epochs=2", "logger=wandb", f"hydra.run.dir={folder}"]
    dcnn_train([*command, _signal_at(3)], cwd=tmp_path, expect=128 + signal.SIGTERM)
    command.append(_signal_at(3))
    first = wait_for_wandb_run(folder)
    dcnn_train(command, cwd=tmp_path)

    runs = sorted((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    assert runs[0].name == runs[1].name  # the same W&B run id, continued
    second = wait_for_wandb_run(folder)

    def status_and_exit(records):
        status = [
            u.value_json
            for r in records
            if r.HasField("summary")
            for u in r.summary.update
            if u.key == "status"
        ]
        (exit_record,) = [r.exit for r in records if r.HasField("exit")]
        return json.loads(status[-1]), exit_record.exit_code

    assert status_and_exit(first) == ("interrupted", 1)
    assert status_and_exit(second) == ("ok", 0)


@pytest.fixture(scope="module")
def pde_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pdebench")
    generate_advection(
        root / "1D_Advection_Sols_beta0.1.hdf5", n_samples=10, nx=64, nt=41, progress=False
    )
    return root


PINN = [
    "experiment=pinn_advection",
    "dataset.n_domain=200",
    "dataset.n_boundary=100",
    "dataset.n_initial=200",
    "dataset.steps_per_epoch=50",
    "trainer.max_steps=120",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=5",
    "checkpoint_every_n_steps=20",
]


def test_a_pinn_run_checkpoints_every_n_steps_and_resumes_exactly(tmp_path, pde_root):
    command = [*PINN, f"pde_data_root={pde_root}"]
    dcnn_train([*command, f"hydra.run.dir={tmp_path / 'reference'}"], cwd=tmp_path)
    folder = tmp_path / "run"
    killed = [*command, f"hydra.run.dir={folder}", _signal_at(70, signal.SIGKILL)]
    dcnn_train(killed, cwd=tmp_path, expect=-signal.SIGKILL)
    assert _checkpoint_step(folder) == 60  # every 20 steps, not only at epoch ends (50, 100)

    dcnn_train(killed, cwd=tmp_path)
    final, expected = record(folder), record(tmp_path / "reference")
    assert final["status"] == "ok" and final["launch"]["action"] == "resume"
    assert final["test"]["nrmse"] > 0
    _assert_same_numbers(final["test"], expected["test"], "PINN")
    _assert_same_curves(folder, tmp_path / "reference")


# ---------------------------------------------------------------- relaunch rules, in process


def _tiny(*extra: str):
    return compose_train([*TINY, "trainer.max_epochs=1", *extra])


def test_relaunching_an_ok_run_skips_it_and_keeps_its_results(tmp_path, capsys):
    first = run(_tiny(), tmp_path)
    written = (tmp_path / "metrics.json").read_text()
    again = run(_tiny(), tmp_path)
    assert again["skipped"] and again["status"] == "ok" and again["test"] == first["test"]
    assert (tmp_path / "metrics.json").read_text() == written
    assert "skipped" in capsys.readouterr().out


def test_changed_settings_are_refused_with_the_differences(tmp_path):
    run(_tiny(), tmp_path)
    with pytest.raises(RunFolderError, match=r"optimizer\.lr: 0\.002 -> 0\.001") as info:
        run(_tiny("optimizer.lr=1e-3"), tmp_path)
    assert "rerun=ok" in str(info.value)
    # Settings that cannot change results may differ (progress bar, logger, data location).
    assert run(_tiny("trainer.enable_progress_bar=true"), tmp_path)["skipped"]


def test_failed_and_diverged_runs_are_rerun_only_when_asked_and_nothing_is_deleted(tmp_path):
    diverging = ("rescaling=fixed", "rescaling.scale=1e-300")
    assert run(_tiny(*diverging), tmp_path)["status"] == "diverged"
    skipped = run(_tiny(*diverging), tmp_path)
    assert skipped["skipped"] and skipped["status"] == "diverged"
    with pytest.raises(RunFolderError, match="rerun=.*not understood"):
        run(_tiny(*diverging, "rerun=sometimes"), tmp_path)

    again = run(_tiny(*diverging, "rerun=[failed,diverged]"), tmp_path)
    assert again["status"] == "diverged" and "skipped" not in again
    old = tmp_path / "previous" / "1-diverged"
    assert json.loads((old / "metrics.json").read_text())["status"] == "diverged"
    assert (old / "config_resolved.yaml").is_file() and (old / "csv" / "hparams.yaml").is_file()
    assert "rerun=diverged: running it again" in record(tmp_path)["launch"]["message"]


def test_ckpt_path_starts_a_run_from_a_given_checkpoint(tmp_path, reference):
    folder = tmp_path / "continued"
    with pytest.raises(RunFolderError, match="ckpt_path=.*no such checkpoint file"):
        run(compose_train([*TINY, f"ckpt_path={tmp_path / 'missing.ckpt'}"]), folder)
    checkpoint = reference / "checkpoints" / "last.ckpt"
    result = run(compose_train([*TINY, f"ckpt_path={checkpoint}"]), folder)
    assert record(folder)["launch"] == {
        "action": "resume",
        "checkpoint": str(checkpoint),
        "message": f"starting from ckpt_path={checkpoint}",
    }
    # The reference checkpoint is the end of training: this run only tests it.
    _assert_same_numbers(result["test"], record(reference)["test"], "ckpt_path")


def test_a_folder_another_process_trains_in_is_refused(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "launch.json").write_text(
            json.dumps(
                {
                    "pid": other.pid,
                    "host": socket.gethostname(),
                    "ended": False,
                    "started": "2026-12-01T10:00:00",
                }
            )
        )
        with pytest.raises(RunFolderError, match=f"in use: process {other.pid}"):
            run(_tiny(), tmp_path)
    finally:
        other.kill()
        other.wait()
    assert run(_tiny(), tmp_path)["status"] == "ok"  # the process is gone: the folder is free
