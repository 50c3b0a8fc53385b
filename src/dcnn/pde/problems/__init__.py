"""PINN problems: one module per PDE; `build_problem` picks the one a PDEBench sample needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dcnn.pde.metrics import grid_error_metrics
from dcnn.pde.problems.advection import AdvectionProblem
from dcnn.pde.problems.base import JetRequest, PinnProblem
from dcnn.pde.problems.cfd import CfdProblem
from dcnn.pde.problems.diffreact import DiffReactProblem
from dcnn.pde.problems.pdebench import PdeProblem

if TYPE_CHECKING:
    from dcnn.data.pdebench import PdeSample

__all__ = [
    "AdvectionProblem",
    "CfdProblem",
    "DiffReactProblem",
    "JetRequest",
    "PdeProblem",
    "PinnProblem",
    "build_problem",
    "grid_error_metrics",
]

PROBLEMS: dict[str, type[PdeProblem]] = {
    problem.name: problem for problem in (AdvectionProblem, CfdProblem, DiffReactProblem)
}


def build_problem(sample: PdeSample, **kwargs) -> PdeProblem:
    """The problem class for `sample.pde`, constructed with keyword arguments `kwargs`."""
    problem_class = PROBLEMS.get(sample.pde)
    if problem_class is None:
        raise ValueError(
            f"{sample.source}: unknown PDE {sample.pde!r}; known PDE problems: {sorted(PROBLEMS)}"
        )
    return problem_class(sample, **kwargs)
