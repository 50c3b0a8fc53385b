"""PINN networks: structure, initialisation, registered BatchNorm, modified MLP formula."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import assert_jet_matches_finite_differences
from torch import nn

from dcnn.activations import IReLU
from dcnn.input_derivatives.derivatives import input_jet
from dcnn.input_derivatives.taylor import taylor_unsupported_reason
from dcnn.models.mlp import MLP, ModifiedMLP
from dcnn.surgery import replace_activations


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
    with pytest.raises(
        ValueError, match=r"first_hidden must be one of \('code', 'paper'\).*'Paper'"
    ):
        ModifiedMLP(2, 1, first_hidden="Paper")


def test_normalization_none_string_means_no_norm_layers():
    assert MLP(2, 1, normalization="none").norms is None


def _paper_modified_mlp(**kwargs) -> ModifiedMLP:
    torch.manual_seed(3)
    model = ModifiedMLP(2, 2, hidden=5, depth=2, first_hidden="paper", **kwargs).double()
    with torch.no_grad():  # non-zero biases, so that b_1 shows in the formula
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-0.5, 0.5)
    return model


def test_modified_mlp_paper_form_computes_h1_from_its_own_dense_layer():
    model = _paper_modified_mlp()
    x = torch.randn(6, 2, dtype=torch.float64)

    def dense(layer: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ layer.weight.T + layer.bias

    u = torch.tanh(dense(model.encoder_u, x))
    v = torch.tanh(dense(model.encoder_v, x))
    h1 = torch.tanh(dense(model.input_layer, x))  # H_1 = phi(X W_1 + b_1)
    z1 = torch.tanh(dense(model.gates[0], h1))
    h2 = (1 - z1) * u + z1 * v
    z2 = torch.tanh(dense(model.gates[1], h2))
    h3 = (1 - z2) * u + z2 * v
    torch.testing.assert_close(model(x), dense(model.output, h3), rtol=1e-14, atol=1e-14)
    assert model.first_hidden == "paper"
    assert (model.input_layer.in_features, model.input_layer.out_features) == (2, 5)
    assert [(g.in_features, g.out_features) for g in model.gates] == [(5, 5), (5, 5)]
    assert sum(1 for m in model.modules() if isinstance(m, nn.Tanh)) == 5
    # The code form is unchanged: no H_1 layer, the first gate reads the inputs.
    code = ModifiedMLP(2, 2, hidden=5, depth=2)
    assert code.first_hidden == "code" and code.input_layer is None
    assert code.gates[0].in_features == 2


@pytest.mark.parametrize(("in_features", "hidden", "depth"), [(2, 5, 2), (3, 50, 3), (1, 8, 1)])
def test_modified_mlp_paper_form_adds_one_square_layer_of_parameters(in_features, hidden, depth):
    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    code = ModifiedMLP(in_features, 1, hidden=hidden, depth=depth)
    paper = ModifiedMLP(in_features, 1, hidden=hidden, depth=depth, first_hidden="paper")
    assert count(paper) - count(code) == hidden * (hidden + 1)
    # Checkpoints of the code form keep their keys; the paper form adds those of input_layer.
    assert set(paper.state_dict()) - set(code.state_dict()) == {
        "input_layer.weight",
        "input_layer.bias",
    }
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in paper._trunk_layers())
    # Same seed, same initial code-form network as before the option existed (init order).
    torch.manual_seed(0)
    again = ModifiedMLP(in_features, 1, hidden=hidden, depth=depth)
    torch.manual_seed(0)
    reference = ModifiedMLP(in_features, 1, hidden=hidden, depth=depth, first_hidden="code")
    for a, b in zip(again.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_modified_mlp_annealing_weights_list_the_trunk_not_the_encoders():
    paper = _paper_modified_mlp()
    listed = {id(p) for p in paper.annealing_weights()}
    trunk = [paper.input_layer, *paper.gates, paper.output]
    assert listed == {id(layer.weight) for layer in trunk}
    assert id(paper.encoder_u.weight) not in listed and id(paper.encoder_v.weight) not in listed
    code = ModifiedMLP(2, 1, hidden=5, depth=2)
    assert [p.shape for p in code.annealing_weights()] == [(5, 2), (5, 5), (1, 5)]


@pytest.mark.parametrize("method", ["taylor", "autograd", "auto"])
def test_modified_mlp_paper_form_input_derivatives_match_finite_differences(method):
    model = _paper_modified_mlp()
    assert taylor_unsupported_reason(model) is None  # the Taylor engine walks the H_1 layer
    x = torch.randn(5, 2, dtype=torch.float64) * 1.5
    jet = input_jet(model, x, (0, 1), method=method)
    assert_jet_matches_finite_differences(model, x, jet)


def test_modified_mlp_paper_form_taylor_equals_autograd_with_gradients_after_surgery():
    model = _paper_modified_mlp()
    report = replace_activations(model, IReLU)
    assert "input_activation: Tanh -> IReLU" in report.replaced
    assert isinstance(model.input_activation, IReLU)
    x = torch.randn(7, 2, dtype=torch.float64)
    taylor = input_jet(model, x, (0,), method="taylor")
    reference = input_jet(model, x, (0,), method="autograd")
    for name in ("value", "d1", "d2"):
        torch.testing.assert_close(getattr(taylor, name), getattr(reference, name), msg=name)
    parameters = list(model.parameters())

    def loss(jet) -> torch.Tensor:
        return jet.value.square().sum() + jet.d1.square().sum() + (jet.d2 * jet.d1).sum()

    for (name, _), a, b in zip(
        model.named_parameters(),
        torch.autograd.grad(loss(taylor), parameters),
        torch.autograd.grad(loss(reference), parameters),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)
    assert any(p is model.input_layer.weight for p in parameters)


def test_modified_mlp_config_exposes_first_hidden():
    import hydra
    from helpers import compose_train

    cfg = compose_train(["experiment=pinn_base", "model=modified_mlp"])
    assert cfg.model.first_hidden == "code"
    paper = compose_train(
        ["experiment=pinn_base", "model=modified_mlp", "model.first_hidden=paper"]
    )
    model = hydra.utils.instantiate(paper.model, in_features=2, out_features=1)
    assert isinstance(model, ModifiedMLP) and model.input_layer is not None
