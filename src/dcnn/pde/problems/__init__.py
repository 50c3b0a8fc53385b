"""PINN problems, one module per PDE.

PDEBench problems (`PdeProblem`: advection, cfd, diffreact) are built on a sample of a PDEBench
file; `build_problem` picks the one the sample needs. Box problems (`BoxProblem`: helmholtz,
klein_gordon, cavity) are Wang, Teng & Perdikaris' benchmarks, with an exact solution or a
reference file and minibatches resampled every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dcnn.pde.metrics import grid_error_metrics
from dcnn.pde.problems.advection import AdvectionProblem
from dcnn.pde.problems.base import JetRequest, PinnProblem
from dcnn.pde.problems.box import BoxProblem
from dcnn.pde.problems.cavity import CavityProblem
from dcnn.pde.problems.cfd import CfdProblem
from dcnn.pde.problems.diffreact import DiffReactProblem
from dcnn.pde.problems.helmholtz import HelmholtzProblem
from dcnn.pde.problems.klein_gordon import KleinGordonProblem
from dcnn.pde.problems.pdebench import PdeProblem

if TYPE_CHECKING:
    from dcnn.data.pdebench import PdeSample

__all__ = [
    "BOX_PROBLEMS",
    "AdvectionProblem",
    "BoxProblem",
    "CavityProblem",
    "CfdProblem",
    "DiffReactProblem",
    "HelmholtzProblem",
    "KleinGordonProblem",
    "JetRequest",
    "PdeProblem",
    "PinnProblem",
    "build_problem",
    "grid_error_metrics",
]

PROBLEMS: dict[str, type[PdeProblem]] = {
    problem.name: problem for problem in (AdvectionProblem, CfdProblem, DiffReactProblem)
}
BOX_PROBLEMS: dict[str, type[BoxProblem]] = {
    problem.name: problem for problem in (HelmholtzProblem, KleinGordonProblem, CavityProblem)
}


def build_problem(sample: PdeSample, **kwargs) -> PdeProblem:
    """The problem class for `sample.pde`, constructed with keyword arguments `kwargs`."""
    problem_class = PROBLEMS.get(sample.pde)
    if problem_class is None:
        raise ValueError(
            f"{sample.source}: unknown PDE {sample.pde!r}; known PDE problems: {sorted(PROBLEMS)}"
        )
    return problem_class(sample, **kwargs)
