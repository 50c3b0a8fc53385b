"""The C++ fused Taylor pass (dcnn.input_derivatives.native) against autograd, finite differences
and the torch ops of the same pass; its setting and its fallback."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dcnn.activations import IReLU
from dcnn.input_derivatives import fused_mlp, native
from dcnn.input_derivatives.derivatives import jet_and_values
from dcnn.input_derivatives.slab_layout import SlabLayout
from dcnn.models.mlp import MLP

RTOL, ATOL = 1e-10, 1e-12


@pytest.fixture
def required(monkeypatch):
    """Native kernels must build here: a failing build fails the test instead of falling back."""
    monkeypatch.setenv(native.SETTING, "require")
    return native.native_ops()


def _model(activation, dims: int, outputs: int, hidden: int = 9, depth: int = 3) -> MLP:
    torch.manual_seed(0)
    model = MLP(dims, outputs, hidden=hidden, depth=depth, activation=activation)
    model = model.double()
    with torch.no_grad():  # non-zero biases, and IReLU needs both signs of z
        for layer in model.layers:
            layer.bias.uniform_(-0.5, 0.5)
    return model


def _points(count: int, dims: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, dims, generator=generator, dtype=torch.float64)


def _run(model, x, value_points, second_order, directions, method):
    """Outputs and parameter gradients of a loss that uses every output of the pass."""
    model.zero_grad(set_to_none=True)
    jet, values = jet_and_values(
        model, x, value_points, second_order, method=method, directions=directions
    )
    loss = (
        jet.value.sin().sum()
        + (jet.d1**3).sum()
        + (1.5 * jet.d2.square()).sum()
        + (values.cos() if values is not None else jet.value.new_zeros(())).sum()
    )
    loss.backward()
    outputs = [jet.value, jet.d1, jet.d2] + ([values] if values is not None else [])
    return [t.detach() for t in outputs] + [p.grad.clone() for p in model.parameters()], jet


CASES = {
    # (dims, outputs, jet points, value points, second_order, directions)
    "advection direction": (2, 1, 40, 7, (), [[0.1, 1.0]]),
    "axes with second": (3, 2, 25, 0, (0, 2), None),
    "all second": (2, 3, 18, 5, (0, 1), None),
    "directions with second": (2, 1, 12, 3, (1,), [[1.0, 0.0], [0.3, -2.0]]),
    # more rows than one block (256) and one chunk (32), jet rows ending mid-chunk
    "many rows": (2, 1, 301, 170, (0,), None),
    # threads split the work, not the rows: here a split falls among the value-only rows
    "value rows outweigh jet rows": (2, 1, 40, 700, (0,), None),
    "value points only": (2, 2, 0, 9, (), None),
}


@pytest.mark.parametrize("activation", [nn.Tanh, IReLU])
@pytest.mark.parametrize("case", CASES)
def test_native_pass_matches_autograd_in_float64(required, activation, case):
    dims, outputs, n_jet, n_values, second_order, directions = CASES[case]
    model = _model(activation, dims, outputs)
    x, value_points = _points(n_jet, dims, 1), _points(n_values, dims, 2)
    if directions is not None:
        directions = torch.tensor(directions, dtype=torch.float64)
    value_points = value_points if n_values else None
    native_run, jet = _run(model, x, value_points, second_order, directions, "taylor")
    assert "NativeFusedMLPJet" in type(jet.value.grad_fn.next_functions[0][0]).__name__
    reference, _ = _run(model, x, value_points, second_order, directions, "autograd")
    for actual, expected in zip(native_run, reference, strict=True):
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("activation", [nn.Tanh, IReLU])
def test_native_pass_in_float32_matches_autograd_in_float64(required, activation):
    """float32 runs its own kernels (oneDNN's small-matrix products, the vectorised tanh, the
    AVX2 transposes of the weight gradients), over several row blocks (256 rows) that end
    mid-tile (8 rows): off float64 autograd by no more than float32 autograd is."""
    model = _model(activation, 2, 1, hidden=40, depth=3)
    x, value_points = _points(601, 2, 7), _points(203, 2, 8)
    directions = torch.tensor([[0.1, 1.0], [1.0, 0.0]], dtype=torch.float64)
    single = [t.float() for t in (x, value_points, directions)]
    native_run, jet = _run(copy.deepcopy(model).float(), *single[:2], (1,), single[2], "taylor")
    assert "NativeFusedMLPJet" in type(jet.value.grad_fn.next_functions[0][0]).__name__
    single_run, _ = _run(copy.deepcopy(model).float(), *single[:2], (1,), single[2], "autograd")
    reference, _ = _run(model, x, value_points, (1,), directions, "autograd")
    for native_out, single_out, expected in zip(native_run, single_run, reference, strict=True):
        assert native_out.dtype == torch.float32
        native_error = (native_out.double() - expected).abs().max()
        rounding = (single_out.double() - expected).abs().max() + 1e-7 * expected.abs().max()
        assert native_error <= 4 * rounding


@pytest.mark.parametrize("activation", [nn.Tanh, IReLU])
def test_native_and_torch_ops_pass_agree(monkeypatch, required, activation):
    """Same numbers from the C++ pass and the torch-op pass of fused_mlp._FusedMLPJet."""
    model = _model(activation, 2, 1)
    x, value_points = _points(50, 2, 3), _points(20, 2, 4)
    native_run, _ = _run(model, x, value_points, (0, 1), None, "taylor")
    monkeypatch.setenv(native.SETTING, "off")
    torch_run, jet = _run(model, x, value_points, (0, 1), None, "taylor")
    assert type(jet.value.grad_fn.next_functions[0][0]).__name__ == "_FusedMLPJetBackward"
    for actual, expected in zip(native_run, torch_run, strict=True):
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("activation", [nn.Tanh, IReLU])
@pytest.mark.parametrize("depth", [1, 2])
def test_native_backward_matches_finite_differences(required, activation, depth):
    """gradcheck of the C++ pass in float64, inputs x included (grad_x is its own code path);
    with one hidden layer, the output layer's backward runs inside the first layer's blocks."""
    model = _model(activation, 2, 2, hidden=5, depth=depth)
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    codes = [native.ACTIVATION_CODES[activation]] * depth
    directions = torch.tensor([[0.4, 1.0], [1.0, -0.5]], dtype=torch.float64)
    layout = SlabLayout.build(2, (0, 1), directions.device)
    # IReLU's s'' is a step: keep every z away from 0 so central differences do not cross it.
    x = (_points(6, 2, 5) * 0.3 + 2.0).requires_grad_(True)

    def native_pass(x, *params):
        native_jet = fused_mlp._NativeFusedMLPJet
        return native_jet.apply(x, directions, 4, codes, layout, required, *params)

    assert torch.autograd.gradcheck(native_pass, (x, *params), eps=1e-6, atol=1e-7)


def test_setting_off_uses_torch_ops_and_bad_setting_is_refused(monkeypatch):
    monkeypatch.setenv(native.SETTING, "off")
    assert native.native_ops() is None
    monkeypatch.setenv(native.SETTING, "sometimes")
    with pytest.raises(ValueError, match="DCNN_NATIVE_KERNELS='sometimes'.*auto, off, require"):
        native.native_ops()


def test_failed_build_falls_back_with_a_warning_or_fails_when_required(monkeypatch):
    def failing_build():
        raise OSError("no C++ compiler")

    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(native, "_build", failing_build)
    monkeypatch.setenv(native.SETTING, "auto")
    with pytest.warns(RuntimeWarning, match="could not be built \\(no C\\+\\+ compiler\\)"):
        assert native.native_ops() is None
    model = _model(nn.Tanh, 2, 1)
    fallback, jet = _run(model, _points(9, 2, 6), None, (0,), None, "taylor")
    assert type(jet.value.grad_fn.next_functions[0][0]).__name__ == "_FusedMLPJetBackward"
    reference, _ = _run(model, _points(9, 2, 6), None, (0,), None, "autograd")
    for actual, expected in zip(fallback, reference, strict=True):
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    monkeypatch.setenv(native.SETTING, "require")
    with pytest.raises(
        RuntimeError, match="=require but .*could not be built.*no C\\+\\+ compiler"
    ):
        native.native_ops()


def test_unsupported_inputs_use_torch_ops():
    assert native.native_unsupported_reason(torch.zeros(2, 2), [nn.Tanh(), IReLU()]) is None
    reason = native.native_unsupported_reason(torch.zeros(2, 2), [nn.Tanh(), nn.SiLU()])
    assert reason == "activations.1 is SiLU; native kernels: Tanh, IReLU"
    reason = native.native_unsupported_reason(torch.zeros(2, 2, dtype=torch.half), [nn.Tanh()])
    assert "float32 or float64" in reason


def test_build_folder_depends_on_source_cache_setting_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_SETTING, str(tmp_path))
    folder = native.build_directory()
    assert folder.parent == tmp_path
    monkeypatch.setattr(native, "_cpu_fingerprint", lambda: "model name: another CPU")
    assert native.build_directory() != folder
