"""PINN problems: point sampling, loss terms and evaluation on synthetic PDEBench samples."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dcnn.data.pdebench import PdeSample
from dcnn.input_derivatives import taylor
from dcnn.input_derivatives.derivatives import Jet, input_jet
from dcnn.models.mlp import MLP
from dcnn.pde.problems import (
    AdvectionProblem,
    CfdProblem,
    DiffReactProblem,
    JetRequest,
    build_problem,
    grid_error_metrics,
)
from dcnn.pde.sampling import hammersley, scale_to_box

BETA = 0.5
GAMMA = 5.0 / 3.0
FLOW_SPEED, FLOW_PRESSURE = 0.7, 2.0
DU, DV, K = 1e-3, 5e-3, 5e-3


# ------------------------------------------------------------------------ analytic solutions
def advection_solution(points: Tensor) -> Tensor:
    xi = points[:, 0] - BETA * points[:, 1]
    return (torch.sin(2 * math.pi * xi) + 0.5 * torch.cos(4 * math.pi * xi) + 1.5)[:, None]


def euler_density_wave(points: Tensor) -> Tensor:
    """Exact Euler solution: a density wave carried by uniform velocity at uniform pressure."""
    x, t = points[:, 0], points[:, 1]
    density = 1.0 + 0.2 * torch.sin(math.pi * (x - FLOW_SPEED * t))
    return torch.stack(
        [density, torch.full_like(x, FLOW_SPEED), torch.full_like(x, FLOW_PRESSURE)], dim=1
    )


def zero_flux_fields(points: Tensor) -> Tensor:
    """Smooth (u, v) with zero normal derivative on the edges of [-1, 1]^2."""
    x, y, t = points[:, 0], points[:, 1], points[:, 2]
    u = torch.exp(-t) * torch.cos(math.pi * x) * torch.cos(math.pi * y)
    v = 0.5 + torch.exp(-2 * t) * torch.cos(2 * math.pi * x) * torch.cos(math.pi * y)
    return torch.stack([u, v], dim=1)


class AnalyticModel(nn.Module):
    """A "network" computing a closed-form field plus a constant offset, in float64."""

    def __init__(self, function: Callable[[Tensor], Tensor], offset: float = 0.0):
        super().__init__()
        self.function = function
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float64))

    def forward(self, points: Tensor) -> Tensor:
        return self.function(points.to(self.offset.dtype)) + self.offset


def cell_centres(low: float, high: float, n: int) -> np.ndarray:
    return low + (np.arange(n) + 0.5) * (high - low) / n


def synthetic_sample(pde: str, nx: int = 64, nt: int = 11, t_end: float = 1.0) -> PdeSample:
    """A PdeSample in the data contract's layout, filled with the analytic solution above."""
    t = np.linspace(0.0, t_end, nt)
    if pde == "advection":
        x = cell_centres(0.0, 1.0, nx)
        grids, domain = {"x": x, "t": t}, {"x": (0.0, 1.0)}
        function, channels, params = advection_solution, ("u",), {"beta": BETA}
    elif pde == "cfd":
        x = cell_centres(-1.0, 1.0, nx)
        grids, domain = {"x": x, "t": t}, {"x": (-1.0, 1.0)}
        function, channels = euler_density_wave, ("density", "Vx", "pressure")
        params = {"eta": 1e-8, "zeta": 1e-8, "gamma": GAMMA}
    else:
        x = y = cell_centres(-1.0, 1.0, nx)
        grids, domain = {"x": x, "y": y, "t": t}, {"x": (-1.0, 1.0), "y": (-1.0, 1.0)}
        function, channels, params = zero_flux_fields, ("u", "v"), {"Du": DU, "Dv": DV, "k": K}
    domain["t"] = (t[0], t[-1])
    # Field axes are (t, [y,] x); network inputs are (x, [y,] t).
    axes = [t, *([y] if pde == "diffreact" else []), x]
    mesh = np.meshgrid(*axes, indexing="ij")
    inputs = np.stack([*mesh[1:][::-1], mesh[0]], axis=-1).reshape(-1, len(axes))
    values = function(torch.from_numpy(inputs)).numpy()
    fields = values.reshape(*mesh[0].shape, len(channels))
    return PdeSample(
        pde=pde,
        grids=grids,
        fields=fields,
        channels=channels,
        params=params,
        domain=domain,
        source=f"synthetic-{pde}.h5",
        sample_index=0,
    )


EXACT_SOLUTIONS = {
    "advection": advection_solution,
    "cfd": euler_density_wave,
    "diffreact": zero_flux_fields,
}
PROBLEM_CLASSES = {"advection": AdvectionProblem, "cfd": CfdProblem, "diffreact": DiffReactProblem}
SMALL = {"n_domain": 64, "n_boundary": 32, "n_initial": 48}


def as_float64(points: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.double() for key, value in points.items()}


def small_problem(pde: str, **kwargs):
    nx = 16 if pde == "diffreact" else 64
    return build_problem(synthetic_sample(pde, nx=nx, nt=6), **{**SMALL, **kwargs})


# ------------------------------------------------------------------------------- sampling
def test_hammersley_matches_deepxde_sequence():
    # Radical inverses in bases 2 and 3 of i = 1..4, then i / (n + 1).
    expected = np.array(
        [[1 / 2, 1 / 3, 1 / 5], [1 / 4, 2 / 3, 2 / 5], [3 / 4, 1 / 9, 3 / 5], [1 / 8, 4 / 9, 4 / 5]]
    )
    np.testing.assert_allclose(hammersley(4, 3), expected, rtol=1e-15)
    np.testing.assert_allclose(hammersley(4, 1)[:, 0], [1 / 2, 1 / 4, 3 / 4, 1 / 8], rtol=1e-15)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_hammersley_is_deterministic_and_fills_the_unit_cube(dim):
    points = hammersley(1000, dim)
    assert points.shape == (1000, dim) and points.dtype == np.float64
    assert points.min() > 0.0 and points.max() < 1.0
    np.testing.assert_array_equal(points, hammersley(1000, dim))
    # Low discrepancy: every half-open cell of a 4^dim grid holds close to its share.
    counts = np.unique(np.floor(points * 4).astype(int), axis=0, return_counts=True)[1]
    assert len(counts) == 4**dim
    share = 1000 / 4**dim
    assert counts.min() >= 0.8 * share - 1 and counts.max() <= 1.2 * share + 1


def test_scale_to_box_maps_onto_bounds_and_rejects_bad_input():
    scaled = scale_to_box(hammersley(200, 2), [-1.0, 0.0], [1.0, 2.0])
    assert scaled[:, 0].min() >= -1.0 and scaled[:, 0].max() < 1.0
    assert scaled[:, 1].min() >= 0.0 and scaled[:, 1].max() < 2.0
    np.testing.assert_allclose(scale_to_box(np.array([[0.5, 0.25]]), [-1, 0], [1, 2]), [[0, 0.5]])
    with pytest.raises(ValueError, match="lows < highs"):
        scale_to_box(hammersley(5, 2), [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        scale_to_box(hammersley(5, 2), [0.0], [1.0])
    with pytest.raises(ValueError, match="positive integer"):
        hammersley(0, 2)


# ------------------------------------------------------------------------ training points
def test_advection_training_points_layout():
    sample = synthetic_sample("advection", nx=64, nt=11)
    problem = AdvectionProblem(sample, n_domain=100, n_boundary=30, n_initial=5000)
    points = problem.training_points()
    assert set(points) == {
        "domain",
        "initial",
        "initial_target",
        "boundary_left",
        "boundary_right",
    }
    assert all(
        value.dtype == torch.float32 and value.device.type == "cpu" for value in points.values()
    )
    domain = points["domain"]
    assert domain.shape == (100, 2)
    assert domain[:, 0].min() >= 0.0 and domain[:, 0].max() <= 1.0
    assert domain[:, 1].min() >= 0.0 and domain[:, 1].max() <= 1.0
    # The grid has fewer cells than n_initial: all of the t = 0 slice is used.
    np.testing.assert_allclose(points["initial"][:, 0], sample.grids["x"], rtol=1e-6)
    assert torch.all(points["initial"][:, 1] == 0.0)
    np.testing.assert_allclose(points["initial_target"].numpy(), sample.fields[0], rtol=1e-6)
    left, right = points["boundary_left"], points["boundary_right"]
    assert torch.all(left[:, 0] == 0.0) and torch.all(right[:, 0] == 1.0)
    assert torch.equal(left[:, 1], right[:, 1])
    assert left[:, 1].min() >= 0.0 and left[:, 1].max() <= 1.0 and left[:, 1].std() > 0.1


def test_initial_points_are_a_seeded_subsample_of_the_grid():
    sample = synthetic_sample("diffreact", nx=32, nt=4)
    problem = DiffReactProblem(sample, n_domain=50, n_boundary=40, n_initial=300, seed=3)
    points = problem.training_points()
    assert points["initial"].shape == (300, 3) and points["initial_target"].shape == (300, 2)
    assert len(torch.unique(points["initial"], dim=0)) == 300
    expected = zero_flux_fields(points["initial"].double()).float()
    torch.testing.assert_close(points["initial_target"], expected, rtol=1e-5, atol=1e-6)
    same_seed = DiffReactProblem(sample, n_domain=50, n_boundary=40, n_initial=300, seed=3)
    other_seed = DiffReactProblem(sample, n_domain=50, n_boundary=40, n_initial=300, seed=4)
    for key, value in points.items():
        assert torch.equal(value, same_seed.training_points()[key])
    assert not torch.equal(points["initial"], other_seed.training_points()["initial"])
    assert not torch.equal(points["boundary"], other_seed.training_points()["boundary"])
    assert torch.equal(points["domain"], other_seed.training_points()["domain"])  # Hammersley


def test_residual_on_all_points_follows_deepxdes_time_pde():
    """residual_points=all: 1,000 domain + 5,000 initial + 1,000 boundary residual points (as
    PDEBench's DeepXDE baseline), the other terms keep their sets, and the default is unchanged."""
    sample = synthetic_sample("advection", nx=64, nt=11)
    default = AdvectionProblem(sample, seed=2)
    problem = AdvectionProblem(sample, residual_points="all", seed=2)
    points, before = problem.training_points(), default.training_points()
    domain = points["domain"]
    assert domain.shape == (7000, 2)
    assert torch.equal(domain[:1000], before["domain"])  # the Hammersley points come first
    at_start, on_boundary = domain[1000:6000], domain[6000:]
    assert torch.all(at_start[:, 1] == 0.0) and at_start[:, 0].std() > 0.25  # uniform in x
    assert len(torch.unique(at_start[:, 0])) > 4900  # random positions, not the 64 grid cells
    assert torch.all((on_boundary[:, 0] == 0.0) | (on_boundary[:, 0] == 1.0))
    assert int((on_boundary[:, 0] == 0.0).sum()) == 500  # both ends, n_boundary in all
    for key in ("initial", "initial_target", "boundary_left", "boundary_right"):
        assert torch.equal(points[key], before[key])
    torch.manual_seed(0)
    model = MLP(2, 1, hidden=8, depth=2).double()
    terms = problem.loss_terms(model, as_float64(points))
    expected = default.loss_terms(model, {**as_float64(before), "domain": domain.double()})
    for name in problem.term_names:
        torch.testing.assert_close(terms[name], expected[name])
    with pytest.raises(ValueError, match="residual_points must be one of domain, all"):
        AdvectionProblem(sample, residual_points="everywhere")


def test_pdebench_diffreact_fits_the_whole_initial_grid_and_30_percent_of_the_data():
    sample = synthetic_sample("diffreact", nx=16, nt=6)
    problem = DiffReactProblem(
        sample, n_initial=None, data_fraction=0.3, residual_points="all", n_boundary=40
    )
    points = problem.training_points()
    assert points["initial"].shape == (16 * 16, 3)  # every cell of the t = 0 slice
    assert len(points["data"]) == round(0.3 * 6 * 16 * 16)
    assert points["domain"].shape == (1000 + 5000 + 40, 3)
    assert problem.term_names[-1] == "data"


def test_diffreact_boundary_points_lie_on_edges_with_outward_normals():
    problem = DiffReactProblem(synthetic_sample("diffreact", nx=8, nt=3), n_boundary=400)
    points = problem.training_points()
    boundary, normal = points["boundary"], points["boundary_normal"]
    assert boundary.shape == normal.shape == (400, 3)
    assert torch.all(normal[:, 2] == 0) and torch.all(normal.abs().sum(dim=1) == 1)
    # The point sits on the edge its normal points out of.
    on_edge = (boundary[:, :2] * normal[:, :2]).sum(dim=1)
    torch.testing.assert_close(on_edge, torch.ones(400))
    assert boundary[:, :2].abs().max() <= 1.0
    edge_counts = [int(((normal[:, :2] == e).all(dim=1)).sum()) for e in torch.eye(2)]
    assert min(edge_counts) > 50  # all four edges are covered (two shown here)


# ------------------------------------------------------------------------------ loss terms
@pytest.mark.parametrize("pde", ["advection", "cfd", "diffreact"])
def test_exact_solution_gives_zero_losses(pde):
    problem = small_problem(pde)
    model = AnalyticModel(EXACT_SOLUTIONS[pde])
    terms = problem.loss_terms(model, as_float64(problem.training_points()), "autograd")
    assert tuple(terms) == problem.term_names
    for name, value in terms.items():
        if pde == "diffreact" and name == "pde":
            continue  # the zero-flux fields are not a diffusion-reaction solution
        assert value.item() < 1e-12, name  # float32 point coordinates


@pytest.mark.parametrize("pde", ["advection", "cfd", "diffreact"])
def test_loss_terms_are_finite_scalars_differentiable_in_parameters(pde):
    problem = small_problem(pde)
    torch.manual_seed(0)
    model = MLP(problem.n_inputs, problem.n_outputs, hidden=16, depth=2)
    terms = problem.loss_terms(model, problem.training_points())
    assert tuple(terms) == problem.term_names
    parameters = list(model.parameters())
    for name, value in terms.items():
        assert value.shape == () and torch.isfinite(value), name
        gradients = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in gradients), name


def test_loss_terms_agree_between_derivative_methods():
    problem = small_problem("diffreact", data_fraction=0.01)
    torch.manual_seed(1)
    model = MLP(3, 2, hidden=16, depth=2)
    points = problem.training_points()
    by_autograd = problem.loss_terms(model, points, derivative_method="autograd")
    by_taylor = problem.loss_terms(model, points, derivative_method="taylor")
    for name in problem.term_names:
        torch.testing.assert_close(by_taylor[name], by_autograd[name], rtol=1e-4, atol=1e-7)


def one_jet_over_all_rows(problem, model: nn.Module, points: dict[str, Tensor], method: str):
    """Loss terms computed as before per-set derivative needs: one jet over every input row."""
    keys = ["domain", "initial", *problem.boundary_input_keys]
    keys += ["data"] if problem.data_fraction > 0 else []
    second_order = (0, 1) if problem.name == "diffreact" else ()
    inputs = [points[key] for key in keys]
    jet = input_jet(model, torch.cat(inputs), second_order, method=method)
    jets, start = {}, 0
    for key, rows in zip(keys, inputs, strict=True):
        part = slice(start, start + len(rows))
        jets[key] = Jet(jet.value[part], jet.d1[part], jet.d2[part], jet.second_order)
        start += len(rows)
    outputs = {key: piece.value for key, piece in jets.items()}
    return problem._terms(outputs, jets, points)


# Train-mode BatchNorm has no Taylor path ("auto" means autograd there).
NEED_CASES = [
    (None, "autograd"),
    (None, "taylor"),
    ("batchnorm-train", "autograd"),
    ("batchnorm-eval", "autograd"),
    ("batchnorm-eval", "taylor"),
]


@pytest.mark.parametrize("pde", ["advection", "cfd", "diffreact"])
@pytest.mark.parametrize(("normalization", "method"), NEED_CASES)
def test_loss_terms_by_derivative_need_equal_one_jet_over_all_rows(pde, normalization, method):
    problem = small_problem(pde, data_fraction=0.01, n_domain=32, n_boundary=16, n_initial=24)
    points = as_float64(problem.training_points())
    torch.manual_seed(3)
    model = MLP(
        problem.n_inputs,
        problem.n_outputs,
        hidden=8,
        depth=2,
        normalization=normalization and "batchnorm",
    ).double()
    if normalization == "batchnorm-eval":
        with torch.no_grad():  # non-trivial running statistics to fold
            for norm in model.norms:
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
        model.eval()
    reference = one_jet_over_all_rows(problem, model, points, method)
    terms = problem.loss_terms(model, points, method)
    assert tuple(terms) == problem.term_names
    for name in problem.term_names:
        torch.testing.assert_close(terms[name], reference[name], rtol=1e-12, atol=1e-15)
    # The training gradients agree as well (one backward pass of the total, as in training).
    parameters = list(model.parameters())
    expected, actual = (
        torch.autograd.grad(sum(loss.values()), parameters) for loss in (reference, terms)
    )
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def test_train_mode_batchnorm_runs_one_batch_over_all_point_sets():
    # Batch statistics couple the rows: the same rows split into sets would give other outputs.
    problem = small_problem("advection")
    points = as_float64(problem.training_points())
    torch.manual_seed(4)
    model = MLP(2, 1, hidden=8, depth=2, normalization="batchnorm").double()
    batches = []
    model.layers[0].register_forward_hook(lambda _module, args, _out: batches.append(len(args[0])))
    problem.loss_terms(model, points, "autograd")
    assert batches == [sum(len(points[key]) for key in problem._needs())]
    batches.clear()
    model.eval()
    problem.loss_terms(model, points, "autograd")
    value_rows = sum(len(points[key]) for key in ("initial", "boundary_left", "boundary_right"))
    assert sorted(batches) == sorted([len(points["domain"]), value_rows])


def test_misdeclared_jet_request_is_rejected():
    class Misdeclared(AdvectionProblem):
        def jet_requests(self):
            return {"domain": "second"}

    problem = Misdeclared(synthetic_sample("advection"), **SMALL)
    with pytest.raises(
        ValueError, match=r"Misdeclared.jet_requests\(\)\['domain'\] must be a JetRequest"
    ):
        problem.loss_terms(MLP(2, 1, hidden=4, depth=1), problem.training_points())
    with pytest.raises(ValueError, match="second_order must hold integers"):
        JetRequest(second_order=("x",))
    with pytest.raises(ValueError, match="tuple of tuples of floats"):
        JetRequest(directions=((1, 0),))


@pytest.mark.parametrize(("pde", "fused_calls"), [("advection", 1), ("cfd", 1), ("diffreact", 2)])
def test_taylor_runs_value_only_sets_in_the_fused_jet_call(pde, fused_calls, monkeypatch):
    problem = small_problem(pde)
    points = problem.training_points()
    model = MLP(problem.n_inputs, problem.n_outputs, hidden=8, depth=2)
    calls = []
    original = taylor.mlp_fused
    monkeypatch.setattr(
        taylor,
        "mlp_fused",
        lambda model, rows, *rest: calls.append(rows.shape[0]) or original(model, rows, *rest),
    )
    forward_calls = []
    model.register_forward_hook(lambda *_: forward_calls.append(1))
    problem.loss_terms(model, points, "taylor")
    assert forward_calls == []  # no separate forward pass for the value-only sets
    assert len(calls) == fused_calls
    assert sum(calls) == sum(len(points[key]) for key in problem._needs())


def test_diffreact_loss_gradient_matches_finite_differences():
    # Third-order information flows here: parameters -> second input derivatives -> loss.
    problem = small_problem("diffreact", n_domain=6, n_boundary=5, n_initial=5, data_fraction=0.01)
    torch.manual_seed(2)
    model = MLP(3, 2, hidden=6, depth=2).double()
    points = as_float64(problem.training_points())
    names = [name for name, _ in model.named_parameters()]
    originals = tuple(p.detach().clone() for p in model.parameters())

    def total_loss(*parameters):
        state = dict(zip(names, parameters, strict=True))
        functional = _Functional(model, state)
        return sum(problem.loss_terms(functional, points, "autograd").values())

    inputs = tuple(p.requires_grad_(True) for p in originals)
    assert torch.autograd.gradcheck(
        total_loss, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True
    )


class _Functional(nn.Module):
    """Runs `model` with the given parameter tensors (so gradcheck can perturb them)."""

    def __init__(self, model: nn.Module, state: dict[str, Tensor]):
        super().__init__()
        self.model, self.state = model, state

    def forward(self, points: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, self.state, (points,))


def test_advection_terms_of_a_linear_field():
    # u = x: residual beta everywhere, ends differ by exactly 1.
    problem = small_problem("advection")
    points = as_float64(problem.training_points())
    terms = problem.loss_terms(AnalyticModel(lambda p: p[:, :1]), points, "autograd")
    torch.testing.assert_close(terms["pde"], torch.tensor(BETA**2, dtype=torch.float64))
    torch.testing.assert_close(terms["bc"], torch.tensor(1.0, dtype=torch.float64))
    initial_error = points["initial"][:, :1] - points["initial_target"]
    torch.testing.assert_close(terms["ic"], initial_error.square().mean())


def test_cfd_periodic_terms_constrain_every_field():
    # Outputs (x, 2x, 3x) + const on [-1, 1]: end mismatches 2, 4 and 6.
    problem = small_problem("cfd")
    model = AnalyticModel(lambda p: p[:, :1] * torch.tensor([1.0, 2.0, 3.0]) + 5.0)
    terms = problem.loss_terms(model, as_float64(problem.training_points()), "autograd")
    for name, expected in [("bc_density", 4.0), ("bc_velocity", 16.0), ("bc_pressure", 36.0)]:
        torch.testing.assert_close(terms[name].item(), expected)


def test_cfd_pde_term_sums_the_three_conservation_laws():
    # rho = 1, v = 0, p = 1 + x: only momentum has a residual (p_x = 1).
    problem = small_problem("cfd")
    model = AnalyticModel(lambda p: torch.stack([p[:, 0] * 0 + 1, p[:, 0] * 0, 1 + p[:, 0]], 1))
    terms = problem.loss_terms(model, as_float64(problem.training_points()), "autograd")
    torch.testing.assert_close(terms["pde"].item(), 1.0)
    # v = 0.5 also moves energy: residual gamma / (gamma - 1) * v * p_x; momentum stays p_x.
    model = AnalyticModel(
        lambda p: torch.stack([p[:, 0] * 0 + 1, p[:, 0] * 0 + 0.5, 1 + p[:, 0]], 1)
    )
    terms = problem.loss_terms(model, as_float64(problem.training_points()), "autograd")
    torch.testing.assert_close(terms["pde"].item(), 1.0 + (GAMMA / (GAMMA - 1) * 0.5) ** 2)


def test_diffreact_bc_is_the_normal_derivative():
    # u = x^2 / 2, v = y^2 / 2: |du/dn| = 1 on the x edges, 0 on the y edges; v the other way round.
    problem = small_problem("diffreact", n_boundary=200)
    model = AnalyticModel(lambda p: 0.5 * p[:, :2] ** 2)
    terms = problem.loss_terms(model, as_float64(problem.training_points()), "autograd")
    torch.testing.assert_close(terms["bc"].item(), 1.0)


def test_data_term_uses_a_fraction_of_the_solution_values():
    sample = synthetic_sample("diffreact", nx=16, nt=6)
    problem = DiffReactProblem(sample, **SMALL, data_fraction=0.05)
    assert problem.term_names == ("pde", "bc", "ic_u", "ic_v", "data")
    points = problem.training_points()
    n_values = 6 * 16 * 16
    assert points["data"].shape == (round(0.05 * n_values), 3)
    assert points["data"][:, 2].max() > 0.5  # not only the initial slice
    expected = zero_flux_fields(points["data"].double()).float()
    torch.testing.assert_close(points["data_target"], expected, rtol=1e-5, atol=1e-6)
    exact = problem.loss_terms(AnalyticModel(zero_flux_fields), as_float64(points), "autograd")
    assert exact["data"].item() < 1e-12
    shifted = problem.loss_terms(
        AnalyticModel(zero_flux_fields, offset=0.1), as_float64(points), "autograd"
    )
    torch.testing.assert_close(shifted["data"].item(), 2 * 0.1**2)  # sum over u and v


# ------------------------------------------------------------------------------ evaluation
@pytest.mark.parametrize("pde", ["advection", "cfd", "diffreact"])
def test_evaluate_exact_solution_has_zero_errors(pde):
    problem = small_problem(pde)
    model = AnalyticModel(EXACT_SOLUTIONS[pde])
    metrics = problem.evaluate(model, last_steps=4)
    for name, value in metrics.items():
        if name.startswith("nrmse") or name in ("mse", "rmse", "max_error", "boundary_rmse"):
            assert value < 1e-12, name
        elif name.startswith(("rmse_", "fourier")) and not math.isnan(value):
            assert value < 1e-12, name


@pytest.mark.parametrize("pde", ["advection", "cfd", "diffreact"])
def test_evaluate_constant_offset(pde):
    offset = 0.3
    sample = synthetic_sample(pde, nx=32, nt=11)
    problem = build_problem(sample, **SMALL)
    model = AnalyticModel(EXACT_SOLUTIONS[pde], offset=offset)
    model.train()
    metrics = problem.evaluate(model, last_steps=5, batch_size=100)
    assert model.training  # mode restored
    target = sample.fields[-5:]
    spatial = tuple(range(1, target.ndim - 1))
    target_rms = np.sqrt(np.mean(target**2, axis=spatial))  # (steps, channels)
    assert metrics["mse"] == pytest.approx(offset**2)
    assert metrics["rmse"] == pytest.approx(offset)
    assert metrics["nrmse"] == pytest.approx(np.mean(offset / target_rms))
    assert metrics["max_error"] == pytest.approx(offset)
    assert metrics["boundary_rmse"] == pytest.approx(offset)
    # A constant error is all in wavenumber 0: a quarter of the low band (wavenumbers 0..3).
    assert metrics["fourier_low"] == pytest.approx(offset / 4)
    assert metrics["fourier_mid"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["fourier_high"] == pytest.approx(0.0, abs=1e-12)
    if pde == "advection":
        assert not any(name.startswith("rmse_") for name in metrics)
    for channel, name in enumerate(sample.channels if pde != "advection" else ()):
        assert metrics[f"rmse_{name}"] == pytest.approx(offset)
        assert metrics[f"nrmse_{name}"] == pytest.approx(np.mean(offset / target_rms[:, channel]))


def test_evaluate_covers_exactly_the_last_steps():
    # An error that exists only before the last two saved steps must not be seen.
    sample = synthetic_sample("advection", nx=32, nt=11, t_end=1.0)
    problem = AdvectionProblem(sample, **SMALL)
    last_time = sample.grids["t"][-2]
    model = AnalyticModel(lambda p: advection_solution(p) + (p[:, 1:] < last_time - 1e-6) * 1.0)
    assert problem.evaluate(model, last_steps=2)["max_error"] < 1e-12
    assert problem.evaluate(model, last_steps=3)["max_error"] == pytest.approx(1.0)


def test_fourier_bands_of_single_modes():
    n_x, amplitude = 64, 0.8
    x = cell_centres(0.0, 1.0, n_x)
    target = np.ones((3, n_x, 1))
    for wavenumber, band in [(2, "fourier_low"), (6, "fourier_mid"), (20, "fourier_high")]:
        error = amplitude * np.sin(2 * np.pi * wavenumber * x + 0.3)[None, :, None]
        metrics = grid_error_metrics(target + error, target)
        band_size = {"fourier_low": 4, "fourier_mid": 8, "fourier_high": n_x // 2 + 1 - 12}[band]
        for name in ("fourier_low", "fourier_mid", "fourier_high"):
            expected = amplitude / 2 / band_size if name == band else 0.0
            assert metrics[name] == pytest.approx(expected, abs=1e-12), (wavenumber, name)
    # 2D: a mode along y with radial wavenumber 5 lands in the middle band.
    y = cell_centres(-1.0, 1.0, 32)
    target = np.ones((2, 32, 32, 2))
    error = np.broadcast_to(
        (amplitude * np.cos(2 * np.pi * 5 * y / 2))[None, :, None, None], target.shape
    )
    metrics = grid_error_metrics(target + error, target, ("u", "v"))
    assert metrics["fourier_mid"] == pytest.approx(amplitude / 2 / 8)
    assert metrics["fourier_low"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["fourier_high"] == pytest.approx(0.0, abs=1e-12)


def test_boundary_rmse_sees_only_boundary_cells():
    target = np.ones((2, 10, 12, 1))
    interior = target.copy()
    interior[:, 1:-1, 1:-1] += 0.5
    metrics = grid_error_metrics(interior, target)
    assert metrics["boundary_rmse"] == 0.0 and metrics["max_error"] == pytest.approx(0.5)
    one_end = np.ones((3, 16, 1))
    shifted = one_end.copy()
    shifted[:, 0] += 0.4
    assert grid_error_metrics(shifted, one_end)["boundary_rmse"] == pytest.approx(
        0.4 / math.sqrt(2)
    )


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_clear_errors():
    sample = synthetic_sample("advection", nx=16, nt=4)
    with pytest.raises(ValueError, match="'heat'.*known PDE problems"):
        build_problem(PdeSample(**{**vars(sample), "pde": "heat"}))
    with pytest.raises(ValueError, match="CfdProblem needs 'cfd'"):
        CfdProblem(sample)
    with pytest.raises(ValueError, match="parameter 'beta'"):
        AdvectionProblem(PdeSample(**{**vars(sample), "params": {}}))
    with pytest.raises(ValueError, match=r"grid 'x' must have shape \(16,\)"):
        AdvectionProblem(
            PdeSample(**{**vars(sample), "grids": {"x": np.zeros(3), "t": np.zeros(4)}})
        )
    with pytest.raises(ValueError, match="data_fraction must lie in"):
        AdvectionProblem(sample, data_fraction=1.5)
    with pytest.raises(ValueError, match="n_domain must be an integer"):
        AdvectionProblem(sample, n_domain=0)
    problem = AdvectionProblem(sample, **SMALL)
    with pytest.raises(ValueError, match="last_steps=20 exceeds the 4 time steps"):
        problem.evaluate(AnalyticModel(advection_solution))
    points = problem.training_points()
    del points["boundary_right"]
    with pytest.raises(KeyError, match="boundary_right"):
        problem.loss_terms(AnalyticModel(advection_solution), points)


def test_cfd_warns_when_viscosity_is_not_negligible():
    sample = synthetic_sample("cfd", nx=16, nt=4)
    viscous = PdeSample(**{**vars(sample), "params": {**sample.params, "eta": 0.1}})
    with pytest.warns(UserWarning, match="inviscid Euler"):
        CfdProblem(viscous, **SMALL)


# ------------------------------------------------------------------------- generated files
def test_problems_build_from_tiny_generated_files(tmp_path):
    generate = pytest.importorskip("dcnn.data.generate")
    from dcnn.data.pdebench import read_pdebench_sample

    files = {
        "advection": generate.generate_advection(
            tmp_path / "advection.hdf5", n_samples=2, nx=32, nt=6, t_final=0.5, progress=False
        ),
        "cfd": generate.generate_cfd(
            tmp_path / "cfd.hdf5", n_samples=2, nx=32, nt=4, t_final=0.05, progress=False
        ),
        "diffreact": generate.generate_diffreact(
            tmp_path / "diffreact.h5", n_samples=2, nx=16, nt=4, t_final=0.1, progress=False
        ),
    }
    for pde, path in files.items():
        sample = read_pdebench_sample(path, pde, sample_index=-1)
        problem = build_problem(sample, **SMALL)
        assert isinstance(problem, PROBLEM_CLASSES[pde])
        torch.manual_seed(0)
        model = MLP(problem.n_inputs, problem.n_outputs, hidden=8, depth=2)
        terms = problem.loss_terms(model, problem.training_points())
        assert tuple(terms) == problem.term_names
        assert all(torch.isfinite(value) for value in terms.values())
        # Initial targets are cells of the file's t = 0 slice (all of them in 1D, a subset in 2D).
        initial_targets = problem.training_points()["initial_target"].double()
        first_slice = torch.from_numpy(sample.fields[0].reshape(-1, problem.n_outputs))
        nearest = torch.cdist(initial_targets, first_slice).min(dim=1).values
        assert nearest.max() < 1e-5
        assert len(initial_targets) == min(len(first_slice), SMALL["n_initial"])
        metrics = problem.evaluate(model, last_steps=2)
        assert all(math.isfinite(metrics[name]) for name in ("mse", "rmse", "nrmse", "max_error"))
