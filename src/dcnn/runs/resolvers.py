"""Config resolvers dcnn registers with OmegaConf (by its Hydra plugin, so that composing the
config anywhere, tests and notebooks included, knows them).

- ``${dcnn_unique_dir:RUN,${hydra.mode},outputs/runs/...}``: the default run folder (and, with
  MULTIRUN, the default sweep folder). In the mode it is for, the folder is created when the
  name is resolved; if it exists already (another launch in the same second), ``-1``, ``-2``,
  ... is appended. Creating a folder is atomic, so two launches never share one. In the other
  mode (a multirun reads the run folder's name too), and when composing a config outside a
  launch, the name is returned as it is and nothing is created.
- ``${dcnn_parallel_jobs:2}``: how many jobs ``hydra/launcher=local_parallel`` runs at once: one
  per visible GPU, or the given number on a machine without GPUs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

# One folder per name and process: Hydra resolves the run folder more than once, on copies of
# the config that do not share OmegaConf's resolver cache.
_CLAIMED: dict[str, str] = {}


def unique_dir(for_mode: str, mode: object, base: str) -> str:
    if str(mode).rsplit(".", 1)[-1] != for_mode:
        return base
    if base not in _CLAIMED:
        path = Path(base)
        suffix = 0
        while True:
            candidate = path if suffix == 0 else path.with_name(f"{path.name}-{suffix}")
            try:
                candidate.mkdir(parents=True)
            except FileExistsError:
                suffix += 1
                continue
            break
        _CLAIMED[base] = str(candidate)
    return _CLAIMED[base]


def parallel_jobs(without_gpus: int) -> int:
    import torch

    return torch.cuda.device_count() or int(without_gpus)


def register() -> None:
    OmegaConf.register_new_resolver("dcnn_unique_dir", unique_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("dcnn_parallel_jobs", parallel_jobs, replace=True)
