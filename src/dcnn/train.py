"""`dcnn-train`: the Hydra application that runs one training job (or a multirun of them).

Every job, whatever happens to it, leaves ``metrics.json`` in its output folder with status
``ok``, ``diverged`` (non-finite loss: recorded, the sweep goes on) or ``failed`` (re-raised).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dcnn.build import build_model, config_to_dict
from dcnn.runlog import build_logger, finish_wandb, run_name, write_metrics
from dcnn.tasks.common import DivergedError
from dcnn.tasks.weighting import build_weighting

log = logging.getLogger("dcnn")

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "conf"
# `sweeps/` sits beside `conf/`; adding the repository root to Hydra's search path makes
# `sweeps=<name>` a config group without copying sweep files into conf/.
SEARCHPATH_OVERRIDE = f"hydra.searchpath=[file://{REPO_ROOT}]"


def _optimizer_parts(cfg: DictConfig) -> dict:
    return {
        "weighting": build_weighting(**cfg.weighting),
        "optimizer": hydra.utils.instantiate(cfg.optimizer),
        "scheduler": None if cfg.scheduler is None else hydra.utils.instantiate(cfg.scheduler),
        "scheduler_interval": cfg.scheduler_interval,
    }


def build_potential(cfg: DictConfig):
    """DataModule, PotentialTask, units and surgery report of an atomistic run."""
    from dcnn.data.datamodules import AtomsDataModule
    from dcnn.rescaling import fit_label_scaler
    from dcnn.tasks.potential import PotentialTask

    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    if "_target_" in dataset:
        datamodule = hydra.utils.instantiate(dataset, seed=cfg.seed)
    else:
        datamodule = AtomsDataModule(**dataset, seed=cfg.seed)
    model, report = build_model(cfg.model, cfg.activation, cfg.normalization.name)
    train = datamodule.split("train")
    scaler = fit_label_scaler(
        cfg.rescaling.name,
        train.energy,
        train.forces,
        train.n_atoms(),
        scale=cfg.rescaling.get("scale"),
    )
    task = PotentialTask(
        model, scaler, cfg.loss.alpha, cfg.loss.beta, cfg.loss.kind, **_optimizer_parts(cfg)
    )
    info = {"data": datamodule.describe(), "rescaling": scaler.describe()}
    return datamodule, task, datamodule.units, report, info


def build_pinn(cfg: DictConfig):
    """DataModule, PinnTask, units and surgery report of a PINN run."""
    from dcnn.tasks.pinn import build_pinn_run

    return build_pinn_run(cfg, _optimizer_parts(cfg))


BUILDERS = {"potential": build_potential, "pinn": build_pinn}


def _test_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for result in results:
        merged.update({key.removeprefix("test/"): float(value) for key, value in result.items()})
    return merged


def run(
    cfg: DictConfig, output_dir: Path, overrides: list[str] | None = None, group: str | None = None
) -> dict:
    """Run one job and write ``output_dir/metrics.json``; returns what was written."""
    start = time.time()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.task not in BUILDERS:
        raise ValueError(f"task={cfg.task!r}; expected one of {sorted(BUILDERS)}")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    status, error, trainer, task = "failed", None, None, None
    units: dict[str, str] = {}
    test: dict[str, float] = {}
    info: dict = {}
    try:
        datamodule, task, units, report, info = BUILDERS[cfg.task](cfg)
        (output_dir / "surgery.txt").write_text(report.summary() + "\n")
        log.info("model changes:\n%s", report.summary())
        config = {**config_to_dict(cfg), "surgery": report.to_dict(), **info}
        logger = build_logger(cfg, output_dir, run_name(overrides or []), group, config)
        callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
        trainer = hydra.utils.instantiate(
            cfg.trainer,
            logger=logger if logger is not None else False,
            callbacks=callbacks,
            default_root_dir=str(output_dir),
            inference_mode=False,  # forces and PDE residuals need gradients at test time
        )
        trainer.fit(task, datamodule=datamodule)
        test = _test_metrics(trainer.test(task, datamodule=datamodule, verbose=False))
        status = "ok"
    except DivergedError as exc:
        status, error = "diverged", str(exc)
        log.warning("run diverged: %s", exc)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if trainer is None or trainer.is_global_zero:
            record_path = write_metrics(
                output_dir,
                status=status,
                task=cfg.task,
                units=units,
                test=test,
                train_last=getattr(task, "last_train_terms", {}),
                epochs=trainer.current_epoch if trainer is not None else 0,
                wall_seconds=time.time() - start,
                error=error,
                extra={"info": info} if info else None,
            )
            _print_summary(status, test, units, record_path)
        finish_wandb()
    return {"status": status, "test": test, "units": units}


def _print_summary(status: str, test: dict[str, float], units: dict[str, str], path: Path) -> None:
    shown = {
        k: v for k, v in test.items() if k in ("energy_mae", "force_mae", "rmse", "nrmse", "mse")
    }
    unit_of = {"energy_mae": units.get("energy", ""), "force_mae": units.get("forces", "")}
    parts = [f"{k} = {v:.4g} {unit_of.get(k, '')}".rstrip() for k, v in shown.items()]
    print(f"[dcnn] status={status}  " + "  ".join(parts) + f"\n[dcnn] metrics: {path}", flush=True)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    group = cfg.group
    if group is None and hydra_cfg.mode == RunMode.MULTIRUN:
        group = Path(hydra_cfg.sweep.dir).name
    run(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task), group)


def main() -> None:
    if not any(arg.startswith("hydra.searchpath") for arg in sys.argv[1:]):
        sys.argv.append(SEARCHPATH_OVERRIDE)
    _hydra_main()


if __name__ == "__main__":
    main()
