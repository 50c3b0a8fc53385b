"""After LSUV, an atomistic model's output layer set to the scale of the training labels.

Why. LSUV gives every layer unit scale, the output layer included, so a potential starts with
per-atom energies of order 1 in the task's label units. With power-of-ten rescaling those units
make aspirin's forces about 2e-5 (20 kcal/mol/A over 1e6): a unit-scale output predicts forces
1e5 times too large, and training spends its budget (or fails) unlearning them. The force is the
gradient of the energy, so it is linear in the weight of a linear output layer (its bias adds no
force): scaling that weight by c scales the predicted forces by c exactly, and shifting its bias
moves the energies without touching the forces.

What ``match_labels`` does, on the batch LSUV used: predicts energies and forces, scales the
last weight layer called in the forward pass (LSUV's report order) so that the predicted forces
have the root mean square of the training forces (both in the task's label units), then shifts
that layer's bias by the least-squares offset that matches the energies. Each step is checked:
the predicted forces must scale by c (to 1 %), and the energy error must fall; a model whose
output is not linear in that layer (DimeNet++ and GemNet sum several output blocks) is restored
and the report says why.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from dcnn.init.lsuv import LsuvReport, rms


def _predict(task: Any, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        energy, forces = task.model(batch, create_graph=False)
    return energy.detach().double(), forces.detach().double()


def match_labels(task: Any, batch: dict[str, Tensor], report: LsuvReport) -> dict:
    """Set the output layer of ``task.model`` (a potential task after ``lsuv_init``) to the
    labels' scale on ``batch``; returns what was done (also stored in ``report.output``)."""
    name = next(reversed(report.layers), None)
    module = task.model.energy_model.get_submodule(name) if name is not None else None
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    result: dict = {"layer": name, "status": "matched"}
    report.output = result
    if not isinstance(weight, nn.Parameter):
        result["status"] = "kept: no output layer with a weight"
        return result
    saved = [weight.detach().clone(), None if bias is None else bias.detach().clone()]
    label_energy, label_forces = task.encoded_labels(batch)
    _, forces = _predict(task, batch)
    predicted_rms, label_rms = rms(forces), rms(label_forces)
    if not (predicted_rms > 0 and math.isfinite(predicted_rms) and label_rms > 0):
        result["status"] = "kept: zero or non-finite predicted or label forces"
        return result
    factor = label_rms / predicted_rms
    with torch.no_grad():
        weight.mul_(factor)
    scaled_energy, scaled_forces = _predict(task, batch)
    if not math.isclose(rms(scaled_forces), label_rms, rel_tol=0.01):
        _restore(weight, bias, saved)
        result["status"] = (
            "kept: the forces are not linear in this layer's weight (several output blocks?)"
        )
        return result
    result.update(force_rms_before=predicted_rms, force_rms=label_rms, weight_scale=factor)
    error_before = error_after = rms(scaled_energy - label_energy)
    if bias is not None and bias.numel() == 1:
        with torch.no_grad():
            bias.add_(1.0)
        shifted_energy, _ = _predict(task, batch)
        slope = shifted_energy - scaled_energy  # energy per unit of bias (n_atoms for a sum)
        offset = float((slope * (label_energy - scaled_energy)).sum() / slope.square().sum())
        with torch.no_grad():
            bias.add_(offset - 1.0)
        shifted_error = rms(_predict(task, batch)[0] - label_energy)
        if shifted_error < error_before:
            error_after = shifted_error
            result.update(bias_shift=offset)
        else:
            with torch.no_grad():
                bias.sub_(offset)
    result.update(energy_rms_error_before=error_before, energy_rms_error=error_after)
    return result


def _restore(weight: Tensor, bias: Tensor | None, saved: list[Tensor | None]) -> None:
    with torch.no_grad():
        weight.copy_(saved[0])
        if bias is not None:
            bias.copy_(saved[1])
