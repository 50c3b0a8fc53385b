"""Wang, Teng & Perdikaris' problems (Helmholtz, Klein-Gordon, lid-driven cavity): exact
solutions give zero loss, residuals match hand-derived and finite-difference derivatives in
float64 through the input standardisation, minibatches are resampled per step reproducibly, and
runs end to end with rel_l2 in metrics.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_train
from torch import Tensor, nn

from dcnn.data.datamodules import PinnDataModule
from dcnn.input_derivatives.derivatives import input_jet
from dcnn.models.mlp import MLP
from dcnn.pde.problems import CavityProblem, HelmholtzProblem, KleinGordonProblem
from dcnn.pde.problems.box import relative_errors
from dcnn.pde.residuals import helmholtz_operator, klein_gordon_operator
from dcnn.train import run

DTYPE = torch.float64


class PhysicalFunction(nn.Module):
    """A network stand-in: f(x) of the physical inputs x = z * std + mean, from inputs z."""

    def __init__(self, problem, function) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(problem.input_mean, dtype=DTYPE))
        self.register_buffer("std", torch.tensor(problem.input_std, dtype=DTYPE))
        self.function = function

    def forward(self, z: Tensor) -> Tensor:
        return self.function(z * self.std + self.mean)


def helmholtz_exact(x: Tensor) -> Tensor:
    return (torch.sin(math.pi * x[:, 0]) * torch.sin(4 * math.pi * x[:, 1]))[:, None]


def klein_gordon_exact(x: Tensor) -> Tensor:
    t, s = x[:, 0], x[:, 1]
    return (s * torch.cos(5 * math.pi * t) + (s * t) ** 3)[:, None]


@pytest.mark.parametrize("standardize", [True, False])
def test_helmholtz_exact_solution_has_zero_loss(standardize):
    problem = HelmholtzProblem(batch_size=64, standardize_inputs=standardize, seed=3)
    model = PhysicalFunction(problem, helmholtz_exact)
    terms = problem.loss_terms(model, problem.points_for_step(5, DTYPE), "autograd")
    assert set(terms) == {"pde", "bc"}
    assert terms["pde"].item() < 1e-16 and terms["bc"].item() < 1e-20
    # A wrong solution is penalised in both terms.
    shifted = PhysicalFunction(problem, lambda x: helmholtz_exact(x) + 0.1)
    wrong = problem.loss_terms(shifted, problem.points_for_step(5, DTYPE), "autograd")
    assert wrong["pde"].item() == pytest.approx(0.01, rel=1e-9)  # lambda * 0.1, squared
    assert wrong["bc"].item() == pytest.approx(4 * 0.01, rel=1e-9)  # four edges


def test_klein_gordon_exact_solution_has_zero_loss():
    problem = KleinGordonProblem(batch_size=64, seed=1)
    model = PhysicalFunction(problem, klein_gordon_exact)
    terms = problem.loss_terms(model, problem.points_for_step(0, DTYPE), "autograd")
    assert set(terms) == {"pde", "ic", "bc"}
    assert max(value.item() for value in terms.values()) < 1e-14
    # u_t at t = 0 is part of the initial term: x + t changes u_t by 1 and u(0, x) not at all.
    moving = PhysicalFunction(problem, lambda x: klein_gordon_exact(x) + x[:, :1])
    terms = problem.loss_terms(moving, problem.points_for_step(0, DTYPE), "autograd")
    assert terms["ic"].item() == pytest.approx(1.0, rel=1e-9)


def _finite_difference_second(function, x: Tensor, axis: int, step: float = 1e-4) -> Tensor:
    shift = torch.zeros_like(x)
    shift[:, axis] = step
    return (function(x + shift) - 2 * function(x) + function(x - shift)) / step**2


@pytest.mark.parametrize("method", ["autograd", "taylor"])
def test_operators_through_standardised_inputs_match_finite_differences(method):
    torch.manual_seed(0)
    for problem, operator in (
        (HelmholtzProblem(), lambda jet: helmholtz_operator(jet, 1.0)),
        (KleinGordonProblem(), lambda jet: klein_gordon_operator(jet, -1.0, 0.0, 1.0, 3)),
    ):
        network = MLP(2, 1, hidden=16, depth=3).to(DTYPE)
        raw = torch.as_tensor(problem.test_grid()[::997], dtype=DTYPE)
        z = (raw - torch.tensor(problem.input_mean)) / torch.tensor(problem.input_std)
        request = problem.axis_request(second_order=(0, 1))
        jet = input_jet(network, z, request.second_order, method, request.directions)

        def physical(x, network=network, problem=problem):
            mean, std = torch.tensor(problem.input_mean), torch.tensor(problem.input_std)
            return network((x - mean) / std)[:, 0]

        first, second = _finite_difference_second(physical, raw, 0), None
        second = _finite_difference_second(physical, raw, 1)
        u = physical(raw)
        expected = {
            "helmholtz": first + second + u,
            "klein_gordon": first - second + u**3,
        }[problem.name]
        torch.testing.assert_close(operator(jet), expected, rtol=1e-5, atol=1e-5)


@dataclass(frozen=True)
class Reference:
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    re: float
    source: str = "test reference"


def polynomial_flow(x: Tensor) -> Tensor:
    """psi = x^2 y^3 and p = x + 2 y as the two network outputs."""
    return torch.stack([x[:, 0] ** 2 * x[:, 1] ** 3, x[:, 0] + 2 * x[:, 1]], dim=1)


def _polynomial_reference(n: int, re: float) -> Reference:
    x = y = np.linspace(0.0, 1.0, n)
    grid_x, grid_y = np.meshgrid(x, y)
    return Reference(x, y, 3 * grid_x**2 * grid_y**2, -2 * grid_x * grid_y**3, re)


def test_cavity_momentum_residuals_match_hand_derivatives():
    re = 100.0
    problem = CavityProblem(_polynomial_reference(5, re), batch_size=32, seed=0)
    model = PhysicalFunction(problem, polynomial_flow)
    raw = torch.rand(50, 2, dtype=DTYPE)
    z = (raw - torch.tensor(problem.input_mean)) / torch.tensor(problem.input_std)
    flow = problem.flow(model, z)
    x, y = raw[:, 0], raw[:, 1]
    u, v = 3 * x**2 * y**2, -2 * x * y**3
    u_x, u_y, v_x, v_y = 6 * x * y**2, 6 * x**2 * y, -2 * y**3, -6 * x * y**2
    laplacian_u, laplacian_v = 6 * y**2 + 6 * x**2, -12 * x * y
    torch.testing.assert_close(flow["u"], u)
    torch.testing.assert_close(flow["v"], v)
    torch.testing.assert_close(flow["momentum_x"], u * u_x + v * u_y + 1 - laplacian_u / re)
    torch.testing.assert_close(flow["momentum_y"], u * v_x + v * v_y + 2 - laplacian_v / re)


def test_cavity_wall_term_and_velocity_metrics():
    problem = CavityProblem(_polynomial_reference(33, 100.0), batch_size=40, seed=2)
    points = problem.points_for_step(0, DTYPE)
    model = PhysicalFunction(problem, polynomial_flow)
    terms = problem.loss_terms(model, points, "auto")
    # Their form: the mean over points and (u, v) of the summed squared wall mismatches.
    mismatch = 0.0
    for face in problem.faces:
        raw = points[face] * torch.tensor(problem.input_std) + torch.tensor(problem.input_mean)
        x, y = raw[:, 0], raw[:, 1]
        velocity = torch.stack([3 * x**2 * y**2, -2 * x * y**3], 1)
        mismatch = mismatch + (velocity - points[f"{face}_target"]).square()
    assert terms["bc"].item() == pytest.approx(mismatch.mean().item(), rel=1e-12)
    metrics = problem.evaluate(model)
    assert metrics["rel_l2"] < 1e-12 and metrics["rel_l2_u"] < 1e-12
    scaled = PhysicalFunction(problem, lambda x: polynomial_flow(x) * 1.1)
    assert problem.evaluate(scaled)["rel_l2"] == pytest.approx(0.1, rel=1e-9)
    with pytest.raises(ValueError, match="third derivatives"):
        problem.loss_terms(model, points, "taylor")


def test_cavity_refuses_a_reference_for_another_reynolds_number():
    with pytest.raises(ValueError, match="Re = 400.0.*dcnn-data cavity --re 100"):
        CavityProblem(_polynomial_reference(5, 400.0), re=100.0)


def test_standardisation_matches_the_sample_moments_their_code_estimates():
    problem = KleinGordonProblem()
    samples = np.random.default_rng(0).random((100_000, 2))
    np.testing.assert_allclose(problem.input_mean, samples.mean(0), atol=3e-3)
    np.testing.assert_allclose(problem.input_std, samples.std(0), atol=3e-3)


def test_minibatches_depend_on_seed_and_step_only():
    problem = HelmholtzProblem(batch_size=16, seed=4)
    first, again = problem.points_for_step(7), HelmholtzProblem(batch_size=16, seed=4)
    for key, value in first.items():
        torch.testing.assert_close(value, again.points_for_step(7)[key], rtol=0, atol=0)
    assert not torch.equal(first["domain"], problem.points_for_step(8)["domain"])
    assert not torch.equal(first["domain"], HelmholtzProblem(seed=5).points_for_step(7)["domain"])
    assert not torch.equal(first["domain"][:16], problem.training_points()["domain"][:16])
    raw = first["top"] * torch.tensor(problem.input_std, dtype=torch.float32)
    assert torch.allclose(raw[:, 1], torch.ones(16))  # the top edge, y = 1
    assert first["domain"].shape == (16, 2) and problem.training_points()["left"].shape == (160, 2)


def test_datamodule_draws_each_global_step_once_and_resumes_in_place():
    problem = HelmholtzProblem(batch_size=8, seed=0)
    datamodule = PinnDataModule(problem, steps_per_epoch=3)
    loader = datamodule.train_dataloader()
    loader.order.set_epoch(2)
    batches = list(loader)
    for offset, batch in enumerate(batches):
        torch.testing.assert_close(batch["domain"], problem.points_for_step(6 + offset)["domain"])
    resumed = datamodule.train_dataloader()
    resumed.load_state_dict({"epoch": 2, "batches": 1})
    torch.testing.assert_close(next(iter(resumed))["domain"], batches[1]["domain"])


def test_relative_errors():
    target = np.array([[3.0, 0.0], [4.0, 1.0]])
    prediction = target + np.array([[0.0, 0.0], [0.0, 1.0]])
    metrics = relative_errors(prediction, target, ("a", "b"))
    assert metrics["rel_l2"] == pytest.approx(1 / math.sqrt(26))
    assert metrics["rel_l2_a"] == 0 and metrics["rel_l2_b"] == pytest.approx(1.0)
    assert metrics["max_error"] == 1.0


@pytest.mark.parametrize(
    "experiment,extra,terms",
    [
        ("pinn_helmholtz", ["weighting=annealing_code", "weighting.every=2"], {"pde", "bc"}),
        ("pinn_klein_gordon", ["model=modified_mlp", "model.depth=2"], {"pde", "ic", "bc"}),
    ],
)
def test_box_problems_train_end_to_end(tmp_path: Path, experiment, extra, terms):
    cfg = compose_train(
        [
            f"experiment={experiment}",
            "trainer.max_steps=40",
            "dataset.steps_per_epoch=20",
            "dataset.eval_points=20",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=5",
            *extra,
        ]
    )
    run(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok"
    assert {k.removesuffix("_loss") for k in record["test"] if k.endswith("_loss")} == terms
    assert 0 < record["test"]["rel_l2"] < 10
    assert record["info"]["data"]["domain"] == 10 * 128  # the fixed test draw
    lr_rows = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/pde_loss" in lr_rows
