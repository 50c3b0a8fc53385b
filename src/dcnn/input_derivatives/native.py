"""Native (C++) kernels of the fused Taylor pass on CPU, built on first use and cached per machine.

``fused_mlp_jet.cpp`` runs the pass in one C++ call each way, each layer block by block of rows
(matrix products, then the elementwise terms, while the block is in cache). On a 2-core CPU the
pass is 1.9x faster than the same pass in torch ops at 1,000 points and 1.55x at 10,000
(``benchmarks/native_kernels.py``).

It is compiled with the host's C++ compiler through ``torch.utils.cpp_extension`` (about 40 s,
once; ``-march=native``, so the build folder is keyed by the CPU as well as the source and torch
version: a cluster's home folder shared by different nodes stays safe).

Setting: environment variable ``DCNN_NATIVE_KERNELS``

* ``auto`` (default): build and use them on CPU; if the build fails, warn once and use the torch
  ops of :mod:`dcnn.input_derivatives.fused_mlp`, which compute the same numbers;
* ``off``: never build, always the torch ops;
* ``require``: fail with the compiler's message if they cannot be built (tests, benchmarks).

The build folder is ``$DCNN_NATIVE_CACHE`` or ``~/.cache/dcnn/native``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from dcnn.activations import IReLU

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_mlp_jet.cpp")
SETTING = "DCNN_NATIVE_KERNELS"
CACHE_SETTING = "DCNN_NATIVE_CACHE"
MODES = ("auto", "off", "require")
# -fopenmp is what makes at::parallel_for run on several threads in an extension: without it the
# header-only parallel_for compiles to a serial loop. Without -fno-trapping-math (torch's own
# flag) GCC does not vectorise loops with float comparisons, such as the clamp of exp_float.
COMPILER_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
# Activation codes of fused_mlp_jet.cpp, by exact class (a subclass may change forward).
ACTIVATION_CODES: dict[type[nn.Module], int] = {nn.Tanh: 0, IReLU: 1}

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ops" once loaded, or "error" once a build failed


def mode() -> str:
    value = os.environ.get(SETTING, "auto").strip().lower()
    if value not in MODES:
        raise ValueError(f"{SETTING}={value!r}: expected one of {', '.join(MODES)}")
    return value


def _cpu_fingerprint() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        described = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    except OSError:
        described = []
    return "\n".join(described) or platform.processor() or platform.machine()


def build_directory() -> Path:
    """Build folder of this source, its compiler flags, torch version and CPU."""
    key = hashlib.sha256()
    flags = " ".join(COMPILER_FLAGS)
    for part in (SOURCE.read_bytes(), flags, torch.__version__, _cpu_fingerprint()):
        key.update(part if isinstance(part, bytes) else part.encode())
    root = os.environ.get(CACHE_SETTING) or Path.home() / ".cache" / "dcnn" / "native"
    return Path(root) / key.hexdigest()[:16]


def _ensure_ninja_on_path() -> None:
    # torch's builder runs `ninja`; the ninja wheel installs it next to the interpreter's scripts,
    # which is not on PATH when the interpreter of a virtual environment is called directly.
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError as error:
        raise RuntimeError("the native kernels need ninja: pip install ninja") from error
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build():
    from torch.utils import cpp_extension

    _ensure_ninja_on_path()
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("*.so")):
        log.warning("building dcnn's native Taylor kernels in %s (once per machine)", directory)
    cpp_extension.load(
        name="dcnn_native",
        sources=[str(SOURCE)],
        extra_cflags=COMPILER_FLAGS,
        build_directory=str(directory),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.dcnn_native


def native_ops():
    """The loaded ops (``torch.ops.dcnn_native``), or None when off or the build failed in
    ``auto`` mode. Raises RuntimeError in ``require`` mode if they cannot be built."""
    setting = mode()
    if setting == "off":
        return None
    with _lock:
        if "ops" not in _state and "error" not in _state:
            try:
                _state["ops"] = _build()
            except Exception as error:  # compiler missing or failing: fall back to torch ops
                _state["error"] = error
                if setting == "auto":
                    warnings.warn(
                        f"dcnn's native Taylor kernels could not be built ({error}); using the "
                        f"slower torch ops. Set {SETTING}=off to silence this, or =require to "
                        "see the full error",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        if "error" in _state and setting == "require":
            raise RuntimeError(
                f"{SETTING}=require but dcnn's native Taylor kernels could not be built from "
                f"{SOURCE}: {_state['error']}"
            ) from _state["error"]
        return _state.get("ops")


def native_unsupported_reason(x: torch.Tensor, activations: list[nn.Module]) -> str | None:
    """Why the native pass cannot run these inputs (None if it can, once built)."""
    if x.device.type != "cpu":
        return f"the native kernels run on CPU; x is on {x.device}"
    if x.dtype not in (torch.float32, torch.float64):
        return f"the native kernels take float32 or float64, got {x.dtype}"
    for i, activation in enumerate(activations):
        if type(activation) not in ACTIVATION_CODES:
            names = ", ".join(cls.__name__ for cls in ACTIVATION_CODES)
            return f"activations.{i} is {type(activation).__name__}; native kernels: {names}"
    return None
