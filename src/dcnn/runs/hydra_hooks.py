"""dcnn's side of Hydra: its command line, and its callbacks (``hydra.callbacks`` in
conf/train.yaml), which run in the launching process.

- ``hydra_flags_first``: Hydra's flags (``-m``, ``--cfg job``, ...) anywhere on the line.
- Before a multirun: ``hydra/launcher=slurm`` on a machine without SLURM, and
  ``hydra/launcher=local_parallel`` with ``trainer=ddp``, stop with a message that names the
  alternatives, instead of a traceback.
- After a multirun: one line per status, read from the jobs' metrics.json files, and the
  outcome that ``dcnn-train`` turns into its exit status (0 only when every job is ok).
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dcnn.runs.record import METRICS_FILE, PREVIOUS_DIR, STATUSES, RecordError, read_record


def job_statuses(sweep_dir: Path, n_jobs: int | None = None) -> Counter:
    """Status counts of the job folders of a multirun (runs moved aside are not counted); with
    ``n_jobs``, only the folders ``0`` .. ``n_jobs - 1`` of this launch (an earlier, larger
    launch into the same folder may have left more)."""
    counts: Counter = Counter()
    for path in sorted(Path(sweep_dir).rglob(METRICS_FILE)):
        parts = path.relative_to(sweep_dir).parts
        if PREVIOUS_DIR in parts:
            continue
        if n_jobs is not None and not (parts[0].isdigit() and int(parts[0]) < n_jobs):
            continue
        try:
            record = read_record(path.parent)
        except RecordError:
            counts["unreadable"] += 1
            continue
        counts[record["status"]] += 1
    return counts


def launch_size(config: DictConfig) -> int | None:
    """The number of jobs Hydra's basic sweeper launches for this command (None when another
    sweeper decides, or the job folders are not named by job number)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if not sweeper.endswith("BasicSweeper") or subdir != "${hydra.job.num}":
        return None
    parser = OverridesParser.create()
    params = config.hydra.sweeper.get("params")
    params = {} if params is None else OmegaConf.to_container(params, resolve=False)
    arguments = [f"{key}={value}" for key, value in params.items()]
    overrides = {o.key_or_group: o for o in parser.parse_overrides(arguments)}
    # The command line's overrides replace the sweep file's for the same key.
    overrides |= {
        o.key_or_group: o for o in parser.parse_overrides(list(config.hydra.overrides.task))
    }
    size = 1
    for override in overrides.values():
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


# The joblib workers of local_parallel are not dcnn-train processes: Lightning would start a DDP
# job's extra processes by running the worker's own command line again.
DDP_IN_PARALLEL_SLOTS = (
    "hydra/launcher=local_parallel runs single-process jobs side by side (one GPU, or a share of "
    "the CPU cores, each) and cannot start trainer=ddp's extra processes. For jobs on several "
    "devices, run the sweep with the default launcher (each job on all devices in turn) or with "
    "hydra/launcher=slurm and hydra.launcher.tasks_per_node=N."
)


class SweepHooks(Callback):
    """See the module docstring. ``outcome`` holds the last multirun's status counts."""

    outcome: Counter | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SweepHooks.outcome = None  # a new launch: nothing is known of its jobs yet
        target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
            print(
                "hydra/launcher=slurm submits jobs with SLURM's sbatch, which is not on this "
                "machine's PATH. Run the sweep on a SLURM login node, or here with "
                "hydra/launcher=slurm_local (the same preset, jobs as local processes) or "
                "hydra/launcher=local_parallel.",
                file=sys.stderr,
            )
            raise SystemExit(2)
        strategy = str(OmegaConf.select(config, "trainer.strategy") or "")
        if target.endswith("JoblibLauncher") and strategy.startswith("ddp"):
            print(DDP_IN_PARALLEL_SLOTS, file=sys.stderr)
            raise SystemExit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        counts = job_statuses(sweep_dir, launch_size(config))
        SweepHooks.outcome = counts
        order = [*STATUSES, "unreadable"]
        parts = ", ".join(f"{counts[status]} {status}" for status in order if counts[status])
        print(f"[dcnn] sweep {sweep_dir}: {sum(counts.values())} jobs: {parts}", flush=True)


def hydra_flags_first(arguments: list[str]) -> list[str]:
    """``arguments`` with Hydra's flags (and their values) moved before the overrides.

    argparse rejects a flag between positional arguments (``a=1 -m b=2``); users put ``-m`` or
    ``--cfg job`` anywhere, so the flags Hydra's own parser defines are moved to the front.
    """
    from hydra._internal.utils import get_args_parser

    actions = {
        option: action for action in get_args_parser()._actions for option in action.option_strings
    }
    flags: list[str] = []
    overrides: list[str] = []
    remaining = iter(arguments)
    for argument in remaining:
        action = actions.get(argument.split("=", 1)[0]) if argument.startswith("-") else None
        if action is None:
            overrides.append(argument)
            continue
        flags.append(argument)
        if "=" in argument or action.nargs == 0:
            continue
        value = next(remaining, None)
        if value is None:
            continue
        if action.nargs == "?" and value not in (action.choices or ()):
            overrides.append(value)  # `--info` alone: the next word is an override
        else:
            flags.append(value)
    return flags + overrides
