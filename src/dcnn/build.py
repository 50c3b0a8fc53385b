"""From config to objects: the one place where activation and normalization choices meet a model.

Models that take ``activation`` / ``normalization`` as constructor arguments receive them; any
other model (e.g. PyG's SchNet) is built as published and then changed by ``dcnn.surgery``. The
returned report lists every module that was changed, and the run logs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dcnn.surgery import SurgeryError, SurgeryReport, replace_activations, strip_normalization

NORMALIZATIONS = ("original", "none", "no_batchnorm", "batchnorm")


def _accepts(target: str, argument: str) -> bool:
    cls = hydra.utils.get_class(target)
    return argument in inspect.signature(cls).parameters


def resolve_scope(model: nn.Module, scope: str | Sequence[str] | None) -> list[str]:
    """Turn a scope name (all | output | ...) or an explicit list of module names into names."""
    scopes: dict[str, list[str]] = getattr(model, "activation_scopes", {"all": [""]})
    if scope is None:
        scope = getattr(model, "default_activation_scope", "all")
    if isinstance(scope, str):
        if scope not in scopes:
            raise SurgeryError(
                f"activation.scope={scope!r} is not defined for {type(model).__name__}; "
                f"its scopes are {sorted(scopes)} (or give a list of module names)"
            )
        return list(scopes[scope])
    return list(scope)


def build_model(
    model_cfg: DictConfig, activation_cfg: DictConfig, normalization: str, **fixed_arguments
) -> tuple[nn.Module, SurgeryReport]:
    """Instantiate ``model_cfg`` and apply the activation and normalization choices."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"unknown normalization {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}"
        )
    target = model_cfg._target_
    if activation_cfg.module is None and activation_cfg.scope is not None:
        raise SurgeryError(
            f"activation.scope={activation_cfg.scope!r} names modules to change, but "
            f"activation={activation_cfg.name} keeps the model's own activations, so nothing "
            "would change; choose an activation (e.g. activation=irelu) or drop activation.scope"
        )
    factory: Callable[[], nn.Module] | None = (
        None if activation_cfg.module is None else hydra.utils.instantiate(activation_cfg.module)
    )
    arguments = dict(fixed_arguments)
    activation_by_constructor = factory is not None and _accepts(target, "activation")
    if activation_by_constructor and activation_cfg.scope is None:
        arguments["activation"] = factory
    normalization_by_constructor = _accepts(target, "normalization")
    if normalization_by_constructor:
        arguments["normalization"] = "batchnorm" if normalization == "batchnorm" else None
    elif normalization == "batchnorm":
        raise ValueError(
            f"normalization=batchnorm inserts layers, which {target} does not support; "
            "use original, none or no_batchnorm"
        )
    model = hydra.utils.instantiate(model_cfg, **arguments)

    report = SurgeryReport()
    if "activation" in arguments:
        report.replaced.append(f"{type(model).__name__}(activation=...): {activation_cfg.name}")
    if factory is not None and "activation" not in arguments:
        report = report.merge(
            replace_activations(model, factory, resolve_scope(model, activation_cfg.scope))
        )
    if normalization in ("none", "no_batchnorm") and not normalization_by_constructor:
        kinds = "all" if normalization == "none" else "batchnorm"
        stripped = strip_normalization(model, kinds=kinds)
        if normalization == "no_batchnorm" and not stripped.removed:
            raise SurgeryError(
                f"normalization=no_batchnorm found no batch-norm layer in {type(model).__name__}; "
                "use normalization=original or none"
            )
        report = report.merge(stripped)
    return model, report


def config_to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
