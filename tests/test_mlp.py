"""PINN networks: structure, initialisation, registered BatchNorm, modified MLP formula."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dcnn.activations import IReLU
from dcnn.models.mlp import MLP, ModifiedMLP


def test_mlp_default_is_pdebench_baseline():
    model = MLP(2, 1)
    assert [(layer.in_features, layer.out_features) for layer in model.layers] == [
        (2, 40),
        *[(40, 40)] * 5,
        (40, 1),
    ]
    assert len(model.activations) == 6
    assert all(isinstance(act, nn.Tanh) for act in model.activations)
    assert model.norms is None
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in model.layers)
    assert model(torch.rand(5, 2)).shape == (5, 1)


def test_glorot_normal_weight_scale():
    torch.manual_seed(0)
    model = MLP(300, 200, hidden=500, depth=1)
    for layer in model.layers:
        fan_in, fan_out = layer.in_features, layer.out_features
        expected = math.sqrt(2.0 / (fan_in + fan_out))
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.02)
        assert layer.weight.mean().abs().item() < 0.1 * expected


def test_torch_default_init_keeps_nonzero_biases():
    torch.manual_seed(0)
    model = MLP(3, 2, hidden=16, depth=2, init="torch_default")
    assert torch.count_nonzero(model.layers[0].bias) > 0


def test_activation_factory_gives_distinct_modules_and_is_used():
    model = MLP(2, 1, hidden=8, depth=3, activation=IReLU)
    assert all(isinstance(act, IReLU) for act in model.activations)
    assert len({id(act) for act in model.activations}) == 3
    x = torch.randn(4, 2)
    h = x
    for layer in model.layers[:-1]:
        h = 0.5 * torch.relu(layer(h)) ** 2
    torch.testing.assert_close(model(x), model.layers[-1](h))


def test_activation_scopes_name_real_modules_and_can_be_swapped():
    for model in (MLP(2, 1, hidden=8, depth=4), ModifiedMLP(2, 1, hidden=8, depth=2)):
        assert model.default_activation_scope == "all"
        assert model.activation_scopes["all"] == [""]
        (output_name,) = model.activation_scopes["output"]
        modules = dict(model.named_modules())
        assert isinstance(modules[output_name], nn.Tanh)
        # Swapping the named module by generic surgery (owner + attribute) changes the forward.
        owner_name, _, attribute = output_name.rpartition(".")
        x = torch.randn(6, 2)
        before = model(x)
        setattr(modules[owner_name], attribute, nn.Sigmoid())
        assert not torch.allclose(model(x), before)
    assert MLP(2, 1, depth=4).activation_scopes["output"] == ["activations.3"]
    assert ModifiedMLP(2, 1, depth=2).activation_scopes["output"] == ["gate_activations.1"]


def _trained_batchnorm_mlp() -> MLP:
    torch.manual_seed(1)
    model = MLP(2, 1, hidden=8, depth=3, normalization="batchnorm")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.rand(32, 2) * 3).square().mean().backward()
        optimizer.step()
    return model


def test_batchnorm_is_registered_and_trained():
    model = MLP(2, 1, hidden=8, depth=3, normalization="batchnorm")
    assert len(model.norms) == 3
    assert all(isinstance(norm, nn.BatchNorm1d) for norm in model.norms)
    keys = model.state_dict().keys()
    for i in range(3):
        assert {f"norms.{i}.weight", f"norms.{i}.running_mean", f"norms.{i}.running_var"} <= keys
    parameter_ids = {id(p) for p in model.parameters()}
    assert all(id(norm.weight) in parameter_ids for norm in model.norms)

    before = copy.deepcopy(model.norms[0].state_dict())
    trained = _trained_batchnorm_mlp()
    assert not torch.equal(trained.norms[0].weight, before["weight"])
    assert not torch.equal(trained.norms[0].running_mean, before["running_mean"])


def test_batchnorm_moves_with_to_and_switches_with_eval():
    model = _trained_batchnorm_mlp()
    as_double = copy.deepcopy(model).to(torch.float64)
    assert all(norm.running_var.dtype == torch.float64 for norm in as_double.norms)
    assert all(norm.weight.dtype == torch.float64 for norm in as_double.norms)

    x = torch.rand(16, 2)
    model.train()
    train_output = model(x)
    model.eval()
    eval_output = model(x)
    assert not torch.allclose(train_output, eval_output)
    # Eval mode is per point: one point alone gives the same output as within the batch.
    torch.testing.assert_close(model(x[:1]), eval_output[:1])


def test_batchnorm_sits_after_each_hidden_activation():
    model = _trained_batchnorm_mlp().eval()
    x = torch.rand(5, 2)
    h = x
    for layer, norm in zip(model.layers[:-1], model.norms, strict=True):
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        h = (torch.tanh(layer(h)) - norm.running_mean) * scale + norm.bias
    torch.testing.assert_close(model(x), model.layers[-1](h))


def test_modified_mlp_matches_hand_written_formula():
    torch.manual_seed(2)
    model = ModifiedMLP(2, 3, hidden=4, depth=2).double()
    x = torch.randn(5, 2, dtype=torch.float64)

    def dense(layer: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ layer.weight.T + layer.bias

    u = torch.tanh(dense(model.encoder_u, x))
    v = torch.tanh(dense(model.encoder_v, x))
    z1 = torch.tanh(dense(model.gates[0], x))  # the first gate reads the inputs
    h2 = (1 - z1) * u + z1 * v
    z2 = torch.tanh(dense(model.gates[1], h2))
    h3 = (1 - z2) * u + z2 * v
    expected = dense(model.output, h3)
    torch.testing.assert_close(model(x), expected, rtol=1e-14, atol=1e-14)
    assert model.gates[0].in_features == 2 and model.gates[1].in_features == 4
    assert sum(1 for m in model.modules() if isinstance(m, nn.Tanh)) == 4


def test_modified_mlp_defaults_and_init():
    model = ModifiedMLP(2, 1)
    assert len(model.gates) == 3 and model.encoder_u.out_features == 50
    for layer in (model.encoder_u, model.encoder_v, *model.gates, model.output):
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": 0}, "hidden must be a positive integer"),
        ({"depth": 2.5}, "depth must be a positive integer"),
        ({"init": "he"}, "init must be one of"),
        ({"normalization": "layernorm"}, "normalization must be None"),
        ({"activation": lambda: torch.tanh}, "returned builtin_function_or_method"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MLP(2, 1, **kwargs)


def test_modified_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        ModifiedMLP(0, 1)
    with pytest.raises(ValueError, match="init must be one of"):
        ModifiedMLP(2, 1, init="orthogonal")


def test_normalization_none_string_means_no_norm_layers():
    assert MLP(2, 1, normalization="none").norms is None
