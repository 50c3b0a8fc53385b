"""`dcnn-report`: the paper's tables and figures from finished `dcnn-train` run folders.

Every subcommand takes folders that are searched recursively for ``metrics.json`` (one per run;
a multirun folder holds one numbered subfolder per job) and reads ``config_resolved.yaml`` beside
it to tell the runs' settings apart:

    dcnn-report runs DIR...       one row per run: status, the settings that differ, test metrics
    dcnn-report table1 DIR...     paper Table 1: model/variant x molecule energy and force MAE
    dcnn-report pinn DIR...       paper Tables 3-5: one table per PDE, rows tanh/IReLU (+BN)
    dcnn-report fig1 DIR --out F  paper Fig. 1: training curves and test MAE against beta

Repeated seeds are averaged over the runs with status ok; diverged and failed runs are always
shown (in their own row, as a cell text, or in the run count), never dropped silently.
"""

from dcnn.report.cli import main

__all__ = ["main"]
