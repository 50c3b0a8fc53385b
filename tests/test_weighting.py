"""Loss weighting: fixed weights, learning-rate annealing (Wang, Teng & Perdikaris) and
ReLoBRaLo (Bischof & Kraus)."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from dcnn.tasks.weighting import FixedWeights, LearningRateAnnealing, ReLoBRaLo, build_weighting


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


@pytest.mark.parametrize("name", ["fixed", "annealing", "relobralo"])
def test_every_strategy_names_a_term_without_a_weight(name):
    strategy = build_weighting(name, task="pinn")
    model = nn.Linear(1, 1)
    x = torch.ones(4, 1)
    terms = {"pde": model(x).square().mean(), "ic": model(x).mean().abs()}
    with pytest.raises(KeyError, match=r"no weight given for loss term\(s\) \['ic'\]"):
        strategy.combine(terms, {"pde": 1.0}, model, step=0)


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
    with pytest.raises(ValueError, match="unknown weighting .*'annealing' or 'relobralo'"):
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


# ---------------------------------------------------------------------------------------------
# ReLoBRaLo


def _softmax_balance(current, reference, temperature):
    """m softmax_i(L_i(t) / (T L_i(t'))), by hand; 1e-12 is the authors' guard in T L_i(t')."""
    exps = [
        math.exp(c / (temperature * r + 1e-12)) for c, r in zip(current, reference, strict=True)
    ]
    return [len(current) * e / sum(exps) for e in exps]


def _relobralo_by_hand(losses, alpha, temperature, rho):
    """lambda(t) for every step of ``losses`` (a list of per-step loss lists), rho fixed."""
    lambdas = [[1.0] * len(losses[0])]
    for t in range(1, len(losses)):
        to_first = _softmax_balance(losses[t], losses[0], temperature)
        to_previous = _softmax_balance(losses[t], losses[t - 1], temperature)
        lambdas.append(
            [
                alpha * (rho * previous + (1 - rho) * first) + (1 - alpha) * recent
                for previous, first, recent in zip(lambdas[-1], to_first, to_previous, strict=True)
            ]
        )
    return lambdas


LOSSES = [[1.0, 2.0], [0.5, 1.8], [0.4, 1.0], [0.1, 0.9], [0.09, 0.2]]


def _feed(strategy, losses, weights, model=None, start=0):
    model = nn.Linear(1, 1) if model is None else model
    results = []
    for offset, values in enumerate(losses):
        terms = {
            name: torch.tensor(v, dtype=torch.float64)
            for name, v in zip(weights, values, strict=True)
        }
        total, used = strategy.combine(terms, weights, model, step=start + offset)
        results.append((float(total), used))
    return results


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_relobralo_matches_the_formula_by_hand(rho):
    """E[rho] = 1 always keeps the history, E[rho] = 0 always looks back to L(0)."""
    strategy = ReLoBRaLo(alpha=0.7, temperature=0.5, expected_rho=rho)
    weights = {"pde": 1.0, "bc": 2.0}  # configured base weights stay a factor on top
    results = _feed(strategy, LOSSES, weights)
    expected = _relobralo_by_hand(LOSSES, alpha=0.7, temperature=0.5, rho=rho)
    for (total, used), lambdas, values in zip(results, expected, LOSSES, strict=True):
        assert used["pde"] == pytest.approx(1.0 * lambdas[0], rel=1e-12)
        assert used["bc"] == pytest.approx(2.0 * lambdas[1], rel=1e-12)
        hand_total = used["pde"] * values[0] + used["bc"] * values[1]
        assert total == pytest.approx(hand_total, rel=1e-12)
    assert results[0][1] == weights  # lambda(0) = 1
    # The two branches differ: the lookback to L(0) is a different rule.
    other = _relobralo_by_hand(LOSSES, alpha=0.7, temperature=0.5, rho=1.0 - rho)
    assert expected[-1][0] != pytest.approx(other[-1][0], rel=1e-3)


def test_relobralo_weights_sum_to_the_number_of_terms():
    generator = torch.Generator().manual_seed(1)
    losses = (torch.rand(30, 3, generator=generator, dtype=torch.float64) + 0.05).tolist()
    strategy = ReLoBRaLo(alpha=0.9, temperature=0.2, expected_rho=0.5, seed=3)
    names = {"pde": 1.0, "ic": 1.0, "bc": 1.0}
    sums = [sum(used.values()) for _, used in _feed(strategy, losses, names)]
    assert sums == pytest.approx([3.0] * 30, rel=1e-12)
    assert len({round(used["pde"], 12) for _, used in _feed(strategy, losses, names)}) > 1


def test_relobralo_gives_a_faster_falling_term_a_smaller_weight():
    """At the paper's defaults: the energy loss halves each step, the forces lose 5 %."""
    strategy = build_weighting("relobralo", task="potential")
    losses = [[0.5**t, 0.95**t] for t in range(8)]
    results = _feed(strategy, losses, {"energy": 1.0, "forces": 1.0})
    for _, used in results[1:]:
        assert used["energy"] < 1.0 < used["forces"]
    assert results[-1][1]["energy"] < results[2][1]["energy"]  # keeps falling


def test_relobralo_loss_values_are_detached():
    model = nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 8).unsqueeze(1)
    strategy = ReLoBRaLo(alpha=0.5, temperature=1.0, expected_rho=0.5)
    for step in range(3):
        out = model(x)
        terms = {"pde": out.square().mean(), "bc": (out - 1).square().mean()}
        total, used = strategy.combine(terms, {"pde": 1.0, "bc": 1.0}, model, step)
        # The gradient is that of sum_i w_i L_i with the weights as constants.
        grads = torch.autograd.grad(total, list(model.parameters()), retain_graph=True)
        expected = torch.autograd.grad(
            used["pde"] * terms["pde"] + used["bc"] * terms["bc"], list(model.parameters())
        )
        for g, e in zip(grads, expected, strict=True):
            torch.testing.assert_close(g, e)


def test_relobralo_updates_once_per_training_step_only():
    model = nn.Linear(1, 1)
    strategy = ReLoBRaLo(alpha=0.5, temperature=1.0, expected_rho=1.0)
    weights = {"pde": 1.0, "bc": 1.0}
    _feed(strategy, LOSSES[:3], weights, model)
    before = strategy.state_dict()
    # A repeated step (gradient accumulation) and an evaluation call change nothing.
    _, repeated = strategy.combine(
        {"pde": torch.tensor(9.0), "bc": torch.tensor(0.01)}, weights, model, step=2
    )
    model.eval()
    _, evaluated = strategy.combine(
        {"pde": torch.tensor(9.0), "bc": torch.tensor(0.01)}, weights, model, step=3
    )
    assert repeated == evaluated == dict(zip(weights, before["lambdas"], strict=True))
    assert strategy.state_dict()["previous"] == before["previous"]
    with pytest.raises(KeyError, match="must not change during a run"):
        strategy.combine({"pde": torch.tensor(1.0)}, weights, model, step=4)
    with pytest.raises(KeyError, match="no weight given for loss term"):
        strategy.combine(
            {"pde": torch.tensor(1.0), "bc": torch.tensor(1.0)}, {"pde": 1.0}, model, 5
        )


def test_relobralo_resumes_exactly_from_its_state_dict():
    generator = torch.Generator().manual_seed(4)
    losses = (torch.rand(40, 2, generator=generator, dtype=torch.float64) + 0.1).tolist()
    weights = {"pde": 1.0, "bc": 3.0}
    options = {"alpha": 0.8, "temperature": 0.3, "expected_rho": 0.5}
    uninterrupted = _feed(ReLoBRaLo(**options, seed=7), losses, weights)

    first = ReLoBRaLo(**options, seed=7)
    _feed(first, losses[:20], weights)
    buffer = io.BytesIO()
    torch.save(copy.deepcopy(first.state_dict()), buffer)  # as a checkpoint carries it
    buffer.seek(0)
    resumed = ReLoBRaLo(**options, seed=12345)  # the generator state comes from the checkpoint
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    continued = _feed(resumed, losses[20:], weights, start=20)
    assert [used for _, used in continued] == [used for _, used in uninterrupted[20:]]
    # Without the generator state the draws of rho, and so the weights, would differ.
    fresh = ReLoBRaLo(**options, seed=12345)
    fresh_state = first.state_dict()
    fresh_state["generator"] = fresh.generator.get_state()
    fresh.load_state_dict(fresh_state)
    diverging = _feed(fresh, losses[20:], weights, start=20)
    assert [used for _, used in diverging] != [used for _, used in uninterrupted[20:]]


def test_relobralo_leaves_the_global_random_streams_alone():
    model = nn.Linear(1, 1)  # its initialisation draws from the global stream
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    strategy = ReLoBRaLo(expected_rho=0.5)
    _feed(strategy, [[1.0 / (t + 1), 1.0] for t in range(20)], {"pde": 1.0, "bc": 1.0}, model)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]
    # Same seed, same draws; another seed, other draws (the generator is really used).
    draws = {}
    for seed in (0, 0, 1):
        strategy = ReLoBRaLo(alpha=0.5, temperature=1.0, expected_rho=0.5, seed=seed)
        used = _feed(strategy, [[1.0 / (t + 1), 1.0] for t in range(20)], {"a": 1.0, "b": 1.0})
        draws.setdefault(seed, []).append([u["a"] for _, u in used])
    assert draws[0][0] == draws[0][1] != draws[1][0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 1.5}, r"weighting.alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": "high"}, r"weighting.alpha must be a number in \[0, 1\], got 'high'"),
        ({"temperature": 0}, r"weighting.temperature must be > 0, got 0"),
        ({"temperature": float("inf")}, r"weighting.temperature must be > 0, got inf"),
        ({"expected_rho": -0.1}, r"weighting.expected_rho must be in \[0, 1\], got -0.1"),
        ({"expected_rho": True}, r"weighting.expected_rho must be a number"),
        ({"seed": 1.5}, r"weighting.seed must be an integer, got 1.5"),
    ],
)
def test_relobralo_rejects_bad_hyperparameters(options, message):
    with pytest.raises(ValueError, match=message):
        build_weighting("relobralo", task="pinn", **options)


def _ddp_worker(rank: int, world: int, folder: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world
    )
    strategy = ReLoBRaLo(alpha=0.6, temperature=0.5, expected_rho=0.5, seed=11)
    local = [[(1 + rank) * v for v in values] for values in LOSSES * 3]  # ranks see other losses
    used = [u for _, u in _feed(strategy, local, {"pde": 1.0, "bc": 1.0})]
    torch.save(used, f"{folder}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_relobralo_agrees_over_ddp_processes(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0] == ranks[1]
    # The same as one process seeing the mean loss values.
    mean = [[1.5 * v for v in values] for values in LOSSES * 3]
    single = ReLoBRaLo(alpha=0.6, temperature=0.5, expected_rho=0.5, seed=11)
    expected = [u for _, u in _feed(single, mean, {"pde": 1.0, "bc": 1.0})]
    for got, want in zip(ranks[0], expected, strict=True):
        assert got == pytest.approx(want, rel=1e-12)


def _logged_weights(run_dir) -> dict[str, list[float]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    names = [key.removeprefix("weight/") for key in rows[0] if key.startswith("weight/")]
    return {
        name: [float(row[f"weight/{name}"]) for row in rows if row.get(f"weight/{name}")]
        for name in names
    }


def _pinn_config(root, *extra: str):
    from helpers import compose_train

    return compose_train(
        [
            "experiment=pinn_advection",
            f"pde_data_root={root}",
            "dataset.n_domain=100",
            "dataset.n_boundary=50",
            "dataset.n_initial=100",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            "logger=csv",
            "dataset.steps_per_epoch=4",
            "weighting=relobralo",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def advection_root(tmp_path_factory):
    from dcnn.data.generate import generate_advection

    root = tmp_path_factory.mktemp("pdebench")
    generate_advection(
        root / "1D_Advection_Sols_beta0.1.hdf5", n_samples=10, nx=32, nt=21, progress=False
    )
    return root


def test_relobralo_trains_a_pinn_end_to_end(tmp_path, advection_root):
    from dcnn.train import run

    cfg = _pinn_config(advection_root, "trainer.max_steps=8")
    assert cfg.weighting.seed == cfg.seed
    run(cfg, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    logged = _logged_weights(tmp_path)
    assert set(logged) == {"pde", "ic", "bc"}
    for name, values in logged.items():
        assert len(values) == 8 and values[0] == 1.0, name  # lambda(0) = 1 times loss weight 1
        assert len(set(values)) > 1, name  # then adapted
    for step in range(8):
        assert sum(values[step] for values in logged.values()) == pytest.approx(3.0, rel=1e-6)


def test_relobralo_resumes_a_pinn_run_from_its_checkpoint(tmp_path, advection_root):
    """Weights after a resume from the checkpoint at step 4 are those of the uninterrupted run
    (alpha and E[rho] at 0.5, so that history and draws of rho show in every weight)."""
    from dcnn.train import run

    fast = ("weighting.alpha=0.5", "weighting.expected_rho=0.5")
    run(_pinn_config(advection_root, "trainer.max_steps=8", *fast), tmp_path / "whole")
    run(_pinn_config(advection_root, "trainer.max_steps=4", *fast), tmp_path / "first")
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = _pinn_config(advection_root, "trainer.max_steps=8", *fast, f"ckpt_path={checkpoint}")
    run(resumed, tmp_path / "second")
    whole, first, second = (
        _logged_weights(tmp_path / name) for name in ("whole", "first", "second")
    )
    for name in ("pde", "ic", "bc"):
        assert first[name] == pytest.approx(whole[name][:4], rel=1e-6), name
        assert second[name] == pytest.approx(whole[name][4:], rel=1e-6), name
        assert max(abs(w - 1) for w in whole[name][4:]) > 1e-3, name  # they did move


def test_relobralo_trains_a_potential_end_to_end(tmp_path, data_root, monkeypatch):
    from helpers import TINY, compose_train

    from dcnn.train import run

    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    cfg = compose_train([*TINY, "trainer.max_epochs=1", "logger=csv", "weighting=relobralo"])
    assert run(cfg, tmp_path)["status"] == "ok"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    logged = _logged_weights(tmp_path)
    assert set(logged) == {"energy", "forces"}
    base = {"energy": cfg.loss.alpha, "forces": cfg.loss.beta}
    for name, values in logged.items():
        assert values[0] == pytest.approx(base[name]), name  # lambda(0) = 1 times loss weight
        assert len(set(values)) > 1, name
        assert all(v != pytest.approx(base[name], rel=1e-9) for v in values[1:]), name
