"""Generate PDE data files in PDEBench's exact HDF5 layouts; the ``dcnn-data`` command.

The ``cavity`` subcommand writes the steady lid-driven cavity reference solution instead (one
small HDF5 file, read back by :func:`dcnn.data.cavity.read_cavity_reference`).

Files match the real PDEBench downloads (names, keys, float32 dtypes, shapes, the one-longer
``t-coordinate`` of the 1D files, attributes, lzf-compressed diffusion-reaction groups with a
YAML ``config``), so :func:`dcnn.data.pdebench.read_pdebench_sample` reads both the same way.

Examples::

    dcnn-data advection --beta 0.1               # into data/pdebench/
    dcnn-data cfd --n-samples 16 --nx 512 --out my_data
    dcnn-data diffreact --full                   # PDEBench's sizes (long on a CPU)
    dcnn-data cavity --re 100 --n 128            # cavity_Re100_n128.h5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import yaml
from tqdm import tqdm

from dcnn.data.cavity import cavity_filename
from dcnn.pde.solvers import (
    ADVECTION_DOMAIN,
    CFD_DOMAIN,
    DIFFREACT_DOMAIN,
    CavityConvergenceError,
    advection_exact_solution,
    advection_initial_condition,
    cell_centres,
    cfd_initial_condition,
    check_cavity_arguments,
    diffreact_initial_condition,
    solve_cavity,
    solve_compressible_1d,
    solve_diffreact,
)

DIFFREACT_FILENAME = "2D_diff-react_NA_NA.h5"
DEFAULT_OUT = "data/pdebench"  # conf/train.yaml's pde_data_root
# Samples integrated together by the vectorised compressible solver (bounded memory).
_CFD_BATCH = 16

# Sizes: small CPU-friendly defaults, and PDEBench's (--full). Ten samples by default so that
# the PDEBench PINN baseline's sample index -10 exists in a default file.
SMALL_SIZES = {
    "advection": {"n_samples": 10, "nx": 256, "nt": 201},
    "cfd": {"n_samples": 10, "nx": 256, "nt": 101},
    "diffreact": {"n_samples": 10, "nx": 32, "nt": 101},
}
FULL_SIZES = {
    "advection": {"n_samples": 10000, "nx": 1024, "nt": 201},
    "cfd": {"n_samples": 10000, "nx": 1024, "nt": 101},
    "diffreact": {"n_samples": 1000, "nx": 128, "nt": 101},
}


def advection_filename(beta: float) -> str:
    """PDEBench's name, e.g. ``1D_Advection_Sols_beta0.1.hdf5``."""
    return f"1D_Advection_Sols_beta{float(beta)}.hdf5"


def _viscosity_label(value: float) -> str:
    """PDEBench's spelling of eta/zeta in file names: 1e-8 -> '1.e-8', 0.01 -> '0.01'."""
    if value != 0.0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0')}e{int(exponent)}"
    return repr(float(value))


def cfd_filename(eta: float, zeta: float) -> str:
    """PDEBench's name, e.g. ``1D_CFD_Rand_Eta1.e-8_Zeta1.e-8_periodic_Train.hdf5``."""
    return (
        f"1D_CFD_Rand_Eta{_viscosity_label(eta)}_Zeta{_viscosity_label(zeta)}_periodic_Train.hdf5"
    )


def _check_sizes(n_samples: int, nx: int, nt: int, t_final: float, **extra: int) -> None:
    for name, value, minimum in [("n_samples", n_samples, 1), ("nx", nx, 2), ("nt", nt, 2)] + [
        (name, value, 2) for name, value in extra.items()
    ]:
        if int(value) != value or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if not np.isfinite(t_final) or t_final <= 0.0:
        raise ValueError(f"t_final must be a positive number, got {t_final!r}")


@contextmanager
def _new_hdf5(path: str | Path, overwrite: bool) -> Iterator[h5py.File]:
    """Write to ``<path>.partial`` and move it into place only when complete."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (dcnn-data: --overwrite) to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with h5py.File(partial, "w") as handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_1d_coordinates(handle: h5py.File, x: np.ndarray, dt_save: float, nt: int) -> None:
    handle.create_dataset("x-coordinate", data=x.astype(np.float32))
    # PDEBench's t-coordinate is one entry longer than the stored time axis.
    handle.create_dataset("t-coordinate", data=(np.arange(nt + 1) * dt_save).astype(np.float32))


def generate_advection(
    path: str | Path,
    *,
    beta: float = 0.1,
    n_samples: int = SMALL_SIZES["advection"]["n_samples"],
    nx: int = SMALL_SIZES["advection"]["nx"],
    nt: int = SMALL_SIZES["advection"]["nt"],
    t_final: float = 2.0,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a ``1D_Advection_Sols_beta*.hdf5``-layout file of exact solutions; return its path."""
    _check_sizes(n_samples, nx, nt, t_final)
    if not np.isfinite(beta):
        raise ValueError(f"beta must be a finite number, got {beta!r}")
    x = cell_centres(nx, ADVECTION_DOMAIN)
    dt_save = t_final / (nt - 1)
    times = np.arange(nt) * dt_save
    rng = np.random.default_rng(seed)
    with _new_hdf5(path, overwrite) as handle:
        tensor = handle.create_dataset(
            "tensor", shape=(n_samples, nt, nx), dtype="float32", chunks=(1, nt, nx)
        )
        _write_1d_coordinates(handle, x, dt_save, nt)
        handle.attrs["beta"] = float(beta)
        for index in tqdm(range(n_samples), desc="advection", unit="sample", disable=not progress):
            profile = advection_initial_condition(rng)
            tensor[index] = advection_exact_solution(profile, x, times, beta)
    return Path(path)


def generate_cfd(
    path: str | Path,
    *,
    eta: float = 1e-8,
    zeta: float = 1e-8,
    n_samples: int = SMALL_SIZES["cfd"]["n_samples"],
    nx: int = SMALL_SIZES["cfd"]["nx"],
    nt: int = SMALL_SIZES["cfd"]["nt"],
    t_final: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a ``1D_CFD_Rand_*_periodic_Train.hdf5``-layout file; return its path.

    Periodic 1D compressible Navier-Stokes on [-1, 1], gamma 5/3, CFL 0.3, saved at
    ``linspace(0, t_final, nt)``.
    """
    _check_sizes(n_samples, nx, nt, t_final)
    if min(eta, zeta) < 0.0:
        raise ValueError(f"eta and zeta must be >= 0, got eta={eta!r}, zeta={zeta!r}")
    x = cell_centres(nx, CFD_DOMAIN)
    dt_save = t_final / (nt - 1)
    times = np.arange(nt) * dt_save
    rng = np.random.default_rng(seed)
    with _new_hdf5(path, overwrite) as handle:
        outputs = [
            handle.create_dataset(
                name, shape=(n_samples, nt, nx), dtype="float32", chunks=(1, nt, nx)
            )
            for name in ("density", "Vx", "pressure")
        ]
        _write_1d_coordinates(handle, x, dt_save, nt)
        handle.attrs["eta"] = float(eta)
        handle.attrs["zeta"] = float(zeta)
        with tqdm(total=n_samples, desc="cfd", unit="sample", disable=not progress) as bar:
            for start in range(0, n_samples, _CFD_BATCH):
                stop = min(start + _CFD_BATCH, n_samples)
                initial = [cfd_initial_condition(x, rng) for _ in range(start, stop)]
                density, velocity, pressure = (
                    np.stack(field) for field in zip(*initial, strict=True)
                )
                solution = solve_compressible_1d(
                    density,
                    velocity,
                    pressure,
                    dx=(CFD_DOMAIN[1] - CFD_DOMAIN[0]) / nx,
                    save_times=times,
                    eta=eta,
                    zeta=zeta,
                    cfl=0.3,
                    boundary="periodic",
                )
                for output, field in zip(outputs, solution, strict=True):
                    output[start:stop] = field
                bar.update(stop - start)
    return Path(path)


def generate_diffreact(
    path: str | Path,
    *,
    n_samples: int = SMALL_SIZES["diffreact"]["n_samples"],
    nx: int = SMALL_SIZES["diffreact"]["nx"],
    ny: int | None = None,
    nt: int = SMALL_SIZES["diffreact"]["nt"],
    t_final: float = 5.0,
    Du: float = 1e-3,
    Dv: float = 5e-3,
    k: float = 5e-3,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a ``2D_diff-react_NA_NA.h5``-layout file; return its path.

    Group ``f"{i:04d}"`` holds sample i, integrated from the normal initial state of seed
    ``seed + i`` (PDEBench used seed = group index, i.e. ``seed=0``).
    """
    ny = nx if ny is None else ny
    _check_sizes(n_samples, nx, nt, t_final, ny=ny)
    if min(Du, Dv) < 0.0:
        raise ValueError(f"Du and Dv must be >= 0, got Du={Du!r}, Dv={Dv!r}")
    (left, right), (bottom, top) = DIFFREACT_DOMAIN, DIFFREACT_DOMAIN
    x = cell_centres(nx, (left, right))
    y = cell_centres(ny, (bottom, top))
    times = np.linspace(0.0, t_final, nt)
    with _new_hdf5(path, overwrite) as handle:
        for index in tqdm(range(n_samples), desc="diffreact", unit="sample", disable=not progress):
            sample_seed = seed + index
            u0, v0 = diffreact_initial_condition(nx, ny, sample_seed)
            data = solve_diffreact(
                u0, v0, dx=x[1] - x[0], dy=y[1] - y[0], t_eval=times, Du=Du, Dv=Dv, k=k
            )
            group = handle.create_group(f"{index:04d}")
            group.create_dataset("data", data=data, dtype="float32", compression="lzf")
            for name, grid in (("x", x), ("y", y), ("t", times)):
                group.create_dataset(f"grid/{name}", data=grid, dtype="float32", compression="lzf")
            config = {
                "name": "2d_diff-react",
                "output_path": Path(DIFFREACT_FILENAME).stem,
                "generator": "dcnn-data diffreact",
                "sim": {
                    "Du": float(Du),
                    "Dv": float(Dv),
                    "k": float(k),
                    "t": float(t_final),
                    "tdim": int(nt),
                    "x_left": float(left),
                    "x_right": float(right),
                    "xdim": int(nx),
                    "y_bottom": float(bottom),
                    "y_top": float(top),
                    "ydim": int(ny),
                    "n": 1,
                    "seed": int(sample_seed),
                },
            }
            group.attrs["config"] = yaml.safe_dump(config, sort_keys=False)
    return Path(path)


def generate_cavity(
    path: str | Path,
    *,
    re: float = 100.0,
    n: int = 128,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the steady lid-driven cavity solution on ``n`` x ``n`` nodes; return its path.

    Datasets ``x``, ``y`` (n,) and ``u``, ``v``, ``p``, ``psi`` (n, n), float64, ``field[j, i]``
    at (x[i], y[j]); attributes ``Re``, ``n`` and the solver's facts.
    """
    check_cavity_arguments(re, n)  # before touching the file system
    start = time.perf_counter()
    with _new_hdf5(path, overwrite) as handle:
        solution = solve_cavity(re, n)
        for name in ("x", "y", "u", "v", "p", "psi"):
            handle.create_dataset(name, data=getattr(solution, name))
        handle.attrs.update(
            {
                "Re": float(solution.re),
                "n": int(n),
                "lid_velocity": 1.0,
                "newton_iterations": int(solution.iterations),
                "relative_residual": float(solution.residual),
                "method": "stream-function/vorticity finite differences (central, Thom wall "
                "vorticity), Newton's method; pressure Poisson equation from the momentum "
                "equation, finite volumes",
                "pressure_convention": "zero mean over the square (trapezoidal rule)",
                "generator": "dcnn-data cavity",
            }
        )
    if progress:
        print(
            f"cavity Re={solution.re:g} n={n}: {solution.iterations} Newton iterations, "
            f"relative residual {solution.residual:.1e}, {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
    return Path(path)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcnn-data",
        description="Generate PDE data files in PDEBench's HDF5 layouts.",
    )
    subparsers = parser.add_subparsers(dest="pde", required=True, metavar="PDE")

    def add(name: str, help_text: str, t_final: float) -> argparse.ArgumentParser:
        small, full = SMALL_SIZES[name], FULL_SIZES[name]
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--out",
            type=Path,
            default=Path(os.environ.get("DCNN_PDE_DATA_ROOT", DEFAULT_OUT)),
            help=f"output folder (default: $DCNN_PDE_DATA_ROOT or {DEFAULT_OUT}, where the "
            "training configs look)",
        )
        for option, key in (("--n-samples", "n_samples"), ("--nx", "nx"), ("--nt", "nt")):
            sub.add_argument(
                option,
                type=_positive_int,
                default=None,
                help=f"default {small[key]} ({full[key]} with --full)",
            )
        sub.add_argument("--t-final", type=float, default=t_final, help="final time")
        sub.add_argument("--seed", type=int, default=0, help="random seed")
        sub.add_argument(
            "--full", action="store_true", help="PDEBench's sizes unless given explicitly"
        )
        sub.add_argument("--overwrite", action="store_true", help="replace an existing file")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        return sub

    advection = add("advection", "1D advection u_t + beta u_x = 0 (exact solutions)", 2.0)
    advection.add_argument("--beta", type=float, default=0.1, help="advection speed")
    cfd = add("cfd", "1D compressible Navier-Stokes, periodic, gamma 5/3", 1.0)
    cfd.add_argument("--eta", type=float, default=1e-8, help="shear viscosity")
    cfd.add_argument("--zeta", type=float, default=1e-8, help="bulk viscosity")
    diffreact = add("diffreact", "2D diffusion-reaction (FitzHugh-Nagumo)", 5.0)
    diffreact.add_argument("--ny", type=_positive_int, default=None, help="default: nx")
    diffreact.add_argument("--du", type=float, default=1e-3, help="diffusion coefficient of u")
    diffreact.add_argument("--dv", type=float, default=5e-3, help="diffusion coefficient of v")
    diffreact.add_argument("--k", type=float, default=5e-3, help="reaction constant")

    help_text = "steady 2D lid-driven cavity (reference solution, one file cavity_Re*_n*.h5)"
    cavity = subparsers.add_parser("cavity", help=help_text, description=help_text)
    cavity.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("DCNN_PDE_DATA_ROOT", DEFAULT_OUT)),
        help=f"output folder (default: $DCNN_PDE_DATA_ROOT or {DEFAULT_OUT})",
    )
    cavity.add_argument("--re", type=float, default=100.0, help="Reynolds number (default 100)")
    cavity.add_argument(
        "--n", type=_positive_int, default=128, help="nodes per side, walls included (default 128)"
    )
    cavity.add_argument("--overwrite", action="store_true", help="replace an existing file")
    cavity.add_argument("--quiet", action="store_true", help="no summary on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dcnn-data``; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.pde == "cavity":
        try:
            path = generate_cavity(
                args.out / cavity_filename(args.re, args.n),
                re=args.re,
                n=args.n,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
        except (FileExistsError, ValueError, CavityConvergenceError) as error:
            print(f"dcnn-data: error: {error}", file=sys.stderr)
            return 1
        print(path)
        return 0
    base = FULL_SIZES[args.pde] if args.full else SMALL_SIZES[args.pde]
    sizes = {key: base[key] if getattr(args, key) is None else getattr(args, key) for key in base}
    common = dict(
        t_final=args.t_final,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        **sizes,
    )
    try:
        if args.pde == "advection":
            path = generate_advection(
                args.out / advection_filename(args.beta), beta=args.beta, **common
            )
        elif args.pde == "cfd":
            path = generate_cfd(
                args.out / cfd_filename(args.eta, args.zeta),
                eta=args.eta,
                zeta=args.zeta,
                **common,
            )
        else:
            path = generate_diffreact(
                args.out / DIFFREACT_FILENAME,
                ny=args.ny,
                Du=args.du,
                Dv=args.dv,
                k=args.k,
                **common,
            )
    except (FileExistsError, ValueError) as error:
        print(f"dcnn-data: error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
