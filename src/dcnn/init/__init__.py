"""Initialisations a run can choose (config group ``init``): ``default`` keeps every model's own,
``lsuv`` sets each weight layer's scale on real training inputs (``dcnn.init.lsuv``, whose
docstring says why IReLU networks need it)."""

from dcnn.init.gain import analytic_gain, gaussian_rms
from dcnn.init.lsuv import (
    WEIGHT_LAYERS,
    InitError,
    LsuvReport,
    WeightLayer,
    lsuv_init,
    weight_layers,
)
from dcnn.init.runs import INITS, initialise, training_inputs

__all__ = [
    "INITS",
    "WEIGHT_LAYERS",
    "InitError",
    "LsuvReport",
    "WeightLayer",
    "analytic_gain",
    "gaussian_rms",
    "initialise",
    "lsuv_init",
    "training_inputs",
    "weight_layers",
]
