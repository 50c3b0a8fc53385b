"""In-place model surgery: swap activations and strip normalization layers of any nn.Module.

Library models (PyG's SchNet, ...) create their activations internally, so the activation chosen
in the configuration is applied after construction by replacing modules in their owners. Both
operations return a `SurgeryReport` listing every change so that a run can log exactly what was
altered.

Modules shared between several owners (one SiLU instance passed to every block, or a Sequential
registered under two names as in SchNet's filter network) are handled per owner slot: every slot
is changed once, and slots that held the same module receive the same replacement, so the
model's sharing structure (and any parameter tying of learnable activations) is preserved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch_geometric.nn.norm as pyg_norm
from torch import Tensor, nn

from dcnn.activations import ACTIVATION_FUNCTIONS, ACTIVATION_MODULE_TYPES


class SurgeryError(ValueError):
    """A surgery request that cannot be carried out as asked (bad scope, nothing to change)."""


@dataclass
class SurgeryReport:
    """What a surgery changed, one "qualified.name: OldType -> NewType" line per change."""

    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.replaced or self.removed)

    def __bool__(self) -> bool:
        return self.changed

    def merge(self, other: SurgeryReport) -> SurgeryReport:
        """Append `other`'s changes to this report (in place) and return this report."""
        self.replaced.extend(other.replaced)
        self.removed.extend(other.removed)
        return self

    def to_dict(self) -> dict[str, list[str]]:
        return {"replaced": list(self.replaced), "removed": list(self.removed)}

    def summary(self) -> str:
        if not self.changed:
            return "model surgery: no changes"
        lines = [
            f"model surgery: {len(self.replaced)} activation(s) replaced, "
            f"{len(self.removed)} normalization layer(s) removed"
        ]
        lines += [f"  replaced {change}" for change in self.replaced]
        lines += [f"  removed  {change}" for change in self.removed]
        return "\n".join(lines)


class RemovedNormalization(nn.Identity):
    """Identity standing in for a removed normalization layer.

    PyG norms are called with extra arguments (`norm(x, batch)`, `norm(x, type_vec)`), which
    nn.Identity would reject; they are ignored here and the features pass through unchanged.
    """

    def forward(self, input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return input


def _existing(module: Any, names: Sequence[str]) -> tuple[type[nn.Module], ...]:
    """The classes among `names` that this installed version of `module` provides."""
    return tuple(getattr(module, name) for name in names if hasattr(module, name))


_BATCH_NORM_TYPES = _existing(
    nn,
    (
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "SyncBatchNorm",
        "LazyBatchNorm1d",
        "LazyBatchNorm2d",
        "LazyBatchNorm3d",
    ),
) + _existing(pyg_norm, ("BatchNorm", "HeteroBatchNorm"))

# MessageNorm is left out on purpose: it rescales a message by the norm of x and returns the
# message, so no identity on its first argument can stand in for it.
_OTHER_NORMALIZATION_TYPES = _existing(
    nn,
    (
        "LayerNorm",
        "GroupNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
        "LazyInstanceNorm1d",
        "LazyInstanceNorm2d",
        "LazyInstanceNorm3d",
        "RMSNorm",
        "LocalResponseNorm",
        "CrossMapLRN2d",
    ),
) + _existing(
    pyg_norm,
    (
        "LayerNorm",
        "HeteroLayerNorm",
        "InstanceNorm",
        "GraphNorm",
        "GraphSizeNorm",
        "PairNorm",
        "MeanSubtractionNorm",
        "DiffGroupNorm",
    ),
)

NORMALIZATION_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "all": _BATCH_NORM_TYPES + _OTHER_NORMALIZATION_TYPES,
    "batchnorm": _BATCH_NORM_TYPES,
}


@dataclass(frozen=True)
class _Slot:
    """One attribute of one owner module that holds a module or an activation function."""

    name: str
    owner: nn.Module
    attribute: str
    value: Any


def _qualified(owner_name: str, attribute: str) -> str:
    return f"{owner_name}.{attribute}" if owner_name else attribute


def _is_activation_function(value: Any) -> bool:
    # Identity test: attribute values may be unhashable, and only these exact callables count.
    return any(value is function for function in ACTIVATION_FUNCTIONS)


def _slots(model: nn.Module) -> Iterator[_Slot]:
    """Every child-module slot and activation-function attribute, depth first, under every
    name it has: a module shared by two owners shows up in both."""

    def visit(owner: nn.Module, owner_name: str, ancestors: frozenset[int]) -> Iterator[_Slot]:
        for attribute, value in vars(owner).items():
            if _is_activation_function(value):
                yield _Slot(_qualified(owner_name, attribute), owner, attribute, value)
        # _modules rather than named_children(): the latter hides a child registered twice.
        for attribute, child in owner._modules.items():
            if child is None:
                continue
            name = _qualified(owner_name, attribute)
            yield _Slot(name, owner, attribute, child)
            if id(child) not in ancestors:  # guard against reference cycles
                yield from visit(child, name, ancestors | {id(child)})

    yield from visit(model, "", frozenset({id(model)}))


def _scope_entries(model: nn.Module, scope: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validated scope entries, or None for the whole model."""
    if scope is None:
        return None
    if isinstance(scope, str):
        raise TypeError(f"scope must be a list of submodule names, got the string {scope!r}")
    entries = tuple(str(entry) for entry in scope)
    if "" in entries:
        return None
    known_names = {name for name, _ in model.named_modules(remove_duplicate=False)}
    known_names |= {slot.name for slot in _slots(model)}
    for entry in entries:
        if entry not in known_names:
            top_level = ", ".join(name for name, _ in model.named_children()) or "(none)"
            raise SurgeryError(
                f"scope entry {entry!r} names no submodule of {type(model).__name__}; "
                f"its top-level submodules are: {top_level}"
            )
    return entries


def _in_scope(name: str, entries: tuple[str, ...] | None) -> bool:
    if entries is None:
        return True
    return any(name == entry or name.startswith(entry + ".") for entry in entries)


def _describe(value: Any) -> str:
    if isinstance(value, nn.Module):
        return type(value).__name__
    return f"{getattr(value, '__name__', repr(value))} (function)"


def _select_slots(
    model: nn.Module, wanted: Callable[[Any], bool], entries: tuple[str, ...] | None
) -> list[_Slot]:
    """Slots whose value is wanted, each owner attribute once (under its first in-scope name).

    Everything is collected before anything is changed, so newly inserted modules are never
    visited and no slot is changed twice.
    """
    selected: list[_Slot] = []
    seen: set[tuple[int, str]] = set()
    for slot in _slots(model):
        key = (id(slot.owner), slot.attribute)
        if key in seen or not wanted(slot.value) or not _in_scope(slot.name, entries):
            continue
        seen.add(key)
        selected.append(slot)
    return selected


def _apply(slots: list[_Slot], make_replacement: Callable[[], nn.Module]) -> list[str]:
    """Put a replacement into every slot; slots that held the same module share one."""
    replacement_for_module: dict[int, nn.Module] = {}
    changes = []
    for slot in slots:
        if isinstance(slot.value, nn.Module):
            if id(slot.value) not in replacement_for_module:
                replacement_for_module[id(slot.value)] = make_replacement()
            replacement = replacement_for_module[id(slot.value)]
        else:  # a plain function attribute: module-valued setattr also registers it as a child
            replacement = make_replacement()
        setattr(slot.owner, slot.attribute, replacement)
        changes.append(f"{slot.name}: {_describe(slot.value)} -> {type(replacement).__name__}")
    return changes


def replace_activations(
    model: nn.Module,
    factory: Callable[[], nn.Module],
    scope: Sequence[str] | None = None,
) -> SurgeryReport:
    """Replace every activation inside `scope` of `model` by a fresh `factory()` module, in place.

    Activations are instances of `ACTIVATION_MODULE_TYPES` and module attributes holding one of
    `ACTIVATION_FUNCTIONS` (e.g. `self.act = F.silu`). `scope` lists qualified submodule names
    as in `model.named_modules()`; a name is in scope when it equals an entry or starts with
    entry + ".". None or [""] means the whole model.

    Raises SurgeryError when a scope entry names no submodule or when nothing was replaced.
    """
    entries = _scope_entries(model, scope)

    def make_activation() -> nn.Module:
        activation = factory()
        if not isinstance(activation, nn.Module):
            raise TypeError(
                f"activation factory {factory!r} returned {type(activation).__name__}, "
                "expected an nn.Module instance"
            )
        return activation

    def is_activation(value: Any) -> bool:
        return isinstance(value, ACTIVATION_MODULE_TYPES) or _is_activation_function(value)

    slots = _select_slots(model, is_activation, entries)
    if not slots:
        module_names = ", ".join(sorted({cls.__name__ for cls in ACTIVATION_MODULE_TYPES}))
        function_names = ", ".join(sorted({_describe(f) for f in ACTIVATION_FUNCTIONS}))
        raise SurgeryError(
            f"no activation to replace in {type(model).__name__} within scope "
            f"{'the whole model' if entries is None else list(entries)}; recognised activation "
            f"modules: {module_names}; recognised functions stored on module attributes: "
            f"{function_names}"
        )
    return SurgeryReport(replaced=_apply(slots, make_activation))


def strip_normalization(model: nn.Module, kinds: str = "all") -> SurgeryReport:
    """Replace normalization layers of `model` by identities, in place.

    kinds="all" removes every torch and PyG normalization layer (the paper's "denormalization");
    kinds="batchnorm" removes only the batch-norm family (what the authors' code did for CGCNN).
    Finding nothing returns an empty report: whether that is an error is the caller's decision.
    """
    if kinds not in NORMALIZATION_KINDS:
        raise ValueError(
            f"unknown normalization kinds {kinds!r}; expected one of: "
            + ", ".join(repr(kind) for kind in NORMALIZATION_KINDS)
        )
    normalization_types = NORMALIZATION_KINDS[kinds]
    slots = _select_slots(model, lambda value: isinstance(value, normalization_types), None)
    return SurgeryReport(removed=_apply(slots, RemovedNormalization))
