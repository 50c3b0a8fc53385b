"""The pieces of long runs, one at a time: launch decisions, moving runs aside, the data order
that makes resumes and DDP exact, device slots, unique folders, sweep groups, W&B records."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dcnn.data.loaders import EpochOrder, ResumableLoader, training_loader
from dcnn.runs import folder as run_folder
from dcnn.runs.checkpoint import RunCheckpoint
from dcnn.runs.folder import (
    RunFolderError,
    config_differences,
    follow_launch,
    parse_rerun,
    plan_launch,
    write_launch,
)
from dcnn.runs.hydra_hooks import hydra_flags_first, job_statuses
from dcnn.runs.loggers import wandb_run_id
from dcnn.runs.record import sweep_group, write_metrics
from dcnn.runs.resolvers import unique_dir
from dcnn.runs.slots import claim_slot, slot_resources

CONFIG = {"seed": 0, "optimizer": {"lr": 0.001}, "trainer": {"enable_progress_bar": False}}


def _finished(folder: Path, status: str, config: dict = CONFIG, checkpoint: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    write_metrics(
        folder,
        status=status,
        task="potential",
        units={},
        test={},
        train_last={},
        epochs=1,
        wall_seconds=1.0,
    )
    if checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")


@pytest.mark.parametrize(
    "status,checkpoint,action",
    [
        ("ok", True, "skip"),
        ("failed", True, "skip"),
        ("diverged", False, "skip"),
        ("interrupted", True, "resume"),
        ("interrupted", False, "fresh"),
    ],
)
def test_what_a_relaunch_does_with_each_status(tmp_path, status, checkpoint, action):
    _finished(tmp_path, status, checkpoint=checkpoint)
    launch = plan_launch(tmp_path, CONFIG, set())
    assert launch.action == action
    if action == "resume":
        assert launch.checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    if action == "fresh":  # interrupted before its first checkpoint: moved aside, never deleted
        assert (tmp_path / "previous" / "1-interrupted" / "metrics.json").is_file()
        assert not (tmp_path / "metrics.json").exists()


def test_an_empty_or_new_folder_starts_fresh_and_a_checkpoint_without_record_resumes(tmp_path):
    assert plan_launch(tmp_path / "new", CONFIG, set()).action == "fresh"
    (tmp_path / "train.log").write_text("hydra's log of this launch\n")
    assert plan_launch(tmp_path, CONFIG, set()).action == "fresh"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    assert plan_launch(tmp_path, CONFIG, set()).action == "resume"  # the process was killed


def test_rerun_moves_each_old_run_aside_in_turn_and_keeps_logs_and_hydra_files(tmp_path):
    for attempt in (1, 2):
        _finished(tmp_path, "ok", checkpoint=True)
        (tmp_path / ".hydra").mkdir(exist_ok=True)
        (tmp_path / "train.log").write_text("appended by every launch\n")
        launch = plan_launch(tmp_path, CONFIG, parse_rerun("all"))
        assert launch.action == "fresh"
        moved = tmp_path / "previous" / f"{attempt}-ok"
        assert sorted(p.name for p in moved.iterdir()) == [
            "checkpoints",
            "config_resolved.yaml",
            "metrics.json",
        ]
        assert (tmp_path / ".hydra").is_dir() and (tmp_path / "train.log").is_file()


def test_rerun_values(tmp_path):
    assert parse_rerun("none") == set() == parse_rerun(None) == parse_rerun([])
    assert parse_rerun("failed") == {"failed"}
    assert parse_rerun(["failed", "diverged"]) == {"failed", "diverged"}
    assert parse_rerun("all") == {"ok", "diverged", "interrupted", "failed"}
    with pytest.raises(RunFolderError, match=r"rerun='finished'.*expected none, all"):
        parse_rerun("finished")


def test_config_differences_ignore_settings_that_cannot_change_results(tmp_path):
    _finished(tmp_path, "ok")
    same = {**CONFIG, "trainer": {"enable_progress_bar": True}, "data_root": "/elsewhere"}
    assert config_differences(tmp_path, same) == []
    changed = {**CONFIG, "seed": 1, "loss": {"beta": 10}}
    assert config_differences(tmp_path, changed) == [
        "loss.beta: '(unset)' -> 10",
        "seed: 0 -> 1",
    ]


def test_an_explicit_checkpoint_inside_a_folder_moved_aside_follows_it(tmp_path):
    folder = tmp_path / "run"
    _finished(folder, "failed", checkpoint=True)
    launch = plan_launch(folder, CONFIG, {"failed"}, str(folder / "checkpoints" / "last.ckpt"))
    assert launch.action == "resume"
    assert launch.checkpoint == (folder / "previous" / "1-failed" / "checkpoints" / "last.ckpt")
    assert launch.checkpoint.is_file()


def test_a_stale_launch_file_of_a_dead_process_does_not_lock_the_folder(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "launch.json").write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "ended": False})
    )
    assert plan_launch(tmp_path, CONFIG, set()).action == "fresh"


def test_processes_a_cluster_started_follow_the_main_process_decision(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(RunFolderError, match="did not record its decision"):
        follow_launch(tmp_path, timeout_seconds=0.2, poll_seconds=0.05)
    # A launch file of an earlier launch (before the requeue) is not this launch's decision.
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    write_launch(tmp_path, run_folder.Launch("fresh"))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(RunFolderError):
        follow_launch(tmp_path, timeout_seconds=0.2, poll_seconds=0.05)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    write_launch(tmp_path, run_folder.Launch("resume", checkpoint, "resuming"))
    launch = follow_launch(tmp_path, timeout_seconds=5, poll_seconds=0.05)
    assert (launch.action, launch.checkpoint) == ("resume", checkpoint)
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(RunFolderError, match="not the main one"):
        follow_launch(tmp_path)


def test_other_cluster_processes_learn_of_a_skip_or_a_refusal_at_once(tmp_path, monkeypatch):
    from dcnn.runs.folder import decide_as_follower, decide_as_main

    _finished(tmp_path / "done", "ok")
    # On one machine a skip leaves the folder as it was.
    assert decide_as_main(tmp_path / "done", CONFIG, set()).action == "skip"
    assert not (tmp_path / "done" / "launch.json").exists()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert decide_as_main(tmp_path / "done", CONFIG, set()).action == "skip"
    assert decide_as_follower(tmp_path / "done", None).action == "skip"
    changed = {**CONFIG, "seed": 1}
    with pytest.raises(RunFolderError, match="seed"):
        decide_as_main(tmp_path / "done", changed, set())
    with pytest.raises(RunFolderError, match="seed"):
        decide_as_follower(tmp_path / "done", None)


# ----------------------------------------------------------------------------- data order


def _epoch(loader) -> list[int]:
    return [int(index) for batch in loader for index in batch]


def test_two_processes_see_at_every_step_the_frames_one_process_sees():
    dataset = list(range(40))
    single = training_loader(dataset, 8, seed=3, rank=0, world_size=1)
    ranks = [training_loader(dataset, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 1):
        for loader in (single, *ranks):
            loader.order.set_epoch(epoch)
        steps = [sorted(batch.tolist()) for batch in single]
        shared = [sorted(a.tolist() + b.tolist()) for a, b in zip(*ranks, strict=True)]
        assert steps == shared and len(steps) == 5
    assert _epoch(single) != list(range(40))  # shuffled
    with pytest.raises(ValueError, match="global batch.*multiple of 3"):
        training_loader(dataset, 8, seed=3, rank=0, world_size=3)


def test_uneven_shares_are_padded_so_every_process_takes_the_same_number_of_steps():
    orders = [EpochOrder(10, seed=0, rank=r, world_size=3) for r in range(3)]
    shares = [list(order) for order in orders]
    assert [len(share) for share in shares] == [4, 4, 4]
    assert set().union(*map(set, shares)) == set(range(10))


def test_a_loader_resumes_mid_epoch_where_it_stopped_also_after_a_second_resume():
    dataset = list(range(30))
    uninterrupted = training_loader(dataset, 5, seed=1, rank=0, world_size=1)
    uninterrupted.order.set_epoch(2)
    expected = [batch.tolist() for batch in uninterrupted]

    first = training_loader(dataset, 5, seed=1, rank=0, world_size=1)
    first.order.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    second = training_loader(dataset, 5, seed=1, rank=0, world_size=1)
    second.load_state_dict(state)
    iterator = iter(second)
    seen.append(next(iterator).tolist())
    assert second.state_dict() == {"epoch": 2, "batches": 3}  # counted from the epoch start

    third = training_loader(dataset, 5, seed=1, rank=0, world_size=1)
    third.load_state_dict(second.state_dict())
    seen += [batch.tolist() for batch in third]
    assert seen == expected
    assert third.state_dict() == {"epoch": 3, "batches": 0}  # a finished epoch: the next one


def test_loaders_do_not_draw_from_the_global_random_generator():
    loader = training_loader(list(range(12)), 4, seed=0, rank=0, world_size=1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    _epoch(loader)
    assert torch.equal(torch.rand(3), expected)
    assert isinstance(loader, ResumableLoader)


def test_the_checkpoint_carries_and_restores_the_random_generators(tmp_path):
    callback = RunCheckpoint(tmp_path)
    checkpoint: dict = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    expected = torch.rand(4)
    torch.rand(100)
    callback.on_load_checkpoint(None, None, checkpoint)
    assert torch.equal(torch.rand(4), expected)


# ----------------------------------------------------------------------------- launching


def test_device_slots_give_gpus_in_turn_or_a_share_of_the_cores():
    assert slot_resources(0, 4, "gpu", n_gpus=4, n_cpus=32) == {"slot": 0, "devices": [0]}
    assert slot_resources(5, 8, "auto", n_gpus=4, n_cpus=32) == {"slot": 5, "devices": [1]}
    assert slot_resources(1, 2, "cpu", n_gpus=4, n_cpus=32) == {"slot": 1, "threads": 16}
    assert slot_resources(1, 4, "auto", n_gpus=0, n_cpus=2) == {"slot": 1, "threads": 1}


def test_each_running_job_holds_its_own_slot_until_it_ends(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from dcnn.runs.slots import claim_slot
        slot = claim_slot({str(tmp_path)!r}, 3)
        print(slot.index, flush=True)
        sys.stdin.readline()
        """
    )
    others = [
        subprocess.Popen(
            [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        held = sorted(int(process.stdout.readline()) for process in others)
        assert held == [0, 1]
        mine = claim_slot(tmp_path, 3)
        assert mine.index == 2
        with pytest.raises(RuntimeError, match="all 3 slots"):
            claim_slot(tmp_path, 3)
        mine.release()
        assert claim_slot(tmp_path, 3).index == 2
    finally:
        for process in others:
            process.communicate("done\n")
    assert claim_slot(tmp_path, 3).index == 0  # the processes ended: their slots are free


def test_two_processes_naming_the_same_default_folder_get_two_folders(tmp_path):
    base = str(tmp_path / "outputs" / "runs" / "2026-12-01" / "12-00-00")
    script = (
        "import sys; from dcnn.runs.resolvers import unique_dir; "
        "print(unique_dir('RUN', 'RunMode.RUN', sys.argv[1]))"
    )
    launches = [
        subprocess.Popen([sys.executable, "-c", script, base], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    folders = sorted(process.communicate()[0].strip() for process in launches)
    assert folders == [base, f"{base}-1", f"{base}-2"]
    assert all(Path(folder).is_dir() for folder in folders)
    # In one process the name always resolves to the folder it claimed; in another mode (a
    # multirun reading the run folder's name) nothing is created.
    assert unique_dir("RUN", "RUN", base + "x") == unique_dir("RUN", "RUN", base + "x")
    assert unique_dir("RUN", "MULTIRUN", str(tmp_path / "nothing")) == str(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_hydra_flags_may_stand_anywhere_on_the_command_line():
    assert hydra_flags_first(["a=1", "-m", "b=1,2"]) == ["-m", "a=1", "b=1,2"]
    assert hydra_flags_first(["a=1", "--cfg", "job", "--resolve"]) == [
        "--cfg",
        "job",
        "--resolve",
        "a=1",
    ]
    assert hydra_flags_first(["a=1", "--info"]) == ["--info", "a=1"]
    assert hydra_flags_first(["--info", "searchpath", "a=1"]) == ["--info", "searchpath", "a=1"]
    assert hydra_flags_first(["--info", "a=1"]) == ["--info", "a=1"]
    assert hydra_flags_first(["x=1", "--config-name=train", "-cn", "train"]) == [
        "--config-name=train",
        "-cn",
        "train",
        "x=1",
    ]


def test_sweep_groups_keep_the_date():
    assert sweep_group(Path("outputs/multiruns/2026-12-01/15-26-31")) == "2026-12-01_15-26-31"
    assert sweep_group(Path("/abs/outputs/multiruns/2026-12-02/15-26-31")) == "2026-12-02_15-26-31"
    assert sweep_group(Path("/scratch/studies/fig1")) == "fig1"


def test_the_wandb_run_of_a_folder_is_found_for_resuming(tmp_path):
    assert wandb_run_id(tmp_path) is None
    run = tmp_path / "wandb" / "offline-run-20261201_120000-ab12cd34"
    run.mkdir(parents=True)
    (tmp_path / "wandb" / "latest-run").symlink_to(run.name)
    assert wandb_run_id(tmp_path) == "ab12cd34"


def test_sweep_status_counts_leave_out_runs_moved_aside(tmp_path):
    for job, status in enumerate(("ok", "diverged", "ok")):
        _finished(tmp_path / str(job), status)
    _finished(tmp_path / "1" / "previous" / "1-failed", "failed")
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "metrics.json").write_text("{not json")
    assert dict(job_statuses(tmp_path)) == {"ok": 2, "diverged": 1, "unreadable": 1}


def test_an_unreadable_record_is_named_with_what_to_do(tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "finished"}')
    with pytest.raises(Exception, match=r"metrics\.json: not a dcnn-train record.*move it away"):
        plan_launch(tmp_path, CONFIG, set())


def test_main_process_detection_reads_the_launchers_variables(monkeypatch):
    from dcnn.runs.ddp import is_main_process

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert is_main_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert is_main_process()
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert not is_main_process()
    assert os.environ["LOCAL_RANK"] == "0"


def test_the_launch_size_counts_the_sweep_file_and_the_command_line():
    from helpers import compose_train

    from dcnn.runs.hydra_hooks import launch_size

    config = compose_train(["sweeps=fig1_beta"], hydra_config=True)
    assert launch_size(config) == 8
    # As Hydra records a command line `-m sweeps=fig1_beta loss.beta=1,10 seed=0,1,2`: the
    # command line's betas replace the file's eight.
    OmegaConf.set_readonly(config, False)
    config.hydra.overrides.task = ["sweeps=fig1_beta", "loss.beta=1,10", "seed=0,1,2"]
    assert launch_size(config) == 6
    config.hydra.sweeper.params = None
    config.hydra.overrides.task = ["loss.beta=1"]
    assert launch_size(config) == 1


def test_sweep_status_counts_of_one_launch_leave_out_later_job_numbers(tmp_path):
    for job, status in enumerate(("ok", "diverged", "ok")):
        _finished(tmp_path / str(job), status)
    assert dict(job_statuses(tmp_path, n_jobs=2)) == {"ok": 1, "diverged": 1}
