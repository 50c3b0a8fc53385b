"""Loss weighting: fixed weights and learning-rate annealing (Wang, Teng & Perdikaris)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcnn.tasks.weighting import FixedWeights, LearningRateAnnealing, build_weighting


def _terms(model: nn.Module) -> dict[str, torch.Tensor]:
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    out = model(x)
    return {"pde": out.square().mean(), "bc": 0.01 * (out - 1).square().mean()}


def test_fixed_weights_sum_terms():
    terms = {"energy": torch.tensor(2.0), "forces": torch.tensor(3.0)}
    total, used = FixedWeights().combine(terms, {"energy": 1.0, "forces": 30.0}, nn.Linear(1, 1), 0)
    assert float(total) == 92.0 and used == {"energy": 1.0, "forces": 30.0}
    with pytest.raises(KeyError, match="forces"):
        FixedWeights().combine(terms, {"energy": 1.0}, nn.Linear(1, 1), 0)


def test_annealing_matches_algorithm_1_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    strategy = LearningRateAnnealing(reference_term="pde", rate=0.9, every=1, form="paper")
    terms = _terms(model)
    params = list(model.parameters())
    g_ref = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(terms["pde"], params, retain_graph=True)]
    )
    g_bc = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(terms["bc"], params, retain_graph=True)]
    )
    expected_lambda = 0.1 * 1.0 + 0.9 * float(g_ref.abs().max() / g_bc.abs().mean())
    total, used = strategy.combine(terms, {"pde": 1.0, "bc": 2.0}, model, step=0)
    assert used["pde"] == 1.0
    assert used["bc"] == pytest.approx(2.0 * expected_lambda, rel=1e-6)
    assert float(total) == pytest.approx(float(terms["pde"] + used["bc"] * terms["bc"]), rel=1e-6)
    assert used["bc"] > 2.0  # the small boundary term is pushed up


def test_annealing_updates_only_every_n_steps_and_code_form_differs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    paper = LearningRateAnnealing(every=10)
    _, first = paper.combine(_terms(model), {"pde": 1.0, "bc": 1.0}, model, step=0)
    _, unchanged = paper.combine(_terms(model), {"pde": 1.0, "bc": 1.0}, model, step=3)
    assert first == unchanged
    code = LearningRateAnnealing(every=10, form="code")
    _, code_weights = code.combine(_terms(model), {"pde": 1.0, "bc": 1.0}, model, step=0)
    assert code_weights["bc"] != pytest.approx(first["bc"])


def test_weighting_options_are_checked():
    with pytest.raises(ValueError, match="'paper' or 'code'"):
        LearningRateAnnealing(form="other")
    with pytest.raises(ValueError, match="unknown weighting"):
        build_weighting("magic")
    with pytest.raises(KeyError, match="reference term 'pde'"):
        LearningRateAnnealing().combine(
            {"energy": torch.tensor(1.0)}, {"energy": 1.0}, nn.Linear(1, 1), 0
        )


def test_annealing_takes_the_tasks_own_reference_term():
    assert build_weighting("annealing", task="potential").reference_term == "forces"
    assert build_weighting("annealing", task="pinn").reference_term == "pde"
    assert build_weighting("annealing", task="pinn", reference_term="bc").reference_term == "bc"
    with pytest.raises(ValueError, match="needs weighting.reference_term for task 'other'"):
        build_weighting("annealing", task="other")


def _their_code_estimate(terms, listed, weight):
    """Wang et al.'s code: max over listed matrices of max |grad L_res| over the mean over
    the listed matrices of mean |grad (weight * L_bc)|."""
    grad_res = torch.autograd.grad(terms["pde"], listed, retain_graph=True)
    grad_bcs = torch.autograd.grad(weight * terms["bc"], listed, retain_graph=True)
    max_res = torch.stack([g.abs().max() for g in grad_res]).max()
    mean_bcs = torch.stack([g.abs().mean() for g in grad_bcs]).mean()
    return float(max_res / mean_bcs)


@pytest.mark.parametrize("network", ["mlp", "modified_mlp"])
def test_code_form_is_the_authors_rule_over_the_matrices_their_code_lists(network):
    from dcnn.models.mlp import MLP, ModifiedMLP

    torch.manual_seed(0)
    model = MLP(1, 1, hidden=8, depth=3) if network == "mlp" else ModifiedMLP(1, 1, hidden=8)
    listed = (
        [layer.weight for layer in model.layers]
        if network == "mlp"
        else [layer.weight for layer in (*model.gates, model.output)]  # no encoders
    )
    strategy = LearningRateAnnealing(every=1, form="code")
    terms = _terms(model)
    expected = 0.9 * 1.0 + 0.1 * _their_code_estimate(terms, listed, weight=1.0)
    _, used = strategy.combine(terms, {"pde": 1.0, "bc": 1.0}, model, step=0)
    assert used["bc"] == pytest.approx(expected, rel=1e-6)
    # One mean over all entries (the old rule) gives another number.
    grads = torch.autograd.grad(terms["bc"], listed, retain_graph=True)
    pooled = torch.cat([g.reshape(-1) for g in grads]).abs().mean()
    per_layer = torch.stack([g.abs().mean() for g in grads]).mean()
    assert float(pooled) != pytest.approx(float(per_layer), rel=1e-3)
