"""Input derivatives for PINNs: Taylor mode against nested autograd, finite differences, errors."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import assert_jet_matches_finite_differences
from torch import nn

from dcnn.activations import (
    IntegratedELU,
    IntegratedGELU,
    IntegratedLeakyReLU,
    IntegratedSiLU,
    IntegratedSoftplus,
    IReLU,
)
from dcnn.input_derivatives.activation_derivatives import activation_derivatives
from dcnn.input_derivatives.derivatives import (
    Jet,
    estimated_costs,
    input_jet,
    jet_and_values,
)
from dcnn.models.mlp import MLP, ModifiedMLP
from dcnn.surgery import RemovedNormalization

DTYPE = torch.float64
RTOL, ATOL = 1e-10, 1e-12


class LearnableTanh(nn.Module):
    """Smooth activation with a trainable parameter (forces the composite Taylor path)."""

    def __init__(self) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(1.3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.slope * z)


ACTIVATIONS = {
    "tanh": nn.Tanh,
    "irelu": IReLU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "gelu_tanh_fallback": functools.partial(nn.GELU, approximate="tanh"),
    "mish_fallback": nn.Mish,
    "integrated_softplus": IntegratedSoftplus,
    "learnable_tanh": LearnableTanh,
}


def _model(arch: str, activation, dims: int, outputs: int) -> nn.Module:
    torch.manual_seed(10 * dims + outputs + (0 if arch == "mlp" else 100))
    if arch == "mlp":
        model = MLP(dims, outputs, hidden=6, depth=3, activation=activation, init="torch_default")
    else:
        model = ModifiedMLP(dims, outputs, hidden=6, depth=2, activation=activation)
        with torch.no_grad():  # non-zero biases so that bias gradients are exercised
            for name, parameter in model.named_parameters():
                if name.endswith("bias"):
                    parameter.uniform_(-0.5, 0.5)
    return model.to(DTYPE)


def _points(count: int, dims: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, dims, generator=generator, dtype=DTYPE) * 1.5


def _jet_loss(jet: Jet) -> torch.Tensor:
    """A nonlinear loss touching every jet entry with different weights."""
    generator = torch.Generator().manual_seed(3)
    weights = [torch.rand(t.shape, generator=generator, dtype=DTYPE) for t in (jet.d1, jet.d2)]
    return (
        jet.value.square().sum()
        + (weights[0] * jet.d1.square()).sum()
        + (weights[1] * jet.d2 * jet.d1).sum()
        + jet.d2.square().sum()
    )


def _assert_jets_close(actual: Jet, expected: Jet) -> None:
    for name in ("value", "d1", "d2"):
        torch.testing.assert_close(
            getattr(actual, name), getattr(expected, name), rtol=RTOL, atol=ATOL, msg=name
        )
    assert actual.second_order == expected.second_order


def _assert_parameter_gradients_close(model: nn.Module, actual: Jet, expected: Jet) -> None:
    parameters = [p for p in model.parameters() if p.requires_grad]
    grads_actual = torch.autograd.grad(_jet_loss(actual), parameters)
    grads_expected = torch.autograd.grad(_jet_loss(expected), parameters)
    for (name, _), g_actual, g_expected in zip(
        model.named_parameters(), grads_actual, grads_expected, strict=True
    ):
        torch.testing.assert_close(g_actual, g_expected, rtol=1e-9, atol=1e-11, msg=name)


def _uses_fused_path(jet: Jet) -> bool:
    return "Fused" in type(jet.value.grad_fn.next_functions[0][0]).__name__


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("arch", ["mlp", "modified"])
@pytest.mark.parametrize(
    ("dims", "outputs", "second_order"),
    [(2, 1, (0,)), (3, 2, (0, 2)), (3, 3, (0, 1, 2))],
)
def test_taylor_matches_autograd(activation, arch, dims, outputs, second_order):
    model = _model(arch, ACTIVATIONS[activation], dims, outputs)
    x = _points(9, dims)
    taylor = input_jet(model, x, second_order, method="taylor")
    reference = input_jet(model, x, second_order, method="autograd")
    _assert_jets_close(taylor, reference)
    _assert_parameter_gradients_close(model, taylor, reference)
    fused_expected = arch == "mlp" and activation != "learnable_tanh"
    assert _uses_fused_path(taylor) == fused_expected


@pytest.mark.parametrize("arch", ["mlp", "modified"])
def test_first_order_only_has_zero_second_derivatives(arch):
    model = _model(arch, nn.Tanh, 2, 2)
    x = _points(5, 2)
    taylor = input_jet(model, x, method="taylor")
    _assert_jets_close(taylor, input_jet(model, x, method="autograd"))
    assert torch.count_nonzero(taylor.d2) == 0
    _assert_parameter_gradients_close(model, taylor, input_jet(model, x, method="autograd"))


def _batchnorm_model() -> MLP:
    torch.manual_seed(5)
    model = MLP(3, 2, hidden=6, depth=3, normalization="batchnorm", init="torch_default")
    model = model.to(DTYPE)
    with torch.no_grad():
        model(_points(64, 3, seed=1) + 0.7)  # running statistics away from (0, 1)
        for norm in model.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("compiling", [False, True], ids=["fused", "composite"])
def test_taylor_with_batchnorm_in_eval_mode(compiling, monkeypatch):
    # Under torch.compile the composite path replaces the fused one; emulate that cheaply.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    model = _batchnorm_model()
    x = _points(8, 3)
    taylor = input_jet(model, x, (1, 2), method="taylor")
    assert _uses_fused_path(taylor) != compiling
    reference = input_jet(model, x, (1, 2), method="autograd")
    _assert_jets_close(taylor, reference)
    _assert_parameter_gradients_close(model, taylor, reference)


def test_stripped_normalization_is_skipped():
    model = _batchnorm_model()
    for i in range(len(model.norms)):
        model.norms[i] = RemovedNormalization()
    x = _points(6, 3)
    _assert_jets_close(
        input_jet(model, x, (0,), method="taylor"), input_jet(model, x, (0,), method="autograd")
    )


def test_batchnorm_in_training_mode_auto_uses_autograd_and_taylor_refuses():
    model = _batchnorm_model().train()
    x = _points(8, 3)
    with pytest.raises(ValueError, match="batch statistics"):
        input_jet(model, x, method="taylor")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    auto = input_jet(model, x, (0,), method="auto")
    model.load_state_dict(state)  # the training-mode forward updated the running statistics
    _assert_jets_close(auto, input_jet(model, x, (0,), method="autograd"))


def test_other_models_auto_uses_autograd_and_taylor_refuses():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).to(DTYPE)
    x = _points(4, 2)
    with pytest.raises(ValueError, match="Taylor mode supports .*got Sequential"):
        input_jet(model, x, method="taylor")
    _assert_jets_close(input_jet(model, x, (1,)), input_jet(model, x, (1,), method="autograd"))


def test_estimated_costs_count_slabs_and_reverse_sweeps():
    # 1D advection, 1D Euler, 2D diffusion-reaction domain and boundary points.
    assert estimated_costs(2, 1, 0) == {"taylor": 9, "autograd": 6}
    assert estimated_costs(2, 3, 0) == {"taylor": 9, "autograd": 12}
    assert estimated_costs(3, 2, 2) == {"taylor": 18, "autograd": 33}
    assert estimated_costs(3, 2, 0) == {"taylor": 12, "autograd": 9}


@pytest.mark.parametrize(
    ("dims", "outputs", "second_order", "fused"),
    [(2, 1, (), False), (2, 3, (), True), (3, 2, (0, 1), True), (3, 2, (), False)],
)
def test_auto_picks_the_cheaper_method_and_matches_both(dims, outputs, second_order, fused):
    model = _model("mlp", nn.Tanh, dims, outputs)
    x = _points(7, dims)
    auto = input_jet(model, x, second_order, method="auto")
    assert _uses_fused_path(auto) == fused
    _assert_jets_close(auto, input_jet(model, x, second_order, method="autograd"))
    _assert_jets_close(auto, input_jet(model, x, second_order, method="taylor"))


@pytest.mark.parametrize("arch", ["mlp", "modified"])
@pytest.mark.parametrize("method", ["taylor", "autograd"])
def test_derivatives_match_finite_differences(arch, method):
    model = _model(arch, nn.Tanh, 2, 2)
    x = _points(4, 2, seed=7)
    jet = input_jet(model, x, (0, 1), method=method)
    assert_jet_matches_finite_differences(model, x, jet)


class _JetTensors(nn.Module):
    """Exposes the jet as a tuple of tensors so that gradcheck can perturb every parameter."""

    def __init__(self, model: nn.Module, second_order: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.second_order = second_order

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        jet = input_jet(self.model, x, self.second_order, method="taylor")
        return jet.value, jet.d1, jet.d2


@pytest.mark.parametrize("second_order", [(), (1,), (0, 2)])
@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_fused_backward_passes_gradcheck(second_order, normalization):
    torch.manual_seed(11)
    model = MLP(3, 2, hidden=4, depth=2, normalization=normalization, init="torch_default")
    model = model.to(DTYPE).eval()
    wrapper = _JetTensors(model, second_order)
    names = [name for name, _ in wrapper.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in wrapper.parameters()]
    x = _points(3, 3).requires_grad_(True)
    assert _uses_fused_path(input_jet(model, x, second_order, method="taylor"))

    def outputs(x, *flat_params):
        return torch.func.functional_call(wrapper, dict(zip(names, flat_params, strict=True)), x)

    assert torch.autograd.gradcheck(outputs, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


def _nested_autograd(module: nn.Module, z: torch.Tensor, order: int) -> list[torch.Tensor]:
    z = z.clone().requires_grad_(True)
    terms = [module(z)]
    for _ in range(order):
        (derivative,) = torch.autograd.grad(
            terms[-1].sum(), z, create_graph=True, materialize_grads=True
        )
        terms.append(derivative)
    return terms


@pytest.mark.parametrize(
    "module",
    [
        nn.Tanh(),
        nn.ReLU(),
        IReLU(),
        nn.Sigmoid(),
        nn.SiLU(),
        nn.Softplus(),
        nn.Softplus(beta=2.0, threshold=3.0),
        nn.GELU(),
        nn.GELU(approximate="tanh"),
        nn.ELU(),
        IntegratedSoftplus(beta=1.5),
        IntegratedSiLU(),
        IntegratedGELU(),
        IntegratedELU(),
        IntegratedLeakyReLU(0.1),
    ],
    ids=lambda m: repr(m),
)
def test_activation_derivatives_match_autograd(module):
    # Offset keeps the kinks at 0 out of the grid; the range reaches softplus' linear region.
    z = torch.linspace(-4, 4, 41, dtype=DTYPE) + 0.013
    expected = _nested_autograd(module, z, 3)
    actual = activation_derivatives(module, z, 3)
    assert len(actual) == 4
    for order, (a, e) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=f"order {order}")
    assert len(activation_derivatives(module, z, 1)) == 2


def test_closed_forms_allow_inference_mode_but_autograd_does_not():
    model = _model("mlp", nn.Tanh, 2, 1)
    x = _points(5, 2)
    reference = input_jet(model, x, (0,), method="autograd")
    with torch.inference_mode():
        jet = input_jet(model, x, (0,), method="taylor")
        with pytest.raises(RuntimeError, match="inference mode"):
            input_jet(model, x, (0,), method="autograd")
        with pytest.raises(RuntimeError, match="no closed-form derivatives"):
            input_jet(_model("mlp", nn.Mish, 2, 1), x, (0,), method="taylor")
    torch.testing.assert_close(jet.d2, reference.d2.detach(), rtol=RTOL, atol=ATOL)


def test_jet_accessors():
    model = _model("mlp", nn.Tanh, 3, 2)
    jet = input_jet(model, _points(4, 3), (2,))
    torch.testing.assert_close(jet.first(1, 0), jet.d1[:, 1, 0])
    torch.testing.assert_close(jet.second(1, 2), jet.d2[:, 1, 2])
    with pytest.raises(ValueError, match="coordinate 0 was not requested"):
        jet.second(0, 0)
    assert jet.value.shape == (4, 2) and jet.d1.shape == jet.d2.shape == (4, 2, 3)
    # A jet built by hand (second_order None) allows every coordinate.
    assert Jet(jet.value, jet.d1, jet.d2).second(0, 0).shape == (4,)


def test_bad_input_errors():
    model = _model("mlp", nn.Tanh, 2, 1)
    x = _points(4, 2)
    with pytest.raises(ValueError, match="method must be one of"):
        input_jet(model, x, method="forward")
    with pytest.raises(ValueError, match=r"shape \(N, D\), got \(4,\)"):
        input_jet(model, x[:, 0])
    with pytest.raises(ValueError, match="floating-point"):
        input_jet(model, x.long())
    with pytest.raises(ValueError, match=r"direction indices in 0..1 .* got 2"):
        input_jet(model, x, (2,))
    with pytest.raises(ValueError, match="repeated coordinates"):
        input_jet(model, x, (0, 0))
    with pytest.raises(ValueError, match="MLP expects 2"):
        input_jet(model, _points(4, 3), method="taylor")
    with pytest.raises(ValueError, match="torch.float32 .* parameters .* torch.float64"):
        input_jet(model, x.float(), method="taylor")

    class Flat(nn.Module):
        def forward(self, x):
            return x.sum(dim=1)

    with pytest.raises(ValueError, match=r"Flat returned shape \(4,\)"):
        input_jet(Flat(), x)


def test_inputs_requiring_grad_keep_their_graph():
    model = _model("mlp", nn.SiLU, 2, 1)
    x = _points(3, 2).requires_grad_(True)
    grads = {
        method: torch.autograd.grad(input_jet(model, x, (0,), method=method).d2.sum(), x)[0]
        for method in ("taylor", "autograd")
    }
    torch.testing.assert_close(grads["taylor"], grads["autograd"], rtol=RTOL, atol=ATOL)


def test_separate_loss_terms_backpropagate_from_one_jet():
    # Loss weighting (learning-rate annealing) differentiates each term of one jet separately.
    model = _model("mlp", nn.Tanh, 2, 1)
    x = _points(6, 2)
    parameters = list(model.parameters())
    gradients = {}
    for method in ("taylor", "autograd"):
        jet = input_jet(model, x, (0,), method=method)
        residual = (jet.first(0, 1) + jet.value[:, 0] * jet.first(0, 0)).square().mean()
        curvature = jet.second(0, 0).square().mean()
        gradients[method] = [
            torch.autograd.grad(residual, parameters, retain_graph=True),
            # d2 does not depend on the output bias: autograd reports it unused, taylor zero.
            torch.autograd.grad(curvature, parameters, materialize_grads=True),
        ]
    for taylor_term, autograd_term in zip(*gradients.values(), strict=True):
        for g_taylor, g_autograd in zip(taylor_term, autograd_term, strict=True):
            torch.testing.assert_close(g_taylor, g_autograd, rtol=1e-9, atol=1e-11)


DIRECTIONS = torch.tensor([[0.3, 1.0, -0.5], [1.0, 0.0, 0.0], [-1.2, 0.4, 2.0]], dtype=DTYPE)


@pytest.mark.parametrize("arch", ["mlp", "modified"])
@pytest.mark.parametrize("method", ["taylor", "autograd"])
@pytest.mark.parametrize(("count", "second_order"), [(1, ()), (2, (1,)), (3, (0, 2))])
def test_directional_derivatives_match_finite_differences(arch, method, count, second_order):
    model = _model(arch, nn.SiLU, 3, 2)
    x = _points(5, 3, seed=4)
    directions = DIRECTIONS[:count]
    jet = input_jet(model, x, second_order, method=method, directions=directions)
    assert jet.d1.shape == (5, 2, count) and torch.equal(jet.directions, directions)
    step = 1e-4
    with torch.no_grad():
        for k, direction in enumerate(directions):
            plus, minus = model(x + step * direction), model(x - step * direction)
            torch.testing.assert_close(
                jet.first(0, k), (plus - minus)[:, 0] / (2 * step), rtol=1e-7, atol=1e-8
            )
            if k in second_order:
                central = (plus - 2 * model(x) + minus) / step**2
                torch.testing.assert_close(jet.d2[:, :, k], central, rtol=1e-5, atol=1e-5)
            else:
                assert torch.count_nonzero(jet.d2[:, :, k]) == 0


@pytest.mark.parametrize("arch", ["mlp", "modified"])
@pytest.mark.parametrize("second_order", [(), (0,), (0, 1)])
def test_directional_taylor_matches_autograd_with_gradients(arch, second_order):
    model = _model(arch, nn.Tanh, 3, 2)
    x = _points(7, 3, seed=5)
    taylor = input_jet(model, x, second_order, method="taylor", directions=DIRECTIONS[:2])
    reference = input_jet(model, x, second_order, method="autograd", directions=DIRECTIONS[:2])
    _assert_jets_close(taylor, reference)
    _assert_parameter_gradients_close(model, taylor, reference)
    assert _uses_fused_path(taylor) == (arch == "mlp")


def test_axis_directions_give_the_default_jet():
    model = _model("mlp", nn.Tanh, 3, 1)
    x = _points(4, 3)
    axes = torch.eye(3, dtype=DTYPE)
    for method in ("taylor", "autograd"):
        explicit = input_jet(model, x, (1,), method=method, directions=axes)
        assert explicit.directions is None
        _assert_jets_close(explicit, input_jet(model, x, (1,), method=method))


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
@pytest.mark.parametrize("method", ["taylor", "autograd"])
def test_value_points_share_the_pass_and_backpropagate(normalization, method):
    torch.manual_seed(12)
    model = MLP(2, 2, hidden=5, depth=3, normalization=normalization, init="torch_default")
    model = model.to(DTYPE).eval()
    x, others = _points(6, 2, seed=1), _points(9, 2, seed=2)
    direction = torch.tensor([[0.1, 1.0]], dtype=DTYPE)
    jet, values = jet_and_values(model, x, others, (0,), method=method, directions=direction)
    torch.testing.assert_close(values, model(others), rtol=1e-14, atol=1e-14)
    _assert_jets_close(jet, input_jet(model, x, (0,), method="autograd", directions=direction))
    if method == "taylor":
        assert _uses_fused_path(jet)

    parameters = list(model.parameters())
    loss = _jet_loss(jet) + values.square().mean()
    reference_jet = input_jet(model, x, (0,), method="autograd", directions=direction)
    reference = _jet_loss(reference_jet) + model(others).square().mean()
    for actual, expected in zip(
        torch.autograd.grad(loss, parameters),
        torch.autograd.grad(reference, parameters),
        strict=True,
    ):
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-11)


class _DirectionalJetTensors(nn.Module):
    """Jet along directions plus outputs at value-only points, for gradcheck."""

    def __init__(self, model: nn.Module, second_order: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.second_order = second_order

    def forward(self, x: torch.Tensor, others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        jet, values = jet_and_values(
            self.model, x, others, self.second_order, method="taylor", directions=DIRECTIONS[:2]
        )
        return jet.value, jet.d1, jet.d2, values


@pytest.mark.parametrize("second_order", [(), (1,), (0, 1)])
def test_fused_directional_backward_passes_gradcheck(second_order):
    torch.manual_seed(13)
    model = MLP(3, 2, hidden=4, depth=2, init="torch_default").to(DTYPE)
    wrapper = _DirectionalJetTensors(model, second_order)
    names = [name for name, _ in wrapper.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in wrapper.parameters()]
    x = _points(3, 3).requires_grad_(True)
    others = _points(2, 3, seed=9)

    def outputs(x, *flat_params):
        return torch.func.functional_call(
            wrapper, dict(zip(names, flat_params, strict=True)), (x, others)
        )

    assert torch.autograd.gradcheck(outputs, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_bad_directions_and_value_points():
    model = _model("mlp", nn.Tanh, 2, 1)
    x = _points(4, 2)
    with pytest.raises(ValueError, match=r"directions must have shape \(K, 2\).*got \(1, 3\)"):
        input_jet(model, x, directions=[[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"got \(0, 2\)"):
        input_jet(model, x, directions=torch.zeros(0, 2))
    with pytest.raises(ValueError, match="directions must be finite"):
        input_jet(model, x, directions=[[float("nan"), 1.0]])
    with pytest.raises(ValueError, match=r"direction indices in 0..0 .* got 1"):
        input_jet(model, x, (1,), directions=[[0.1, 1.0]])
    with pytest.raises(ValueError, match="value_points .* must match x"):
        jet_and_values(model, x, _points(3, 3), directions=[[0.1, 1.0]])
    jet = input_jet(model, x, directions=[[0.1, 1.0]])
    with pytest.raises(ValueError, match="along direction 0 was not requested"):
        jet.second(0, 0)
