"""The fused Taylor pass reuses its large tensors across steps: reuse must never change results."""

import pytest
import torch

from dcnn.input_derivatives import native
from dcnn.input_derivatives.derivatives import input_jet, jet_and_values
from dcnn.input_derivatives.fused_mlp import WORKSPACE, Workspace
from dcnn.models.mlp import MLP

DIRECTION = torch.tensor([[0.3, 1.0]], dtype=torch.float64)


@pytest.fixture(autouse=True, params=["require", "off"], ids=["native", "torch-ops"])
def fused_backend(request, monkeypatch):
    """Every test runs on the C++ pass (which must build) and on the torch-op pass."""
    monkeypatch.setenv(native.SETTING, request.param)
    return request.param


def _model(dtype=torch.float64) -> MLP:
    torch.manual_seed(0)
    model = MLP(2, 1, hidden=8, depth=3, init="torch_default").to(dtype)
    with torch.no_grad():  # non-zero biases so that bias gradients are exercised
        for layer in model.layers:
            layer.bias.uniform_(-0.5, 0.5)
    return model


def _points(count: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(count, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _loss(model: MLP, x: torch.Tensor, method: str, second_order=(1,)) -> torch.Tensor:
    jet = input_jet(model, x, second_order, method=method)
    return (jet.value.square() + jet.d1.square().sum(-1) + jet.d2.sin().sum(-1)).sum()


def _gradients(model: MLP, loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters())))


def test_passes_alive_at_once_do_not_share_tensors():
    """Two same-shaped passes whose graphs live together (as in one loss) stay independent."""
    model = _model()
    first, second = _points(7, 1), _points(7, 2)
    fused = _gradients(model, _loss(model, first, "taylor") + 3 * _loss(model, second, "taylor"))
    reference = _gradients(
        model, _loss(model, first, "autograd") + 3 * _loss(model, second, "autograd")
    )
    for actual, expected in zip(fused, reference, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_steps_reuse_the_workspace_without_growing_it():
    model = _model()
    x = _points(9, 3)
    WORKSPACE.clear()
    first = _gradients(model, _loss(model, x, "taylor"))
    free_after_first = WORKSPACE.free_tensors()
    assert free_after_first > 0  # given back once autograd freed the graph
    for _ in range(3):
        again = _gradients(model, _loss(model, x, "taylor"))
        assert WORKSPACE.free_tensors() == free_after_first
        for actual, expected in zip(again, first, strict=True):
            torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_backward_twice_with_retained_graph_doubles_the_gradients():
    model = _model()
    loss = _loss(model, _points(6, 4), "taylor")
    loss.backward(retain_graph=True)
    once = [p.grad.clone() for p in model.parameters()]
    loss.backward()
    for parameter, single in zip(model.parameters(), once, strict=True):
        torch.testing.assert_close(parameter.grad, 2 * single, rtol=0, atol=0)


def test_outputs_outlive_the_workspace_without_grad():
    model = _model()
    WORKSPACE.clear()
    with torch.no_grad():
        jet, values = jet_and_values(model, _points(5, 5), _points(4, 6), directions=DIRECTION)
        kept = [jet.value.clone(), jet.d1.clone(), values.clone()]
        assert WORKSPACE.free_tensors() > 0  # no graph: given back at once
        jet_and_values(model, _points(5, 7), _points(4, 8), directions=DIRECTION)
    for tensor, copy in zip([jet.value, jet.d1, values], kept, strict=True):
        torch.testing.assert_close(tensor, copy, rtol=0, atol=0)


def test_inference_mode_passes_leave_training_passes_intact():
    model = _model()
    x = _points(8, 9)
    with torch.inference_mode():
        inferred = input_jet(model, x, (1,), method="taylor")
    fused = _gradients(model, _loss(model, x, "taylor"))
    reference = _gradients(model, _loss(model, x, "autograd"))
    for actual, expected in zip(fused, reference, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(inferred.d2, input_jet(model, x, (1,), method="autograd").d2)


def test_workspace_hands_back_given_tensors_and_stays_bounded():
    workspace = Workspace(max_free=2, max_shapes=2)
    like = torch.zeros(())
    tensors = [torch.empty(3, 4) for _ in range(3)]
    workspace.give_back(tensors)
    assert workspace.free_tensors() == 2  # at most max_free per shape
    assert workspace.take((3, 4), like) is tensors[1]
    workspace.give_back([torch.empty(5), torch.empty(6)])  # a third shape drops the oldest
    assert workspace.take((3, 4), like) is not tensors[0]
    assert workspace.free_tensors() == 2
    assert workspace.take((2, 2), torch.zeros((), dtype=torch.float64)).dtype == torch.float64
    workspace.clear()
    assert workspace.free_tensors() == 0


@pytest.mark.parametrize("second_order", [(), (0, 1)])
def test_float32_cpu_tanh_matches_the_module(second_order):
    """On CPU the fused pass evaluates tanh as 2 sigmoid(2 z) - 1; it must agree with nn.Tanh
    (and with nested autograd) to float32 accuracy on the PDEBench network."""
    torch.manual_seed(0)
    model = MLP(2, 1, hidden=40, depth=6)
    x, others = _points(300, 10, torch.float32), _points(50, 11, torch.float32)
    jet, values = jet_and_values(model, x, others, second_order, method="taylor")
    reference = input_jet(model, x, second_order, method="autograd")
    torch.testing.assert_close(values, model(others), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(jet.value, reference.value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(jet.d1, reference.d1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(jet.d2, reference.d2, rtol=1e-4, atol=1e-5)
