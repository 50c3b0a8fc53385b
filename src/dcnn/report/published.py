"""Published values the reports print beside ours, as printed in the papers (text keeps their
precision).

Lo & Huang, "On Training Derivative-Constrained Neural Networks" (arXiv 2310.01649v1):

- ``TABLE1``: test MAE on MD17 with the original labels; energy in kcal/mol, force in
  kcal/mol/Angstrom; keyed by (model, variant), "baseline" = the model as published on raw
  labels, "*" = IReLU + no normalization layers + power-of-ten rescaling.
- ``PINN_NRMSE``: Tables 3-5, the test "MSE" of the PINN variants, which is PDEBench's nRMSE.

Only values found in the paper are here; a cell without one shows ours alone.
"""

from __future__ import annotations

SOURCE = "Lo & Huang, arXiv 2310.01649v1"

# Our model class names -> the names the paper prints.
MODEL_NAMES = {
    "SchNet": "SchNet",
    "CGCNN": "CGCNN",
    "DimeNetPlusPlus": "DimeNet++",
    "ForceNet": "ForceNet",
    "GemNetT": "GemNet",
}

# (model, variant) -> molecule -> (energy MAE, force MAE)
TABLE1: dict[tuple[str, str], dict[str, tuple[str, str]]] = {
    ("SchNet", "baseline"): {
        "aspirin": ("53.00", "1.21"),
        "benzene": ("125.43", "0.39"),
        "ethanol": ("5.97", "0.68"),
    },
    ("SchNet", "*"): {
        "aspirin": ("28.31", "1.67"),
        "benzene": ("0.56", "0.36"),
        "ethanol": ("13.39", "1.53"),
    },
    ("CGCNN", "baseline"): {
        "aspirin": ("239.07", "14.20"),
        "benzene": ("98.86", "6.11"),
        "ethanol": ("38.36", "8.25"),
    },
    ("CGCNN", "*"): {
        "aspirin": ("137.12", "7.13"),
        "benzene": ("16.63", "0.61"),
        "ethanol": ("4.63", "2.96"),
    },
    ("DimeNet++", "baseline"): {
        "aspirin": ("47.43", "13.82"),
        "benzene": ("133.70", "12.45"),
        "ethanol": ("236.94", "6.41"),
    },
    ("DimeNet++", "*"): {
        "aspirin": ("2.59", "2.52"),
        "benzene": ("1.68", "0.25"),
        "ethanol": ("0.58", "0.29"),
    },
    ("ForceNet", "baseline"): {
        "aspirin": ("755.49", "21.95"),
        "benzene": ("239.53", "117.79"),
        "ethanol": ("1048.44", "17.61"),
    },
    ("ForceNet", "*"): {
        "aspirin": ("13.80", "0.89"),
        "benzene": ("19.09", "0.33"),
        "ethanol": ("3.18", "1.15"),
    },
    ("GemNet", "baseline"): {
        "aspirin": ("2201.94", "0.34"),
        "benzene": ("352.19", "0.22"),
        "ethanol": ("470.32", "0.28"),
    },
    ("GemNet", "*"): {
        "aspirin": ("13.16", "0.93"),
        "benzene": ("6.31", "1.27"),
        "ethanol": ("7.10", "0.27"),
    },
}

# PDE -> variant -> nRMSE
PINN_NRMSE: dict[str, dict[str, str]] = {
    "advection": {"Tanh+BN": "1.70", "IReLU+BN": "2.42", "Tanh": "1.59", "IReLU": "0.99"},
    "cfd": {"Tanh+BN": "1.11", "IReLU+BN": "1.66", "Tanh": "0.87", "IReLU": "0.40"},
    "diffreact": {"Tanh+BN": "4.94", "IReLU+BN": "8.03", "Tanh": "1.35", "IReLU": "1.13"},
}


def table1_value(model: object, variant: str, molecule: str, metric: str) -> str | None:
    """The paper's Table 1 value for our model class name, or None."""
    name = MODEL_NAMES.get(str(model))
    values = TABLE1.get((name, variant), {}).get(molecule) if name else None
    if values is None:
        return None
    return values[0] if metric == "energy_mae" else values[1]


def pinn_value(pde: str, variant: str, metric: str) -> str | None:
    return PINN_NRMSE.get(pde, {}).get(variant) if metric == "nrmse" else None


PATHOLOGIES_SOURCE = "Wang, Teng & Perdikaris, SIAM J. Sci. Comput. 43 (2021), Table 2 and Sec. 5"

# Problem -> method (M1 plain MLP, M2 + learning-rate annealing, M3 modified MLP, M4 both) ->
# relative L2 error, tanh networks: Helmholtz 50 x 3 (Table 2), Klein-Gordon 50 x 5, lid-driven
# cavity at Re = 100 (error of the velocity magnitude).
PATHOLOGIES_REL_L2: dict[str, dict[str, str]] = {
    "helmholtz": {"M1": "1.06e-1", "M2": "1.12e-2", "M3": "2.46e-2", "M4": "3.87e-3"},
    "klein_gordon": {"M1": "1.79e-1", "M2": "1.06e-2", "M3": "1.97e-2", "M4": "2.81e-3"},
    "cavity": {"M1": "2.71e-1", "M2": "2.49e-1", "M3": "1.21e-1", "M4": "3.42e-2"},
}


def pathologies_value(pde: str, method: str, activation: str) -> str | None:
    """The published relative L2 error of ``method`` on ``pde`` (tanh networks only)."""
    return PATHOLOGIES_REL_L2.get(pde, {}).get(method) if activation == "tanh" else None
