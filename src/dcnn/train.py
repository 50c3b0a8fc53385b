"""`dcnn-train`: the Hydra application that runs one training job (or a multirun of them).

Every job, whatever happens to it, leaves ``metrics.json`` in its output folder with status
``ok``, ``diverged`` (non-finite or exploding loss: recorded, the sweep goes on),
``interrupted`` (stopped by a signal, with a checkpoint to resume from) or ``failed``
(re-raised). Relaunching the same command into the same folder skips finished jobs and resumes
interrupted ones (``dcnn.runs.folder``).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from dcnn.build import config_to_dict
from dcnn.paths import CONFIG_DIR
from dcnn.runs import ddp, slots
from dcnn.runs.checkpoint import RunCheckpoint, last_checkpoint
from dcnn.runs.folder import (
    Launch,
    decide_as_follower,
    decide_as_main,
    end_launch,
    parse_rerun,
)
from dcnn.runs.hydra_hooks import SweepHooks, hydra_flags_first
from dcnn.runs.interrupt import InterruptGuard, RunInterrupted, exit_interrupted, signal_name
from dcnn.runs.loggers import build_loggers, finish_wandb, run_name
from dcnn.runs.record import CONFIG_FILE, sweep_group, write_metrics
from dcnn.tasks.common import DivergedError
from dcnn.tasks.weighting import build_weighting

log = logging.getLogger("dcnn")


def task_parts(cfg: DictConfig) -> dict:
    """What both tasks take from the config besides model and data."""
    return {
        "weighting": build_weighting(task=cfg.task, **cfg.weighting),
        "optimizer": hydra.utils.instantiate(cfg.optimizer),
        "scheduler": None if cfg.scheduler is None else hydra.utils.instantiate(cfg.scheduler),
        "scheduler_interval": cfg.scheduler_interval,
        "divergence_ratio": cfg.divergence_ratio,
        "divergence_patience": cfg.divergence_patience,
    }


def _builder(task: str):
    if task == "potential":
        from dcnn.tasks.potential import build_potential_run

        return build_potential_run
    if task == "pinn":
        from dcnn.tasks.pinn import build_pinn_run

        return build_pinn_run
    raise ValueError(f"task={task!r}; expected potential or pinn")


def _test_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for result in results:
        merged.update({key.removeprefix("test/"): float(value) for key, value in result.items()})
    return merged


def _decide(output_dir: Path, cfg: DictConfig, config: dict) -> Launch:
    """This launch's decision: made by the main process, followed by the others."""
    if not ddp.is_main_process():
        return decide_as_follower(output_dir, ddp.published_job())
    return decide_as_main(output_dir, config, parse_rerun(cfg.rerun), cfg.ckpt_path)


def _checkpoint_step(checkpoint: Path) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    return int(state["global_step"])


def _trainer_plugins() -> list:
    # Under SLURM the run's own signal handling checkpoints and stops (and submitit requeues);
    # Lightning's automatic requeue would save a second kind of checkpoint.
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


@dataclass
class _Progress:
    """What a run has built and measured so far: its record is written from it, whatever
    stopped the run."""

    trainer: pl.Trainer | None = None
    task: pl.LightningModule | None = None
    units: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)


def _train_and_test(
    cfg: DictConfig,
    output_dir: Path,
    launch: Launch,
    guard: InterruptGuard,
    progress: _Progress,
    name: str,
    group: str | None,
) -> None:
    datamodule, progress.task, progress.units, report, progress.info = _builder(cfg.task)(
        cfg, task_parts(cfg)
    )
    if ddp.is_main_process():
        (output_dir / "surgery.txt").write_text(report.summary() + "\n")
    log.info("model changes:\n%s", report.summary())
    if cfg.get("init") is not None:  # before fit: a resumed run loads its checkpoint over it
        from dcnn.init import initialise

        model = getattr(progress.task.model, "energy_model", progress.task.model)
        initialised = initialise(cfg.init, model, datamodule, cfg.seed, task=progress.task)
        if initialised is not None:
            progress.info["init"] = initialised.to_dict()
            if ddp.is_main_process():
                (output_dir / "init.txt").write_text(initialised.summary() + "\n")
    resume_step = None if launch.checkpoint is None else _checkpoint_step(launch.checkpoint)
    logged_config = {**config_to_dict(cfg), "surgery": report.to_dict(), **progress.info}
    loggers = build_loggers(cfg, output_dir, name, group, logged_config, resume_step)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    progress.trainer = trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=loggers,
        callbacks=[RunCheckpoint(output_dir, cfg.checkpoint_every_n_steps, guard), *callbacks],
        default_root_dir=str(output_dir),
        inference_mode=False,  # forces and PDE residuals need gradients at test time
        use_distributed_sampler=False,  # the loaders shard training data themselves
        plugins=_trainer_plugins(),
    )
    # The run's own checkpoints (or one the user named) hold RNG and loop state.
    trainer.fit(
        progress.task, datamodule=datamodule, ckpt_path=launch.checkpoint, weights_only=False
    )
    if guard.signum is not None:  # came during the last step: stop before testing
        raise RunInterrupted(guard.signum)
    progress.test = _test_metrics(trainer.test(progress.task, datamodule=datamodule, verbose=False))


def _write_record(
    output_dir: Path,
    cfg: DictConfig,
    progress: _Progress,
    status: str,
    error: str | None,
    signum: int | None,
    extra: dict,
    wall_seconds: float,
) -> Path:
    trainer = progress.trainer
    if status == "interrupted":
        saved = last_checkpoint(output_dir)
        extra["interrupted"] = {
            "signal": signal_name(signum),
            # Where a resumption starts: the checkpoint's step (after a second Ctrl-C the run
            # stopped later than its last checkpoint).
            "step": _checkpoint_step(saved) if saved.is_file() else 0,
            "checkpoint": str(saved) if saved.is_file() else None,
        }
    return write_metrics(
        output_dir,
        status=status,
        task=cfg.task,
        units=progress.units,
        test=progress.test,
        train_last=getattr(progress.task, "last_train_terms", {}),
        epochs=trainer.current_epoch if trainer is not None else 0,
        wall_seconds=wall_seconds,
        error=error,
        extra={"info": progress.info, **extra},
    )


def run(
    cfg: DictConfig,
    output_dir: Path,
    overrides: list[str] | None = None,
    group: str | None = None,
    hydra_overrides: list[str] | None = None,
    resources: dict | None = None,
) -> dict:
    """Run one job in ``output_dir`` and write its ``metrics.json``; returns what was written
    (or, for a skipped job, what the folder already held, with ``skipped: True``).

    Raises ``RunInterrupted`` after recording an interrupted run.
    """
    start = time.time()
    output_dir = Path(output_dir)
    _builder(cfg.task)  # an unknown task fails before the folder is touched
    main_process = ddp.is_main_process()
    launch = _decide(output_dir, cfg, config_to_dict(cfg))
    if launch.action == "skip":
        print(f"[dcnn] skipped {output_dir}: {launch.message}", flush=True)
        return {**(launch.record or {}), "skipped": True}
    if main_process:
        if launch.message:
            print(f"[dcnn] {output_dir}: {launch.message}", flush=True)
        (output_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))

    progress = _Progress()
    status, error, signum = "failed", None, None
    job_environment = (
        ddp.job_environment(output_dir, overrides or [], hydra_overrides or [], launch.to_dict())
        if main_process
        else nullcontext()
    )
    with InterruptGuard() as guard, job_environment:
        try:
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            _train_and_test(
                cfg, output_dir, launch, guard, progress, run_name(overrides or []), group
            )
            status = "ok"
        except DivergedError as exc:
            status, error = "diverged", str(exc)
            log.warning("run diverged: %s", exc)
        except RunInterrupted as exc:
            status, signum = "interrupted", exc.signum
        except SystemExit as exc:
            if guard.signum is None:
                error = f"SystemExit: {exc}"
                raise
            status, signum = "interrupted", guard.signum  # Lightning's exit on a second Ctrl-C
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            exc.recorded_in = output_dir  # the record says failed; a sweep goes on (_hydra_main)
            raise
        finally:
            guard.recording = True  # a signal now must not cut the record short
            if progress.trainer is not None:
                for logger in progress.trainer.loggers:
                    logger.finalize(status)
            if main_process:
                extra = {
                    "launch": launch.to_dict(),
                    **({"resources": resources} if resources else {}),
                }
                path = _write_record(
                    output_dir, cfg, progress, status, error, signum, extra, time.time() - start
                )
                end_launch(output_dir, status)
                _print_summary(status, progress.test, progress.units, path)
            finish_wandb(status)
            if progress.trainer is not None:  # reap the DDP processes Lightning started
                ddp.stop_extra_processes(progress.trainer)
    if status == "interrupted":
        raise RunInterrupted(signum)
    if status == "ok" and guard.signum is not None:
        raise RunInterrupted(guard.signum)  # came while recording: the run is done, stop after it
    return {"status": status, "test": progress.test, "units": progress.units}


def _print_summary(status: str, test: dict[str, float], units: dict[str, str], path: Path) -> None:
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    shown = {
        k: v
        for k, v in test.items()
        if k in ("energy_mae", "force_mae", "rmse", "nrmse", "mse", "rel_l2")
    }
    unit_of = {"energy_mae": units.get("energy", ""), "force_mae": units.get("forces", "")}
    parts = [f"{k} = {v:.4g} {unit_of.get(k, '')}".rstrip() for k, v in shown.items()]
    print(f"[dcnn] status={status}  " + "  ".join(parts) + f"\n[dcnn] metrics: {path}", flush=True)


def _parallel_slot(hydra_cfg, cfg: DictConfig):
    """The device slot of a job of ``hydra/launcher=local_parallel`` (None otherwise)."""
    launcher = hydra_cfg.launcher
    if hydra_cfg.mode != RunMode.MULTIRUN or not str(launcher.get("_target_", "")).endswith(
        "JoblibLauncher"
    ):
        return None, None
    n_jobs = int(launcher.n_jobs)
    slot = slots.claim_slot(Path(hydra_cfg.sweep.dir), n_jobs)
    resources = slots.slot_resources(
        slot.index,
        n_jobs,
        str(cfg.trainer.accelerator),
        torch.cuda.device_count(),
        slots.available_cpus(),
    )
    if "devices" in resources and cfg.trainer.devices in (1, "1", "auto"):
        cfg.trainer.devices = resources["devices"]
    if "threads" in resources:
        torch.set_num_threads(resources["threads"])
    return slot, resources


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    group = cfg.group
    if group is None and multirun:
        group = sweep_group(Path(hydra_cfg.sweep.dir))
    slot, resources = _parallel_slot(hydra_cfg, cfg)
    try:
        result = run(
            cfg,
            Path(hydra_cfg.runtime.output_dir),
            list(hydra_cfg.overrides.task),
            group,
            list(hydra_cfg.overrides.hydra),
            resources,
        )
    except RunInterrupted as stopped:
        if ddp.is_main_process():
            exit_interrupted(stopped.signum)
        return  # the other DDP processes end quietly: the main one exits with the status
    except Exception as exc:
        if not (multirun and hasattr(exc, "recorded_in")):
            raise
        # Recorded as failed: the other jobs run, the summary counts it, the exit status is 1.
        log.exception("job %s failed; the sweep goes on", exc.recorded_in)
        return
    finally:
        if slot is not None:
            slot.release()
    if not multirun and result["status"] != "ok":
        raise SystemExit(1)


def main() -> None:
    job = ddp.published_job()
    if job is not None:  # a DDP process Lightning started: run the main process's job
        sys.argv = [sys.argv[0], *ddp.job_argv(job)]
    sys.argv = [sys.argv[0], *hydra_flags_first(sys.argv[1:])]
    _hydra_main()
    outcome = SweepHooks.outcome
    if outcome is not None and set(outcome) - {"ok"}:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
