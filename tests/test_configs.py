"""Every config option, experiment and sweep composes, and sweep values expand to valid jobs."""

from __future__ import annotations

import hydra
import pytest
import torch
from helpers import SWEEPS, compose_train, group_options
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

GROUPS = [
    "dataset",
    "model",
    "activation",
    "normalization",
    "rescaling",
    "loss",
    "weighting",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
    "protocol",
]
# Options that only make sense on the PINN path (they have no neighbour-list cutoff).
PINN_ONLY = {("model", "mlp"), ("model", "modified_mlp"), ("protocol", "pdebench")}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_composes_and_resolves(group, option):
    context = ["experiment=pinn_base"] if (group, option) in PINN_ONLY else []
    cfg = compose_train([*context, f"{group}={option}"])
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert container["seed"] == 0
    if group not in ("experiment", "debug", "protocol"):
        assert OmegaConf.select(cfg, group) is not None


def test_default_run_uses_the_three_techniques_on_aspirin(data_root, monkeypatch):
    from dcnn.data.datamodules import AtomsDataModule

    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    cfg = compose_train()
    assert (cfg.activation.name, cfg.normalization.name, cfg.rescaling.name) == (
        "irelu",
        "none",
        "standardize",
    )
    assert cfg.dataset.cutoff == cfg.model.cutoff
    # The rMD17 folder with no molecule set: aspirin, original MD17 labels, 1000/200/1000 frames.
    facts = AtomsDataModule(**OmegaConf.to_container(cfg.dataset, resolve=True)).describe()
    assert (facts["molecule"], facts["format"], facts["label_source"]) == (
        "aspirin",
        "rmd17",
        "md17",
    )
    assert facts["units"]["energy"] == "kcal/mol"
    assert (facts["n_train"], facts["n_val"], facts["n_test"]) == (1000, 200, 1000)


def test_experiments_set_the_papers_variants_and_protocol_overlays():
    variants = {
        "md17_baseline": ("original", "original", "none"),
        "md17_dc": ("irelu", "none", "power_of_ten"),
        "md17_standardized": ("original", "original", "standardize"),
    }
    for experiment, expected in variants.items():
        cfg = compose_train([f"experiment={experiment}", "protocol=paper", "model=schnet_paper"])
        assert (cfg.activation.name, cfg.normalization.name, cfg.rescaling.name) == expected
        assert cfg.model.hidden_channels == 1024 and cfg.model.num_gaussians == 200
        assert cfg.optimizer.lr == 1e-4 and cfg.trainer.max_epochs == 50
        assert (cfg.dataset.n_train, cfg.dataset.batch_size) == (50000, 20)
    # The protocol keeps the model a sweep chose.
    cfg = compose_train(["experiment=md17_dc", "protocol=paper", "model=dimenet_pp_paper"])
    assert cfg.model._target_.endswith("DimeNetPlusPlus") and cfg.model.hidden_channels == 192


@pytest.mark.parametrize("option", group_options("activation"))
def test_activation_configs_build_modules(option):
    cfg = compose_train([f"activation={option}"])
    if cfg.activation.module is None:
        assert option == "original"
        return
    module = hydra.utils.instantiate(cfg.activation.module)()
    assert isinstance(module, torch.nn.Module)
    assert torch.isfinite(module(torch.linspace(-3, 3, 7))).all()


def _sweep_jobs(sweep: str) -> list[list[str]]:
    cfg = compose_train([f"sweeps={sweep}"], hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    jobs = [[]]
    for key, values in params.items():
        (override,) = parser.parse_overrides([f"{key}={values}"])
        choices = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        jobs = [job + [f"{key}={choice}"] for job in jobs for choice in choices]
    return jobs


@pytest.mark.parametrize("sweep", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_every_sweep_expands_to_composable_jobs(sweep):
    jobs = _sweep_jobs(sweep)
    assert len(jobs) > 1
    for job in jobs:
        cfg = compose_train([f"sweeps={sweep}", *job])
        OmegaConf.to_container(cfg, resolve=True)


def test_fig1_sweep_is_the_papers_beta_grid():
    jobs = _sweep_jobs("fig1_beta")
    betas = sorted(float(job[0].split("=")[1]) for job in jobs)
    assert betas == [0.01, 0.1, 1, 10, 30, 50, 100, 200]
    cfg = compose_train(["sweeps=fig1_beta"])
    assert cfg.loss.alpha == 1.0 and cfg.dataset.molecule == "aspirin"
    assert cfg.activation.name == "original" and cfg.rescaling.name == "none"


@pytest.mark.parametrize(
    "launcher,target", [("slurm", "SlurmLauncher"), ("local_parallel", "JoblibLauncher")]
)
def test_launchers_compose(launcher, target):
    cfg = compose_train([f"hydra/launcher={launcher}", "sweeps=fig1_beta"], hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.sweeper.params["loss.beta"].startswith("0.01")


def test_pinn_experiments_select_the_pdebench_setup():
    for pde in ("advection", "cfd", "diffreact"):
        cfg = compose_train([f"experiment=pinn_{pde}"])
        assert cfg.task == "pinn" and cfg.dataset.pde == pde
        assert cfg.model._target_ == "dcnn.models.mlp.MLP" and cfg.activation.name == "tanh"
        assert cfg.optimizer.lr == 1e-3 and cfg.loss.kind == "mse"
    assert compose_train(["experiment=pinn_diffreact"]).trainer.max_steps == 100
    assert compose_train(["experiment=pinn_cfd"]).trainer.max_steps == 15000


def test_protocol_pdebench_is_pdebenchs_point_sets_and_the_default_stays_cheaper():
    for experiment, n_initial, data_fraction in (
        ("pinn_advection", 5000, 0.0),
        ("pinn_cfd", 5000, 0.0),
        ("pinn_diffreact", "all", 0.3),
    ):
        data = compose_train([f"experiment={experiment}", "protocol=pdebench"]).dataset
        assert (data.residual_points, data.n_initial, data.data_fraction) == (
            "all",
            n_initial,
            data_fraction,
        )
        data = compose_train([f"experiment={experiment}"]).dataset
        assert (data.residual_points, data.n_initial, data.data_fraction) == ("domain", 5000, 0.0)


def test_pathologies_experiments_select_wang_teng_perdikaris_setup():
    for problem, depth in (("helmholtz", 3), ("klein_gordon", 5), ("cavity", 3)):
        cfg = compose_train([f"experiment=pinn_{problem}"])
        assert cfg.task == "pinn" and cfg.dataset.format == "box" and cfg.dataset.pde == problem
        assert (cfg.model.hidden, cfg.model.depth) == (50, depth)
        assert (cfg.dataset.batch_size, cfg.trainer.max_steps) == (128, 40001)
        assert cfg.scheduler.gamma**1000 == pytest.approx(0.9, rel=1e-12)
    assert compose_train(["weighting=annealing_code"]).weighting.form == "code"
