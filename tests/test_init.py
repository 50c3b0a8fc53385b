"""init=lsuv (dcnn.init): IReLU networks keep unit-scale activations through depth at
initialisation, for every model preset; init=default changes nothing; runs record the report and
a resumed run takes its weights from the checkpoint."""

from __future__ import annotations

import json
import logging
import math
import signal

import numpy as np
import pytest
import torch
from helpers import CONF, TINY, compose_train
from model_checks import batch_of, check_forces_match_finite_differences
from omegaconf import OmegaConf
from torch import nn

from dcnn.activations import IReLU
from dcnn.build import build_model
from dcnn.data.generate import generate_advection
from dcnn.data.readers import read_rmd17
from dcnn.init import analytic_gain, initialise, lsuv_init, training_inputs, weight_layers
from dcnn.models.mlp import MLP
from dcnn.models.schnet import SchNet
from dcnn.pde.sampling import hammersley, scale_to_box
from dcnn.runs.interrupt import RunInterrupted
from dcnn.surgery import replace_activations
from dcnn.train import run

LSUV = OmegaConf.load(CONF / "init" / "lsuv.yaml")
SETTINGS = {k: LSUV[k] for k in ("target", "tolerance", "max_iterations", "center", "offset")}
ATOMISTIC = ["schnet", "cgcnn", "dimenet_pp", "forcenet", "gemnet_t"]


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))


@pytest.fixture(scope="module")
def aspirin(data_root):
    return read_rmd17(data_root / "rmd17", "aspirin")


def _advection_inputs(n: int, held_out: bool = False) -> torch.Tensor:
    """Raw PDEBench advection coordinates (x, t) in [0, 1] x [0, 2]: Hammersley points, as the
    PINN's domain set, or uniform random ones (held out from the initialisation)."""
    lows, highs = np.array([0.0, 0.0]), np.array([1.0, 2.0])
    if held_out:
        unit = np.random.default_rng(123).uniform(size=(n, 2))
        return torch.as_tensor(lows + unit * (highs - lows), dtype=torch.float32)
    return torch.as_tensor(scale_to_box(hammersley(n, 2), lows, highs), dtype=torch.float32)


def _hidden_activations(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    outputs, h = [], x
    with torch.no_grad():
        for layer, activation in zip(model.layers, model.activations, strict=False):
            pre = layer(h)
            h = activation(pre)
            outputs.append((pre, h))
    return outputs


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt())


def _irelu_mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(2, 1, hidden=40, depth=6, activation=IReLU)  # PDEBench: Glorot normal, zero bias


# ------------------------------------------------------------------------------ PINN MLP
def test_glorot_irelu_mlp_collapses_and_lsuv_keeps_every_depth_at_unit_scale():
    model = _irelu_mlp()
    held_out = _advection_inputs(2000, held_out=True)
    glorot = [_rms(a) for _, a in _hidden_activations(model, held_out)]
    # The problem: each IReLU layer roughly squares the scale, down to numerical zero.
    assert all(later < 0.2 * earlier for earlier, later in zip(glorot, glorot[1:], strict=False))
    assert glorot[-1] < 1e-20

    report = lsuv_init(model, _advection_inputs(1000), **SETTINGS)
    assert len(report.rescaled) == 7 and not report.unreached and not report.not_converged
    for depth, (pre, activation) in enumerate(_hidden_activations(model, held_out)):
        scale = _rms(activation) / LSUV.target
        assert 0.3 < scale < 3, f"hidden layer {depth}: rms {scale:.3g} x target on new points"
        # The typical value is smaller than the rms and shrinks with depth (IReLU squares a
        # heavy tail: each unit's output is a piecewise polynomial of (x, t) of degree 2^depth),
        # but nothing like the Glorot collapse.
        assert float(activation.abs().mean()) > 5e-3 * LSUV.target, depth
        active = float((pre > 0).double().mean())
        assert 0.3 < active < 0.97, f"hidden layer {depth}: {active:.0%} of units active"
    # The report tells the same story: collapsed before, on target after.
    layers = list(report.layers.values())
    assert layers[5]["initial"] < 1e-20 and layers[5]["measured"] == "IReLU output"
    assert all(abs(entry["after"] / LSUV.target - 1) <= LSUV.tolerance for entry in layers)
    assert layers[-1]["measured"] == "layer output"  # the output layer feeds no activation


def test_the_target_is_what_lsuv_sets():
    model = _irelu_mlp()
    report = lsuv_init(model, _advection_inputs(500), **{**SETTINGS, "target": 2.5})
    for _, activation in _hidden_activations(model, _advection_inputs(500)):
        assert math.isclose(_rms(activation), 2.5, rel_tol=LSUV.tolerance)
    assert report.target == 2.5


def test_analytic_gain_of_irelu_relu_and_tanh():
    # E[IReLU(s z)^2] = 3 s^4 / 8 = 1; ReLU: He's sqrt(2); tanh never reaches rms 1.
    assert math.isclose(analytic_gain(IReLU()), (8 / 3) ** 0.25, rel_tol=1e-5)
    assert math.isclose(analytic_gain(torch.relu), math.sqrt(2), rel_tol=1e-5)
    assert analytic_gain(torch.tanh) is None


def test_a_bounded_activation_is_never_saturated_to_reach_the_target():
    """tanh's rms tends to 1 only as its input scale grows without bound; LSUV must then set
    the layer's own output (pre-activation std 1), not multiply the weights by 1e6 and leave a
    sign function with zero input derivatives."""
    torch.manual_seed(0)
    model = MLP(2, 1, hidden=40, depth=6, activation=nn.Tanh)
    inputs = _advection_inputs(1000)
    report = lsuv_init(model, inputs, **SETTINGS)
    for name in (f"layers.{i}" for i in range(6)):
        entry = report.layers[name]
        assert entry["measured"] == "layer output (Tanh cannot reach rms 1)"
        assert entry["scale"] < 100
    for pre, post in _hidden_activations(model, inputs):
        assert math.isclose(float(pre.std()), 1.0, rel_tol=0.1)
        assert float((1 - post.square()).mean()) > 0.2  # tanh' far from zero: not saturated


# ------------------------------------------------------------------------------ SchNet
def _schnet_irelu() -> SchNet:
    torch.manual_seed(0)
    model = SchNet(
        hidden_channels=32, num_filters=32, num_interactions=3, num_gaussians=16, cutoff=5.0
    )
    replace_activations(model, IReLU)
    return model


def _schnet_scales(model: SchNet, batch) -> dict[str, float]:
    """rms of each interaction's IReLU and of its update to the atom features, and of the
    per-atom energy; frame energies per atom."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for i, interaction in enumerate(model.interactions):
        for key, module in ((f"{i}.act", interaction.act), (f"{i}.update", interaction.lin)):
            handles.append(
                module.register_forward_hook(lambda m, a, out, key=key: seen.update({key: out}))
            )
    handles.append(
        model.lin2.register_forward_hook(lambda m, a, out: seen.update({"per_atom": out}))
    )
    with torch.no_grad():
        energy = model(batch)
    for handle in handles:
        handle.remove()
    scales = {key: _rms(value) for key, value in seen.items()}
    scales["energy_per_atom"] = float((energy / batch["n_atoms"]).abs().max())
    return scales


def test_schnet_irelu_features_and_energy_are_unit_scale_on_real_frames(aspirin):
    model = _schnet_irelu()
    batch = batch_of(aspirin, list(range(0, 800, 100)), 5.0)
    batch = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
    before = _schnet_scales(model, batch)
    assert all(before[f"{i}.act"] < 0.05 for i in range(3)), before  # IReLU shrinks them
    report = lsuv_init(model, batch_of(aspirin, list(range(0, 640, 40)), 5.0), **SETTINGS)
    assert not report.unreached and not report.not_converged
    after = _schnet_scales(model, batch)  # other frames than the ones used to initialise
    for key, value in after.items():
        if key != "energy_per_atom":
            assert 0.3 < value / LSUV.target < 3, (key, value)
    assert 0.3 < after["per_atom"] < 3 and after["energy_per_atom"] < 3, after


def test_forces_stay_minus_the_energy_gradient_after_lsuv(aspirin):
    batch = batch_of(aspirin, [0, 3], 4.0)

    def make() -> nn.Module:
        torch.manual_seed(0)
        model = SchNet(
            hidden_channels=16, num_filters=16, num_interactions=2, num_gaussians=10, cutoff=4.0
        )
        replace_activations(model, IReLU)
        model = model.double()
        lsuv_init(model, batch, **SETTINGS)
        return model

    check_forces_match_finite_differences(make, batch, atoms=[0, 11, 20])


# ------------------------------------------------------------------------------ presets
def _preset(name: str, normalization: str = "none") -> nn.Module:
    torch.manual_seed(0)
    model_cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    activation = OmegaConf.load(CONF / "activation" / "irelu.yaml")
    sizes = {"in_features": 2, "out_features": 1} if name in ("mlp", "modified_mlp") else {}
    model, _ = build_model(model_cfg, activation, normalization, **sizes)
    return model


@pytest.mark.parametrize(
    "name,normalization",
    [(name, "none") for name in ATOMISTIC]
    + [("cgcnn", "original"), ("forcenet", "original"), ("mlp", "original")]
    + [("modified_mlp", "original")],
)
def test_every_preset_gets_every_weight_layer_set_and_nothing_else_touched(
    aspirin, name, normalization
):
    model = _preset(name, normalization)
    if name in ("mlp", "modified_mlp"):
        inputs = _advection_inputs(500)
    else:
        inputs = batch_of(aspirin, [0, 250, 500, 750], float(model.cutoff))
    layers = weight_layers(model)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    report = lsuv_init(model, inputs, **SETTINGS)

    assert not report.unreached
    assert set(report.layers) == set(layers)  # complete, nothing left out
    for layer_name, entry in report.layers.items():
        if entry["status"] == "zero output":  # DimeNet++'s zero-initialised output layers
            assert name == "dimenet_pp" and layer_name.endswith(".lin")
            assert not layers[layer_name].weight.any()
            continue
        assert abs(entry["after"] / LSUV.target - 1) <= LSUV.tolerance, (layer_name, entry)
        changed = not torch.equal(before[f"{layer_name}.weight"], layers[layer_name].weight)
        if entry["status"] == "on target as initialised":  # e.g. SchNet's embedding
            assert entry["iterations"] == 0 and not changed
        else:
            assert entry["status"] == "rescaled" and entry["iterations"] >= 1, (layer_name, entry)
            assert changed and entry["scale"] != 1.0
    owned = {id(p) for layer in layers.values() for p in layer.parameters(recurse=False)}
    after = model.state_dict(keep_vars=True)
    for key, value in before.items():  # normalization layers, scale factors, buffers, ...
        if id(after[key]) not in owned:
            assert torch.equal(after[key], value), f"{key} changed"
    assert set(report.untouched_parameters) == {
        key for key, p in model.named_parameters() if id(p) not in owned
    }
    json.dumps(report.to_dict())  # it goes into metrics.json


class _Odd(nn.Module):
    """A layer used twice, two layers with one weight, and a layer the forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 8)
        self.twice = nn.Linear(8, 8)
        self.tied = nn.Linear(8, 8, bias=False)
        self.tied_again = nn.Linear(8, 8, bias=False)
        self.tied_again.weight = self.tied.weight
        self.unused = nn.Linear(8, 8)
        self.act = IReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.first(x))
        h = self.act(self.twice(self.act(self.twice(h))))
        return self.tied_again(self.tied(h))


def test_unreached_shared_and_repeated_layers_are_reported(caplog):
    torch.manual_seed(0)
    model = _Odd()
    x = torch.rand(400, 3)
    with caplog.at_level(logging.WARNING, logger="dcnn"):
        report = lsuv_init(model, x, **SETTINGS)
    assert report.unreached == ["unused"]
    assert "unused" in caplog.text and "never reached" in caplog.text
    assert report.shared_weight == ["tied_again"]
    assert report.layers["twice"]["calls"] == 2
    assert report.layers["twice"]["status"] == "rescaled"  # set over both calls
    assert "never reached by the batch" in report.summary()
    assert report.to_dict()["unreached"] == ["unused"]


# ------------------------------------------------------------------------------ default, RNG
def test_init_default_changes_nothing_and_adds_no_setting():
    model = _irelu_mlp()
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    for settings in (None, {}, {"name": "default"}):
        assert initialise(settings, model, object(), seed=0) is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key])
    plain, explicit = compose_train([]), compose_train(["init=default"])
    assert "init" not in plain and OmegaConf.to_yaml(plain) == OmegaConf.to_yaml(explicit)
    chosen = compose_train(["init=lsuv"]).init
    assert chosen.name == "lsuv" and set(chosen) >= {"target", "tolerance", "max_iterations"}


def test_lsuv_is_deterministic_and_leaves_the_global_rng_alone():
    x = _advection_inputs(500)
    first, second = _irelu_mlp(), _irelu_mlp()
    state = torch.get_rng_state()
    lsuv_init(first, x, **SETTINGS)
    assert torch.equal(torch.get_rng_state(), state)
    lsuv_init(second, x, **SETTINGS)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


# ------------------------------------------------------------------- output to the labels
def _potential_run(model: str):
    from dcnn.tasks.potential import build_potential_run
    from dcnn.train import task_parts

    torch.manual_seed(0)
    data = [option for option in TINY if option.startswith("dataset.")]
    cfg = compose_train(["experiment=md17_dc", f"model={model}", "init=lsuv", *data])
    datamodule, task, *_ = build_potential_run(cfg, task_parts(cfg))
    return cfg.init, datamodule, task


def test_power_of_ten_labels_get_an_output_layer_at_their_scale():
    """LSUV alone leaves SchNet's per-atom energies at unit scale: with power-of-ten labels its
    forces start 1e5 times too large. match_labels scales the output layer's weight to the
    training forces' rms (forces are linear in it) and shifts its bias to the mean energy."""
    settings, datamodule, task = _potential_run("schnet")
    batch = training_inputs(datamodule, n_frames=settings.n_frames)  # the batch init uses
    structure = (batch["n_atoms"], batch["numbers"], batch["batch"])
    label_energy = task.scaler.encode_energy(batch["energy"], *structure)
    label_forces = task.scaler.encode_forces(batch["forces"])
    spread = float(label_energy.std())

    initialise({**settings, "match_labels": False}, task.model.energy_model, datamodule, 0)
    energy, forces = task.model(batch, create_graph=False)
    assert _rms(forces) > 1e4 * _rms(label_forces)  # what LSUV alone starts from
    assert _rms(energy.double() - label_energy) > 100 * spread

    settings, datamodule, task = _potential_run("schnet")
    report = initialise(settings, task.model.energy_model, datamodule, 0, task=task)
    energy, forces = task.model(batch, create_graph=False)
    assert report.output["layer"] == "lin2" and report.output["status"] == "matched"
    assert math.isclose(_rms(forces), _rms(label_forces), rel_tol=1e-3)
    assert _rms(energy.double() - label_energy) < 3 * spread  # only the mean was fitted
    assert report.to_dict()["output"]["weight_scale"] < 1e-4
    assert "output layer lin2 to the labels' scale" in report.summary()

    # a zero-initialised output block (DimeNet++'s) is kept, and the report says why
    settings, datamodule, task = _potential_run("dimenet_pp")
    report = initialise(settings, task.model.energy_model, datamodule, 0, task=task)
    assert report.output["status"].startswith("kept: zero")


# ------------------------------------------------------------------------------ runs
def test_pinn_run_with_lsuv_records_the_report(tmp_path):
    pde_root = tmp_path / "pdebench"
    generate_advection(
        pde_root / "1D_Advection_Sols_beta0.1.hdf5", n_samples=10, nx=64, nt=41, progress=False
    )
    overrides = ["experiment=pinn_advection", "activation=irelu", f"pde_data_root={pde_root}"]
    overrides += ["dataset.n_domain=300", "dataset.n_boundary=100", "dataset.n_initial=200"]
    overrides += ["trainer.max_steps=3", "trainer.enable_progress_bar=false", "init=lsuv"]
    folder = tmp_path / "run"
    assert run(compose_train(overrides), folder)["status"] == "ok"
    info = json.loads((folder / "metrics.json").read_text())["info"]["init"]
    assert info["name"] == "lsuv" and info["inputs"] == "300 points" and info["rescaled"] == 7
    assert info["layers"]["layers.5"]["initial"] < 1e-20 < info["layers"]["layers.5"]["after"]
    assert "layers.5" in (folder / "init.txt").read_text()


def test_a_resumed_lsuv_run_takes_its_weights_from_the_checkpoint(tmp_path):
    """An lsuv run interrupted mid-epoch and relaunched ends exactly as the uninterrupted one
    (so the initialisation before fit does not undo the checkpoint) and records the report."""
    overrides = [*TINY, "trainer.max_epochs=2", "init=lsuv", "init.n_frames=8"]
    whole = tmp_path / "whole"
    assert run(compose_train(overrides), whole)["status"] == "ok"
    recorded = json.loads((whole / "metrics.json").read_text())
    init = recorded["info"]["init"]
    assert init["name"] == "lsuv" and len(init["layers"]) == 13 and not init["unreached"]
    statuses = {entry["status"] for entry in init["layers"].values()}
    assert init["rescaled"] >= 10 and statuses <= {"rescaled", "on target as initialised"}
    assert init["inputs"].startswith("8 frames") and (whole / "init.txt").is_file()

    stopped = tmp_path / "stopped"
    stop = f"+callbacks.stop={{_target_:signal_at.SignalAt,step:8,signum:{int(signal.SIGTERM)}}}"
    with pytest.raises(RunInterrupted):
        run(compose_train([*overrides, stop]), stopped)
    assert json.loads((stopped / "metrics.json").read_text())["status"] == "interrupted"
    resumed = run(compose_train([*overrides, stop]), stopped)
    assert resumed["status"] == "ok"
    again = json.loads((stopped / "metrics.json").read_text())
    assert again["info"]["init"] == init
    for key, value in recorded["test"].items():
        assert math.isclose(again["test"][key], value, rel_tol=1e-6), key


def test_training_inputs_are_spread_over_the_training_split(aspirin):
    class Atoms:  # what training_inputs reads from an AtomsDataModule
        def __init__(self) -> None:
            from dcnn.data.atoms import AtomsCollate

            self.collate = AtomsCollate(5.0)

        def split(self, name: str):
            return aspirin.subset(np.arange(100))

    batch = training_inputs(Atoms(), n_frames=5)
    assert batch["n_atoms"].tolist() == [21] * 5
    expected = torch.as_tensor(aspirin.subset(np.array([0, 25, 50, 74, 99])).positions)
    torch.testing.assert_close(batch["positions"].double(), expected, rtol=0, atol=1e-5)

    class Points:
        points = {"domain": _advection_inputs(300)}

    assert training_inputs(Points(), n_points=1000) is Points.points["domain"]
    subset = training_inputs(Points(), n_points=50, seed=1)
    assert subset.shape == (50, 2) and torch.equal(subset, training_inputs(Points(), 50, 50, 1))
