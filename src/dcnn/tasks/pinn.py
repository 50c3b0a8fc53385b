"""Physics-informed training on a PDE problem: residual, initial and boundary terms."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig
from torch import Tensor, nn

from dcnn.tasks.common import DerivativeTask, enable_grad_for_eval

# Terms that the PDE residual weight alpha applies to; every other term (ic, bc, data) gets beta.
RESIDUAL_TERMS = ("pde",)


class PinnTask(DerivativeTask):
    """PINN training of ``model`` on ``problem`` (a ``dcnn.pde.problems.PinnProblem``).

    Each step evaluates every loss term of the problem on the step's point sets (the fixed sets
    of a PDEBench problem, or the fresh minibatches of a box problem); the weighting
    strategy combines them (alpha for the PDE residual, beta for constraint terms). Testing logs
    the terms at the final parameters and the problem's metrics (rmse, nrmse, ... on a PDEBench
    grid; rel_l2 for box problems); ``evaluate_options`` go to ``problem.evaluate``.
    """

    def __init__(
        self,
        model: nn.Module,
        problem,
        alpha: float,
        beta: float,
        weighting,
        optimizer: Callable,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        derivative_method: str = "auto",
        evaluate_options: dict | None = None,
        divergence_ratio: float | None = 1e6,
        divergence_patience: int = 100,
    ) -> None:
        weights = {name: alpha if name in RESIDUAL_TERMS else beta for name in problem.term_names}
        super().__init__(
            weights,
            weighting,
            optimizer,
            scheduler,
            scheduler_interval,
            divergence_ratio,
            divergence_patience,
        )
        self.model = model
        self.problem = problem
        self.derivative_method = derivative_method
        self.evaluate_options = dict(evaluate_options or {})

    def _terms(self, points: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.problem.loss_terms(self.model, points, self.derivative_method)

    def training_step(self, points: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.combine_terms(self._terms(points), "train", batch_size=1)

    @enable_grad_for_eval
    def test_step(self, points: dict[str, Tensor], batch_idx: int) -> None:
        self.combine_terms(self._terms(points), "test", batch_size=1)

    def on_test_epoch_end(self) -> None:
        metrics = self.problem.evaluate(self.model, **self.evaluate_options)
        self.log_dict({f"test/{name}": value for name, value in metrics.items()}, batch_size=1)


def _pdebench_problem(cfg: DictConfig):
    """The problem of one PDEBench sample, its source file and what the run records of it."""
    from dcnn.data.pdebench import read_pdebench_sample
    from dcnn.data.readers import resolve_data_path
    from dcnn.pde.problems import build_problem

    data = cfg.dataset
    advice = (
        f"Make it with `dcnn-data {data.pde}` (PDEBench's layout; --full for PDEBench's sizes) "
        "or download it from https://github.com/pdebench/PDEBench, into the folder that "
        f"DCNN_PDE_DATA_ROOT (or pde_data_root=...) names; it is now {data.root}"
    )
    source = resolve_data_path(data.path, data.root, advice)
    sample = read_pdebench_sample(source, data.pde, sample_index=data.sample_index)
    problem = build_problem(
        sample,
        n_domain=data.n_domain,
        n_boundary=data.n_boundary,
        n_initial=None if data.n_initial == "all" else data.n_initial,
        data_fraction=data.data_fraction,
        residual_points=data.residual_points,
        n_initial_residual=data.n_initial_residual,
        seed=cfg.seed,
    )
    facts = {
        "source": str(source),
        "sample_index": sample.sample_index,
        "pde": sample.pde,
        "params": dict(sample.params),
    }
    units = {"fields": "as stored in the file", "channels": ",".join(sample.channels)}
    return problem, {"last_steps": data.eval_last_steps}, facts, units


def _box_problem(cfg: DictConfig):
    """One of Wang, Teng & Perdikaris' problems (exact solution, or a reference file)."""
    from dcnn.pde.problems import BOX_PROBLEMS

    data = cfg.dataset
    problem_class = BOX_PROBLEMS.get(data.pde)
    if problem_class is None:
        raise ValueError(
            f"dataset.pde={data.pde!r} with dataset.format=box; known box problems: "
            f"{sorted(BOX_PROBLEMS)}"
        )
    options = {
        "batch_size": data.batch_size,
        "standardize_inputs": data.standardize_inputs,
        "eval_points": data.eval_points,
        "seed": cfg.seed,
        **data.get("params", {}),
    }
    facts = {"pde": data.pde, "params": dict(data.get("params", {}))}
    if data.get("path"):  # a reference solution file (the cavity)
        from dcnn.data.cavity import read_cavity_reference
        from dcnn.data.readers import resolve_data_path

        advice = (
            f"Make it with `dcnn-data cavity --re {data.params.re} --out {data.root}` "
            "(or set pde_data_root=... to the folder that holds it)"
        )
        source = resolve_data_path(data.path, data.root, advice)
        problem = problem_class(read_cavity_reference(source), **options)
        facts["source"] = str(source)
    else:
        problem = problem_class(**options)
    units = {"fields": "dimensionless", "channels": ",".join(problem.channels)}
    return problem, {}, facts, units


PROBLEM_FORMATS = {"pdebench": _pdebench_problem, "box": _box_problem}


def build_pinn_run(cfg: DictConfig, task_parts: dict):
    """DataModule, PinnTask, units and surgery report of a PINN run, from the composed config."""
    from dcnn.build import build_model
    from dcnn.data.datamodules import PinnDataModule

    data = cfg.dataset
    if cfg.rescaling.name != "none":
        raise ValueError(
            f"rescaling={cfg.rescaling.name} applies to energy/force labels; PINN runs need "
            "rescaling=none"
        )
    if cfg.loss.kind != "mse":
        raise ValueError(
            f"loss={cfg.loss.kind}: PINN loss terms are mean squared residuals; use loss=mse"
        )
    if data.format not in PROBLEM_FORMATS:
        raise ValueError(
            f"dataset.format={data.format!r} for task=pinn; expected one of "
            f"{sorted(PROBLEM_FORMATS)}"
        )
    problem, evaluate_options, facts, units = PROBLEM_FORMATS[data.format](cfg)
    model, report = build_model(
        cfg.model,
        cfg.activation,
        cfg.normalization.name,
        in_features=problem.n_inputs,
        out_features=problem.n_outputs,
    )
    task = PinnTask(
        model,
        problem,
        cfg.loss.alpha,
        cfg.loss.beta,
        derivative_method=cfg.get("derivative_method", "auto"),
        evaluate_options=evaluate_options,
        **task_parts,
    )
    datamodule = PinnDataModule(problem, steps_per_epoch=data.steps_per_epoch)
    inputs = problem.input_keys()
    points = {key: len(value) for key, value in datamodule.points.items() if key in inputs}
    info = {"data": {**facts, **points}}
    return datamodule, task, units, report, info
