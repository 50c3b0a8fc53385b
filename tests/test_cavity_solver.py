"""The lid-driven cavity reference solver, its ``dcnn-data cavity`` file and the reader."""

from __future__ import annotations

import dataclasses
import shutil
from functools import cache

import h5py
import numpy as np
import pytest

from dcnn.data import generate
from dcnn.data.cavity import CAVITY_FIELDS, cavity_filename, read_cavity_reference
from dcnn.data.pdebench import PdeDataError
from dcnn.pde.solvers import CavityConvergenceError, solve_cavity

# Ghia, Ghia & Shin (1982), "High-Re solutions for incompressible flow using the Navier-Stokes
# equations and a multigrid method", J. Comput. Phys. 48, 387-411, Re = 100 on their 129 x 129
# grid. Table I: u along the vertical centreline x = 0.5; Table II: v along the horizontal
# centreline y = 0.5; Table III: primary vortex psi = -0.1034 at (0.6172, 0.7344).
GHIA_Y = [1.0, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5]
GHIA_Y += [0.4531, 0.2813, 0.1719, 0.1016, 0.0703, 0.0625, 0.0547, 0.0]
GHIA_U = [1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581]
GHIA_U += [-0.21090, -0.15662, -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.0]
GHIA_X = [1.0, 0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5]
GHIA_X += [0.2344, 0.2266, 0.1563, 0.0938, 0.0781, 0.0703, 0.0625, 0.0]
GHIA_V = [0.0, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454]
GHIA_V += [0.17527, 0.17507, 0.16077, 0.12317, 0.10890, 0.10091, 0.09233, 0.0]
GHIA_PSI_MIN, GHIA_VORTEX_CENTRE = -0.1034, (0.6172, 0.7344)


@cache
def solution(n: int, re: float = 100.0):
    return solve_cavity(re, n)


def centrelines(sol) -> tuple[np.ndarray, np.ndarray]:
    """u(0.5, y) and v(x, 0.5) on an odd grid (a node lies on each centreline)."""
    middle = (len(sol.x) - 1) // 2
    assert sol.x[middle] == pytest.approx(0.5) and sol.y[middle] == pytest.approx(0.5)
    return sol.u[:, middle], sol.v[middle, :]


def interior_box(sol, low: float, high: float) -> np.ndarray:
    """Mask of the interior nodes (rows 1..n-2, columns 1..n-2) inside [low, high]^2."""
    x, y = np.meshgrid(sol.x[1:-1], sol.y[1:-1])
    return (x >= low) & (x <= high) & (y >= low) & (y <= high)


def central(field: np.ndarray, h: float, axis: int) -> np.ndarray:
    """Central difference at the interior nodes (independent of the solver's operators)."""
    if axis == 1:
        return (field[1:-1, 2:] - field[1:-1, :-2]) / (2 * h)
    return (field[2:, 1:-1] - field[:-2, 1:-1]) / (2 * h)


def laplacian(field: np.ndarray, h: float) -> np.ndarray:
    return (
        field[1:-1, 2:]
        + field[1:-1, :-2]
        + field[2:, 1:-1]
        + field[:-2, 1:-1]
        - 4 * field[1:-1, 1:-1]
    ) / h**2


def test_centrelines_converge_at_second_order():
    finest_u, finest_v = centrelines(solution(129))
    errors = []
    for n in (17, 33, 65):
        stride = 128 // (n - 1)  # the coarse nodes are finest-grid nodes
        u, v = centrelines(solution(n))
        errors.append((np.abs(u - finest_u[::stride]).max(), np.abs(v - finest_v[::stride]).max()))
    errors = np.array(errors)
    # h^2 errors measured against the n = 129 grid shrink by (h^2 - h_129^2) ratios 4.2 and 5.
    ratios = errors[:-1] / errors[1:]
    assert np.all(ratios > 3.0), (errors, ratios)
    assert errors[-1].max() < 5e-3


def test_centrelines_and_vortex_match_ghia_ghia_shin_at_re_100():
    sol = solution(129)
    u, v = centrelines(sol)
    u_deviation = np.abs(np.interp(GHIA_Y, sol.y, u) - GHIA_U).max()
    v_deviation = np.abs(np.interp(GHIA_X, sol.x, v) - GHIA_V).max()
    # Measured: 0.0043 and 0.0084. The n = 129 and n = 257 solutions agree to < 1e-3, so the
    # rest is the accuracy of Ghia's tables (about 0.5-1 % of the lid velocity).
    assert u_deviation < 0.01 and v_deviation < 0.01, (u_deviation, v_deviation)
    row, column = np.unravel_index(np.argmin(sol.psi), sol.psi.shape)
    assert sol.psi[row, column] == pytest.approx(GHIA_PSI_MIN, abs=1e-3)
    h = sol.x[1] - sol.x[0]
    assert abs(sol.x[column] - GHIA_VORTEX_CENTRE[0]) <= 2 * h
    assert abs(sol.y[row] - GHIA_VORTEX_CENTRE[1]) <= 2 * h
    assert sol.residual <= 1e-10 and sol.iterations <= 10


def test_grid_boundary_conditions_and_discrete_continuity():
    sol = solution(33)
    n, h = 33, 1.0 / 32
    np.testing.assert_allclose(sol.x, np.linspace(0.0, 1.0, n))
    np.testing.assert_allclose(sol.y, np.linspace(0.0, 1.0, n))
    for field in (sol.u, sol.v, sol.p, sol.psi, sol.omega):
        assert field.shape == (n, n) and np.all(np.isfinite(field))
    np.testing.assert_array_equal(sol.u[-1, :], 1.0)  # the lid
    for wall in (sol.u[0, :], sol.u[:-1, 0], sol.u[:-1, -1]):
        np.testing.assert_array_equal(wall, 0.0)
    for wall in (sol.v[0, :], sol.v[-1, :], sol.v[:, 0], sol.v[:, -1]):
        np.testing.assert_array_equal(wall, 0.0)
    for wall in (sol.psi[0, :], sol.psi[-1, :], sol.psi[:, 0], sol.psi[:, -1]):
        np.testing.assert_array_equal(wall, 0.0)
    # u = psi_y, v = -psi_x: the lid drives a clockwise vortex (psi < 0, u > 0 below the lid).
    np.testing.assert_allclose(sol.u[1:-1, 1:-1], central(sol.psi, h, 0), atol=1e-12)
    np.testing.assert_allclose(sol.v[1:-1, 1:-1], -central(sol.psi, h, 1), atol=1e-12)
    assert sol.psi[1:-1, 1:-1].max() < 1e-3 and sol.u[-2, n // 2] > 0.5
    divergence = central(sol.u, h, 1) + central(sol.v, h, 0)
    assert np.abs(divergence).max() < 1e-10
    # Vorticity is -lap psi (the discrete Poisson equation Newton solved).
    np.testing.assert_allclose(sol.omega[1:-1, 1:-1], -laplacian(sol.psi, h), atol=1e-8)


def test_stokes_limit_is_mirror_symmetric_and_inertia_breaks_the_symmetry():
    slow = solve_cavity(1e-3, 33)
    assert np.abs(slow.u - slow.u[:, ::-1]).max() < 1e-5
    assert np.abs(slow.v + slow.v[:, ::-1]).max() < 1e-5
    fast = solution(33)
    assert np.abs(fast.u - fast.u[:, ::-1]).max() > 0.1


def test_pressure_solves_its_poisson_equation_and_the_momentum_equation():
    poisson_errors, momentum_errors = [], []
    for n in (33, 65, 129):
        sol = solution(n)
        h = 1.0 / (n - 1)
        psi = sol.psi
        psi_xx = (psi[1:-1, 2:] - 2 * psi[1:-1, 1:-1] + psi[1:-1, :-2]) / h**2
        psi_yy = (psi[2:, 1:-1] - 2 * psi[1:-1, 1:-1] + psi[:-2, 1:-1]) / h**2
        psi_xy = (psi[2:, 2:] - psi[2:, :-2] - psi[:-2, 2:] + psi[:-2, :-2]) / (4 * h * h)
        source = 2 * (psi_xx * psi_yy - psi_xy**2)
        box = interior_box(sol, 0.25, 0.75)  # away from the singular lid corners
        poisson_errors.append(np.abs(laplacian(sol.p, h) - source)[box].max())
        u, v, p, re = sol.u, sol.v, sol.p, sol.re
        convection_x = u[1:-1, 1:-1] * central(u, h, 1) + v[1:-1, 1:-1] * central(u, h, 0)
        convection_y = u[1:-1, 1:-1] * central(v, h, 1) + v[1:-1, 1:-1] * central(v, h, 0)
        momentum_x = convection_x + central(p, h, 1) - laplacian(u, h) / re
        momentum_y = convection_y + central(p, h, 0) - laplacian(v, h) / re
        momentum_errors.append(max(np.abs(momentum_x[box]).max(), np.abs(momentum_y[box]).max()))
        scale = np.abs(convection_x[box]).max()
        if n == 65:
            assert poisson_errors[-1] < 0.02 * np.abs(source[box]).max()
            assert momentum_errors[-1] < 0.05 * scale
        weights = np.ones(n)
        weights[[0, -1]] = 0.5
        assert abs(np.sum(np.outer(weights, weights) * p)) < 1e-10 * n * n  # zero mean
    poisson_errors, momentum_errors = np.array(poisson_errors), np.array(momentum_errors)
    assert np.all(poisson_errors[:-1] / poisson_errors[1:] > 3.0), poisson_errors
    # Momentum holds to discretisation accuracy (a wrong Neumann condition leaves an O(1) error).
    assert np.all(momentum_errors[:-1] / momentum_errors[1:] > 2.0), momentum_errors


def test_pressure_is_high_in_the_downstream_corner():
    # The lid pushes fluid into the upper right corner (stagnation, high p) and drags it out
    # of the upper left one (low p).
    sol = solution(65)
    upper_left, centre, upper_right = sol.p[-2, 1], sol.p[32, 32], sol.p[-2, -2]
    assert upper_left < 0.0 < upper_right
    assert upper_left < centre < upper_right


def test_newton_budget_and_bad_arguments_raise_clear_errors():
    with pytest.raises(CavityConvergenceError, match=r"Re=100, n=17.*residual reached"):
        solve_cavity(100.0, 17, max_iterations=1)
    for bad_n in (4, 0, -3, 16.0, True):
        with pytest.raises(ValueError, match="n must be an integer >= 5"):
            solve_cavity(100.0, bad_n)
    for bad_re in (0.0, -1.0, float("nan"), float("inf"), "100"):
        with pytest.raises(ValueError, match="Re must be a finite number > 0"):
            solve_cavity(bad_re, 17)


def test_higher_reynolds_numbers_go_through_continuation():
    sol = solve_cavity(400.0, 33)
    assert sol.re == 400.0 and sol.residual <= 1e-10
    assert sol.iterations > solution(33).iterations  # stages 100, 200, 400
    # The primary vortex moves down towards the centre: Ghia, Ghia & Shin (1982), Table III,
    # put it at (0.5547, 0.6055) for Re = 400 (and at (0.6172, 0.7344) for Re = 100).
    row, column = np.unravel_index(np.argmin(sol.psi), sol.psi.shape)
    assert abs(sol.x[column] - 0.5547) <= 2 / 32 and abs(sol.y[row] - 0.6055) <= 2 / 32


@pytest.fixture()
def cavity_file(tmp_path, capsys):
    arguments = ["cavity", "--re", "100", "--n", "33", "--out", str(tmp_path), "--quiet"]
    assert generate.main(arguments) == 0
    path = tmp_path / "cavity_Re100_n33.h5"
    assert capsys.readouterr().out.strip() == str(path)
    return path, arguments


def test_cli_writes_exactly_the_named_datasets_and_refuses_to_overwrite(cavity_file, capsys):
    path, arguments = cavity_file
    assert path.name == cavity_filename(100, 33)
    reference = solution(33)
    with h5py.File(path, "r") as handle:
        assert set(handle.keys()) == {"x", "y", "u", "v", "p", "psi"}
        assert handle["x"].shape == (33,) and handle["y"].shape == (33,)
        for name in CAVITY_FIELDS:
            assert handle[name].shape == (33, 33)
            np.testing.assert_array_equal(handle[name][()], getattr(reference, name))
        assert handle.attrs["Re"] == 100.0 and handle.attrs["n"] == 33
        assert handle.attrs["relative_residual"] <= 1e-10
    before = path.stat().st_mtime_ns
    assert generate.main(arguments) == 1
    error = capsys.readouterr().err
    assert str(path) in error and "--overwrite" in error
    assert path.stat().st_mtime_ns == before
    assert generate.main([*arguments, "--overwrite"]) == 0
    assert not list(path.parent.glob("*.partial"))


def test_cli_reports_bad_arguments(tmp_path, capsys):
    out = tmp_path / "data"
    assert generate.main(["cavity", "--n", "4", "--out", str(out)]) == 1
    assert "n must be an integer >= 5" in capsys.readouterr().err
    assert generate.main(["cavity", "--re", "-5", "--n", "17", "--out", str(out)]) == 1
    assert "Re must be a finite number > 0" in capsys.readouterr().err
    assert not out.exists()  # nothing written for bad arguments
    with pytest.raises(SystemExit):
        generate.main(["cavity", "--n", "0", "--out", str(out)])
    assert "positive integer" in capsys.readouterr().err


def test_reader_round_trips_the_file(cavity_file):
    path, _ = cavity_file
    data = read_cavity_reference(path)
    reference = solution(33)
    for name in ("x", "y", *CAVITY_FIELDS):
        np.testing.assert_array_equal(getattr(data, name), getattr(reference, name))
    assert data.re == 100.0 and data.source == str(path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.re = 1.0


def test_reader_names_the_file_and_the_damaged_dataset(cavity_file, tmp_path):
    path, _ = cavity_file

    def damaged(name: str, change) -> str:
        copy = tmp_path / name
        shutil.copy(path, copy)
        with h5py.File(copy, "a") as handle:
            change(handle)
        return copy

    missing = damaged("missing.h5", lambda handle: handle.__delitem__("p"))
    with pytest.raises(PdeDataError, match=rf"{missing}.*missing dataset 'p'"):
        read_cavity_reference(missing)

    def reshape_u(handle):
        del handle["u"]
        handle["u"] = np.zeros((33, 32))

    wrong = damaged("wrong.h5", reshape_u)
    with pytest.raises(PdeDataError, match=rf"{wrong}.*dataset 'u' has shape \(33, 32\)"):
        read_cavity_reference(wrong)

    no_re = damaged("no_re.h5", lambda handle: handle.attrs.__delitem__("Re"))
    with pytest.raises(PdeDataError, match=rf"{no_re}.*attribute 'Re'"):
        read_cavity_reference(no_re)

    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(PdeDataError, match=rf"{text}: not an HDF5 file"):
        read_cavity_reference(text)
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        read_cavity_reference(tmp_path / "nowhere.h5")
