"""Model surgery: activation replacement (scoped, shared modules, function attributes) and
normalization stripping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn.models import DimeNetPlusPlus, SchNet
from torch_geometric.nn.norm import GraphNorm

from dcnn.activations import IntegratedSiLU, IReLU
from dcnn.surgery import (
    RemovedNormalization,
    SurgeryError,
    SurgeryReport,
    replace_activations,
    strip_normalization,
)

SCHNET_ACTIVATIONS = {
    "interactions.0.mlp.1",
    "interactions.0.act",
    "interactions.1.mlp.1",
    "interactions.1.act",
    "act",
}


def _small_schnet() -> SchNet:
    torch.manual_seed(0)
    return SchNet(
        hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=10, cutoff=5.0
    )


def _changed_names(lines: list[str]) -> set[str]:
    return {line.split(":")[0] for line in lines}


def _schnet_energy(model: SchNet, pos: torch.Tensor) -> torch.Tensor:
    """SchNet's energy through its submodules (SchNet.forward needs torch-cluster)."""
    atomic_numbers = torch.tensor([8, 1, 1, 6])
    senders, receivers = zip(*[(i, j) for i in range(4) for j in range(4) if i != j], strict=True)
    edge_index = torch.tensor([senders, receivers])
    edge_weight = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
    edge_attr = model.distance_expansion(edge_weight)
    h = model.embedding(atomic_numbers)
    for interaction in model.interactions:
        h = h + interaction(h, edge_index, edge_weight, edge_attr)
    return model.lin2(model.act(model.lin1(h))).sum()


POSITIONS = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0], [0.1, 0.2, 1.4]])


def test_schnet_whole_model_replacement() -> None:
    model = _small_schnet()
    before = _schnet_energy(model, POSITIONS).item()
    factory_calls = []

    def factory() -> nn.Module:
        factory_calls.append(1)
        return IReLU()

    report = replace_activations(model, factory)

    assert _changed_names(report.replaced) == SCHNET_ACTIVATIONS
    assert len(report.replaced) == len(factory_calls) == 5
    assert "interactions.0.mlp.1: ShiftedSoftplus -> IReLU" in report.replaced
    assert report.removed == [] and report.changed
    modules = dict(model.named_modules())
    new_activations = [modules[name] for name in SCHNET_ACTIVATIONS]
    assert all(isinstance(module, IReLU) for module in new_activations)
    assert len({id(module) for module in new_activations}) == 5
    # The filter network is shared with CFConv, which must see the replacement too.
    assert model.interactions[0].conv.nn[1] is model.interactions[0].mlp[1]

    pos = POSITIONS.clone().requires_grad_(True)
    energy = _schnet_energy(model, pos)
    (forces,) = torch.autograd.grad(-energy, pos, create_graph=True)
    assert torch.isfinite(forces).all()
    assert energy.item() != pytest.approx(before)
    # Double backprop (force loss -> parameters) runs through the new activations.
    forces.square().sum().backward()
    assert model.lin1.weight.grad is not None


@pytest.mark.parametrize("scope", [None, [""]])
def test_schnet_none_and_root_scope_mean_whole_model(scope: list[str] | None) -> None:
    report = replace_activations(_small_schnet(), IReLU, scope=scope)
    assert _changed_names(report.replaced) == SCHNET_ACTIVATIONS


def test_schnet_scope_restricts_replacement() -> None:
    model = _small_schnet()
    report = replace_activations(model, IReLU, scope=["act"])
    assert report.replaced == ["act: ShiftedSoftplus -> IReLU"]
    assert isinstance(model.act, IReLU)
    assert type(model.interactions[0].act).__name__ == "ShiftedSoftplus"

    model = _small_schnet()
    report = replace_activations(model, IReLU, scope=["interactions.1"])
    assert _changed_names(report.replaced) == {"interactions.1.mlp.1", "interactions.1.act"}


def test_replacing_same_type_counts_and_uses_fresh_instance() -> None:
    model = _small_schnet()
    replace_activations(model, IReLU)
    first = model.act
    report = replace_activations(model, IReLU, scope=["act"])
    assert report.replaced == ["act: IReLU -> IReLU"]
    assert isinstance(model.act, IReLU) and model.act is not first


def test_sequential_and_module_list_slots_are_replaced() -> None:
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.ModuleList([nn.Linear(4, 4), nn.ReLU()]), nn.Sigmoid()
    )
    report = replace_activations(model, IntegratedSiLU)
    assert _changed_names(report.replaced) == {"1", "2.1"}
    assert isinstance(model[1], IntegratedSiLU) and isinstance(model[2][1], IntegratedSiLU)
    assert isinstance(model[3], nn.Sigmoid)  # gates are not activations


class _SharedActivation(nn.Module):
    """One activation instance registered in two owners, as PyG's DimeNet does."""

    def __init__(self) -> None:
        super().__init__()
        activation = nn.SiLU()
        self.first = nn.Sequential(nn.Linear(2, 2), activation)
        self.second = nn.Sequential(nn.Linear(2, 2), activation)


def test_shared_activation_is_replaced_in_every_owner_and_stays_shared() -> None:
    model = _SharedActivation()
    report = replace_activations(model, IReLU)
    assert _changed_names(report.replaced) == {"first.1", "second.1"}
    assert isinstance(model.first[1], IReLU) and model.first[1] is model.second[1]

    model = _SharedActivation()
    replace_activations(model, IReLU, scope=["second"])
    assert isinstance(model.second[1], IReLU) and isinstance(model.first[1], nn.SiLU)


class _FunctionActivation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.act = F.silu
        self.gate = torch.sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.act(self.lin(x)))


def test_function_attribute_becomes_module() -> None:
    model = _FunctionActivation()
    report = replace_activations(model, IReLU)
    assert report.replaced == ["act: silu (function) -> IReLU"]
    assert isinstance(model.act, IReLU) and "act" in dict(model.named_children())
    assert model.gate is torch.sigmoid
    x = torch.randn(5, 3)
    expected = torch.sigmoid(IReLU()(model.lin(x)))
    torch.testing.assert_close(model(x), expected)


def test_function_attribute_can_be_named_in_scope() -> None:
    model = _FunctionActivation()
    assert replace_activations(model, IReLU, scope=["act"]).replaced == [
        "act: silu (function) -> IReLU"
    ]


def test_dimenet_plus_plus_output_blocks_scope() -> None:
    model = DimeNetPlusPlus(
        hidden_channels=8,
        out_channels=1,
        num_blocks=2,
        int_emb_size=8,
        basis_emb_size=4,
        out_emb_channels=8,
        num_spherical=3,
        num_radial=3,
    )
    report = replace_activations(model, IReLU, scope=["output_blocks"])
    assert _changed_names(report.replaced) == {f"output_blocks.{i}.act" for i in range(3)}
    assert "output_blocks.0.act: swish (function) -> IReLU" in report.replaced
    assert all(isinstance(block.act, IReLU) for block in model.output_blocks)
    assert not isinstance(model.interaction_blocks[0].act, nn.Module)


def test_bad_scope_entry_raises_with_available_names() -> None:
    with pytest.raises(SurgeryError, match=r"'interaction\.0'.*SchNet.*interactions.*lin1"):
        replace_activations(_small_schnet(), IReLU, scope=["interaction.0"])


def test_scope_given_as_string_is_rejected() -> None:
    with pytest.raises(TypeError, match="got the string 'act'"):
        replace_activations(_small_schnet(), IReLU, scope="act")


def test_nothing_to_replace_raises() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid())
    with pytest.raises(SurgeryError, match=r"Sequential.*whole model.*ReLU.*ShiftedSoftplus"):
        replace_activations(model, IReLU)
    with pytest.raises(SurgeryError, match=r"SchNet.*\['lin1'\]"):
        replace_activations(_small_schnet(), IReLU, scope=["lin1"])


def test_factory_must_return_a_module() -> None:
    with pytest.raises(TypeError, match="expected an nn.Module"):
        replace_activations(nn.Sequential(nn.ReLU()), lambda: torch.relu)


class _Normalized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))])
        self.graph_norm = GraphNorm(4)

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.lin(x))
        x = self.blocks[0](x)
        return self.graph_norm(x, batch)


def test_strip_all_normalization() -> None:
    model = _Normalized()
    report = strip_normalization(model, kinds="all")
    assert report.removed == [
        "bn: BatchNorm1d -> RemovedNormalization",
        "blocks.0.1: LayerNorm -> RemovedNormalization",
        "graph_norm: GraphNorm -> RemovedNormalization",
    ]
    assert report.replaced == [] and report
    assert isinstance(model.bn, nn.Identity) and isinstance(model.graph_norm, nn.Identity)
    x, batch = torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 1])
    # Without normalization the model is two plain linear layers.
    torch.testing.assert_close(model(x, batch), model.blocks[0][0](model.lin(x)))


def test_strip_batchnorm_only() -> None:
    model = _Normalized()
    report = strip_normalization(model, kinds="batchnorm")
    assert _changed_names(report.removed) == {"bn"}
    assert isinstance(model.blocks[0][1], nn.LayerNorm)
    assert isinstance(model.graph_norm, GraphNorm)
    output = model(torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert output.shape == (6, 4) and torch.isfinite(output).all()


def test_strip_without_normalization_returns_empty_report() -> None:
    report = strip_normalization(_small_schnet())
    assert not report and report.to_dict() == {"replaced": [], "removed": []}


def test_strip_unknown_kinds_raises() -> None:
    with pytest.raises(ValueError, match=r"'layer'.*'all', 'batchnorm'"):
        strip_normalization(_Normalized(), kinds="layer")


def test_removed_normalization_ignores_extra_arguments() -> None:
    x = torch.randn(3, 2)
    assert RemovedNormalization()(x, torch.zeros(3), batch_size=1) is x


def test_report_merge_dict_and_summary() -> None:
    model = _Normalized()
    model.act = nn.ReLU()
    report = replace_activations(model, IReLU).merge(strip_normalization(model, "batchnorm"))
    assert report.to_dict() == {
        "replaced": ["act: ReLU -> IReLU"],
        "removed": ["bn: BatchNorm1d -> RemovedNormalization"],
    }
    summary = report.summary()
    assert summary.splitlines() == [
        "model surgery: 1 activation(s) replaced, 1 normalization layer(s) removed",
        "  replaced act: ReLU -> IReLU",
        "  removed  bn: BatchNorm1d -> RemovedNormalization",
    ]
    assert SurgeryReport().summary() == "model surgery: no changes"
    assert not SurgeryReport() and not SurgeryReport().changed
