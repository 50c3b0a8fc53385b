"""``init`` settings of a run: which initialisation, and the batch of real training inputs a
data-dependent one measures."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dcnn.init.labels import match_labels
from dcnn.init.lsuv import InitError, LsuvReport, lsuv_init

log = logging.getLogger("dcnn")

INITS = ("default", "lsuv")
LSUV_SETTINGS = (
    "target",
    "tolerance",
    "max_iterations",
    "center",
    "offset",
    "n_frames",
    "n_points",
    "match_labels",
)


def _evenly_spaced(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over range(count) (all of them if there are fewer)."""
    if count <= wanted:
        return list(range(count))
    return (
        sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})
        if wanted > 1
        else [0]
    )


def training_inputs(datamodule: Any, n_frames: int = 32, n_points: int = 2000, seed: int = 0):
    """A batch of real training inputs from a run's datamodule, the same on every process.

    Atomistic data (``AtomsDataModule``): ``n_frames`` frames spread evenly over the training
    split (whose frames were drawn with the run's seed), collated with the run's own neighbour
    lists. PINN data (``PinnDataModule``): the domain (collocation) points, or ``n_points`` of
    them drawn with a generator of their own seeded with ``seed`` (the global RNG is not used).
    """
    points = getattr(datamodule, "points", None)
    if isinstance(points, Mapping) and "domain" in points:
        domain = points["domain"]
        if len(domain) <= n_points:
            return domain
        generator = torch.Generator().manual_seed(int(seed))
        chosen = torch.randperm(len(domain), generator=generator)[:n_points].sort().values
        return domain[chosen]
    if hasattr(datamodule, "split") and hasattr(datamodule, "collate"):
        from dcnn.data.atoms import AtomsDataset

        frames = AtomsDataset(datamodule.split("train"))
        if len(frames) == 0:
            raise InitError("init=lsuv: the training split holds no frames")
        return datamodule.collate([frames[i] for i in _evenly_spaced(len(frames), n_frames)])
    raise InitError(
        f"init=lsuv needs a batch of training inputs, which {type(datamodule).__name__} does not "
        "provide (expected PINN points with a 'domain' set, or atomistic frames with a "
        "training split and a collate function)"
    )


def initialise(
    settings: Mapping | None, model: nn.Module, datamodule: Any, seed: int, task: Any = None
) -> LsuvReport | None:
    """Apply a run's ``init`` settings (the config group ``init``) to ``model`` in place.

    ``None`` or ``name: default``: nothing is done and None is returned (the model keeps its own
    initialisation, and nothing else about the run changes). ``name: lsuv``: ``lsuv_init`` on
    ``training_inputs(datamodule, ...)``, then, for a potential ``task`` (one with a label
    scaler) and ``match_labels`` (default true), ``dcnn.init.labels.match_labels``; returns the
    report (logged here).
    """
    if settings is None or not settings or settings.get("name", "default") == "default":
        return None
    name = settings.get("name")
    if name not in INITS:
        raise InitError(f"init={name!r}: expected one of {', '.join(INITS)}")
    unknown = sorted(set(settings) - {"name", *LSUV_SETTINGS})
    if unknown:
        raise InitError(f"init=lsuv: unknown settings {unknown}; known: {', '.join(LSUV_SETTINGS)}")
    inputs = training_inputs(
        datamodule,
        n_frames=int(settings.get("n_frames", 32)),
        n_points=int(settings.get("n_points", 2000)),
        seed=seed,
    )
    report = lsuv_init(
        model,
        inputs,
        target=float(settings.get("target", 1.0)),
        tolerance=float(settings.get("tolerance", 0.05)),
        max_iterations=int(settings.get("max_iterations", 5)),
        center=bool(settings.get("center", True)),
        offset=float(settings.get("offset", 0.0)),
    )
    if bool(settings.get("match_labels", True)) and hasattr(task, "scaler"):
        match_labels(task, inputs, report)
    log.info("%s", report.summary())
    return report
