"""Shared test helpers: Hydra composition of the project's configs."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SWEEPS = REPO / "sweeps"


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
