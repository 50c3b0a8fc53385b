"""Loss-weighting strategies: how named loss terms are combined into one scalar.

Every task hands a dict of named scalar terms and their base weights to a strategy; the strategy
returns the total loss and the weights it used (which the task logs). Strategies: fixed weights
(:mod:`~dcnn.tasks.weighting.combine`), learning-rate annealing
(:mod:`~dcnn.tasks.weighting.annealing`) and ReLoBRaLo (:mod:`~dcnn.tasks.weighting.relobralo`).
"""

from __future__ import annotations

from dcnn.tasks.weighting.annealing import LearningRateAnnealing
from dcnn.tasks.weighting.combine import FixedWeights
from dcnn.tasks.weighting.relobralo import ReLoBRaLo

__all__ = [
    "REFERENCE_TERMS",
    "FixedWeights",
    "LearningRateAnnealing",
    "ReLoBRaLo",
    "build_weighting",
]


# The term annealing balances the others against, unless weighting.reference_term says.
REFERENCE_TERMS = {"pinn": "pde", "potential": "forces"}


def build_weighting(
    name: str, task: str | None = None, **options
) -> FixedWeights | LearningRateAnnealing | ReLoBRaLo:
    if name == "fixed":
        return FixedWeights()
    if name == "annealing":
        if options.get("reference_term") is None:
            if task not in REFERENCE_TERMS:
                raise ValueError(
                    f"weighting=annealing needs weighting.reference_term for task {task!r} "
                    f"(defaults exist for {', '.join(REFERENCE_TERMS)})"
                )
            options["reference_term"] = REFERENCE_TERMS[task]
        return LearningRateAnnealing(**options)
    if name == "relobralo":
        return ReLoBRaLo(**options)
    raise ValueError(f"unknown weighting {name!r}; expected 'fixed', 'annealing' or 'relobralo'")
