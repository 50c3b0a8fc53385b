"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The shared data folder sits beside the repository: <parent>/main (repo) and <parent>/shared.
_DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _missing_data(root: Path) -> list[str]:
    missing = []
    if not any((root / "rmd17").glob("rmd17_aspirin_*.npz")):
        missing.append(f"{root / 'rmd17'}/rmd17_aspirin_*.npz")
    if not any((root / "oc20").glob("*.traj")):
        missing.append(f"{root / 'oc20'}/*.traj")
    return missing


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding the real rmd17/ and oc20/ data (DCNN_DATA_ROOT or ../shared/data)."""
    from_env = os.environ.get("DCNN_DATA_ROOT")
    if from_env:
        root = Path(from_env).expanduser().resolve()
        missing = _missing_data(root)
        if missing:
            pytest.fail(f"DCNN_DATA_ROOT={from_env} lacks the test data files: {missing}")
        return root
    if not _DEFAULT_DATA_ROOT.is_dir():
        pytest.fail(
            f"No test data: {_DEFAULT_DATA_ROOT} does not exist. Set the environment variable "
            "DCNN_DATA_ROOT to a folder holding rmd17/ (rmd17_<molecule>_*.npz) and oc20/ (*.traj)."
        )
    missing = _missing_data(_DEFAULT_DATA_ROOT)
    if missing:
        pytest.fail(
            f"{_DEFAULT_DATA_ROOT} lacks the test data files {missing}. Set the environment "
            "variable DCNN_DATA_ROOT to a folder holding rmd17/ and oc20/."
        )
    return _DEFAULT_DATA_ROOT
