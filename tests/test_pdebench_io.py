"""PDEBench HDF5 layouts: writing (dcnn.data.generate), reading (dcnn.data.pdebench), CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from dcnn.data import generate
from dcnn.data.pdebench import PdeDataError, PdeSample, read_pdebench_sample
from dcnn.pde import solvers

QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pdebench")
    return {
        "advection": generate.generate_advection(
            folder / generate.advection_filename(0.4),
            beta=0.4, n_samples=3, nx=32, nt=11, t_final=0.5, seed=1, **QUIET,
        ),
        "cfd": generate.generate_cfd(
            folder / generate.cfd_filename(1e-8, 1e-8),
            n_samples=2, nx=32, nt=3, t_final=0.02, seed=2, **QUIET,
        ),
        "diffreact": generate.generate_diffreact(
            folder / generate.DIFFREACT_FILENAME,
            n_samples=2, nx=8, ny=6, nt=5, t_final=0.5, seed=7, **QUIET,
        ),
    }  # fmt: skip


def test_file_names_are_pdebench_names():
    assert generate.advection_filename(0.1) == "1D_Advection_Sols_beta0.1.hdf5"
    assert generate.advection_filename(4) == "1D_Advection_Sols_beta4.0.hdf5"
    assert generate.cfd_filename(1e-8, 1e-8) == "1D_CFD_Rand_Eta1.e-8_Zeta1.e-8_periodic_Train.hdf5"
    assert generate.cfd_filename(0.01, 0.1) == "1D_CFD_Rand_Eta0.01_Zeta0.1_periodic_Train.hdf5"
    assert generate.DIFFREACT_FILENAME == "2D_diff-react_NA_NA.h5"


# ----------------------------------------------------------------------------- layouts


def test_advection_layout(files):
    with h5py.File(files["advection"], "r") as handle:
        assert set(handle.keys()) == {"tensor", "x-coordinate", "t-coordinate"}
        assert dict(handle.attrs) == {"beta": 0.4}
        tensor, x, t = handle["tensor"], handle["x-coordinate"][()], handle["t-coordinate"][()]
        assert tensor.shape == (3, 11, 32) and x.shape == (32,) and t.shape == (12,)
        assert tensor.dtype == x.dtype == t.dtype == np.float32
        np.testing.assert_allclose(x, (np.arange(32) + 0.5) / 32, atol=1e-7)
        np.testing.assert_allclose(t, np.arange(12) * 0.05, atol=1e-7)
        # exact transport: after t = 0.5 with beta 0.4 the profile moved by 0.2 = 6.4 cells
        first = tensor[0].astype(np.float64)
    profile = solvers.advection_initial_condition(np.random.default_rng(1))
    x64 = solvers.cell_centres(32, solvers.ADVECTION_DOMAIN)
    np.testing.assert_allclose(first[0], profile(x64), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first[-1], profile(np.mod(x64 - 0.2, 1.0)), rtol=1e-6, atol=1e-6)


def test_cfd_layout(files):
    with h5py.File(files["cfd"], "r") as handle:
        assert set(handle.keys()) == {"density", "Vx", "pressure", "x-coordinate", "t-coordinate"}
        assert dict(handle.attrs) == {"eta": 1e-8, "zeta": 1e-8}
        for key in ("density", "Vx", "pressure"):
            assert handle[key].shape == (2, 3, 32) and handle[key].dtype == np.float32
        x, t = handle["x-coordinate"][()], handle["t-coordinate"][()]
        assert x.dtype == t.dtype == np.float32
        np.testing.assert_allclose(x, -1.0 + (np.arange(32) + 0.5) / 16, atol=1e-7)
        np.testing.assert_allclose(t, np.arange(4) * 0.01, atol=1e-7)
        density = handle["density"][()]
    x64 = solvers.cell_centres(32, solvers.CFD_DOMAIN)
    initial = solvers.cfd_initial_condition(x64, np.random.default_rng(2))[0]
    np.testing.assert_allclose(density[0, 0], initial, rtol=1e-6)
    assert np.all(density > 0) and not np.allclose(density[:, 0], density[:, -1])


def test_diffreact_layout(files):
    with h5py.File(files["diffreact"], "r") as handle:
        assert sorted(handle.keys()) == ["0000", "0001"]
        for index, name in enumerate(["0000", "0001"]):
            group = handle[name]
            assert set(group.keys()) == {"data", "grid"}
            assert set(group["grid"].keys()) == {"x", "y", "t"}
            data = group["data"]
            assert data.shape == (5, 6, 8, 2) and data.dtype == np.float32
            assert data.compression == "lzf"
            assert group["grid/x"].shape == (8,) and group["grid/y"].shape == (6,)
            assert group["grid/t"].shape == (5,)
            for key in ("grid/x", "grid/y", "grid/t"):
                assert group[key].dtype == np.float32
            np.testing.assert_allclose(group["grid/t"][()], np.linspace(0, 0.5, 5), atol=1e-7)
            sim = yaml.safe_load(group.attrs["config"])["sim"]
            assert sim == {
                "Du": 1e-3, "Dv": 5e-3, "k": 5e-3, "t": 0.5, "tdim": 5,
                "x_left": -1.0, "x_right": 1.0, "xdim": 8,
                "y_bottom": -1.0, "y_top": 1.0, "ydim": 6, "n": 1, "seed": 7 + index,
            }  # fmt: skip
            # stored order (t, y, x): the t = 0 slice is the seeded normal draw of shape (y, x)
            u0, v0 = solvers.diffreact_initial_condition(8, 6, seed=7 + index)
            np.testing.assert_allclose(data[0], np.stack([u0, v0], axis=-1), rtol=1e-6)


# ----------------------------------------------------------------------------- reader


def test_reader_returns_what_was_written_advection(files):
    sample = read_pdebench_sample(files["advection"], "advection", sample_index=-1)
    assert isinstance(sample, PdeSample)
    assert sample.pde == "advection" and sample.channels == ("u",)
    assert sample.sample_index == -1 and sample.source == str(files["advection"])
    assert sample.fields.dtype == np.float64 and sample.fields.shape == (11, 32, 1)
    with h5py.File(files["advection"], "r") as handle:
        np.testing.assert_array_equal(sample.fields[..., 0], handle["tensor"][2])
        np.testing.assert_array_equal(sample.grids["x"], handle["x-coordinate"][()])
        np.testing.assert_array_equal(sample.grids["t"], handle["t-coordinate"][:11])
    assert set(sample.grids) == {"x", "t"}
    assert sample.params == {"beta": pytest.approx(0.4)}
    assert sample.domain["x"] == pytest.approx((0.0, 1.0))
    assert sample.domain["t"] == pytest.approx((0.0, 0.5))


def test_reader_returns_what_was_written_cfd(files):
    sample = read_pdebench_sample(files["cfd"], "cfd", sample_index=0)
    assert sample.channels == ("density", "Vx", "pressure")
    assert sample.fields.shape == (3, 32, 3)
    with h5py.File(files["cfd"], "r") as handle:
        for channel, key in enumerate(sample.channels):
            np.testing.assert_array_equal(sample.fields[..., channel], handle[key][0])
    assert sample.params == pytest.approx({"eta": 1e-8, "zeta": 1e-8, "gamma": 5.0 / 3.0})
    assert sample.domain["x"] == pytest.approx((-1.0, 1.0))
    assert sample.domain["t"] == pytest.approx((0.0, 0.02))
    assert sample.grids["t"].shape == (3,)


def test_reader_returns_what_was_written_diffreact(files):
    sample = read_pdebench_sample(files["diffreact"], "diffreact", sample_index=-2)
    assert sample.channels == ("u", "v") and sample.fields.shape == (5, 6, 8, 2)
    with h5py.File(files["diffreact"], "r") as handle:
        np.testing.assert_array_equal(sample.fields, handle["0000/data"][()])
        np.testing.assert_array_equal(sample.grids["y"], handle["0000/grid/y"][()])
    assert set(sample.grids) == {"x", "y", "t"}
    assert sample.params == pytest.approx({"Du": 1e-3, "Dv": 5e-3, "k": 5e-3})
    expected_domain = {"x": (-1.0, 1.0), "y": (-1.0, 1.0), "t": (0.0, 0.5)}
    assert set(sample.domain) == set(expected_domain)
    for key, extent in expected_domain.items():
        assert sample.domain[key] == pytest.approx(extent)


def test_reader_default_index_is_minus_ten(tmp_path):
    path = generate.generate_advection(
        tmp_path / "adv.hdf5", n_samples=12, nx=8, nt=3, t_final=0.1, **QUIET
    )
    sample = read_pdebench_sample(path, "advection")
    assert sample.sample_index == -10
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(sample.fields[..., 0], handle["tensor"][2])


def test_reader_reads_a_hand_written_pdebench_diffreact_file(tmp_path):
    # Laid out like PDEBench's own writer: OmegaConf YAML with extra blocks and YAML 1.1
    # exponent spellings that PyYAML keeps as strings; grids not assumed, read from the file.
    path = tmp_path / "2D_diff-react_NA_NA.h5"
    x = np.linspace(-0.9, 0.9, 10)
    y = np.linspace(-0.5, 0.5, 3)
    config = (
        "work_dir: ${hydra:runtime.cwd}\nupload: false\nname: 2d_diff-react\n"
        "sim:\n  Du: 1E-3\n  Dv: 0.005\n  k: 5E-3\n  t: 5\n  seed: 0\n"
        "plot:\n  t_idx: 1.0\n"
    )
    with h5py.File(path, "w") as handle:
        group = handle.create_group("0000")
        group.create_dataset("data", data=np.ones((4, 3, 10, 2)), dtype="float32")
        group.create_dataset("grid/x", data=x, dtype="float32")
        group.create_dataset("grid/y", data=y, dtype="float32")
        group.create_dataset("grid/t", data=np.linspace(0, 5, 4), dtype="float32")
        group.attrs["config"] = config
    sample = read_pdebench_sample(path, "diffreact", sample_index=0)
    assert sample.params == pytest.approx({"Du": 1e-3, "Dv": 5e-3, "k": 5e-3})
    assert sample.domain["x"] == pytest.approx((-1.0, 1.0))
    assert sample.domain["y"] == pytest.approx((-0.75, 0.75))  # from the file, not assumed
    assert sample.domain["t"] == pytest.approx((0.0, 5.0))


# ------------------------------------------------------------------------ malformed files


def _broken_copy(source: Path, tmp_path: Path, edit) -> Path:
    target = tmp_path / source.name
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        edit(handle)
    return target


def _replace(handle: h5py.File, key: str, value) -> None:
    del handle[key]
    handle.create_dataset(key, data=value)


@pytest.mark.parametrize(
    ("pde", "edit", "message"),
    [
        ("advection", lambda f: f.__delitem__("x-coordinate"), "missing dataset '/x-coordinate'"),
        ("advection", lambda f: f.__delitem__("tensor"), "missing dataset '/tensor'"),
        ("advection", lambda f: _replace(f, "x-coordinate", np.arange(5.0)), "'x-coordinate'"),
        ("advection", lambda f: _replace(f, "tensor", np.zeros((3, 11))), "'/tensor' has shape"),
        ("advection", lambda f: _replace(f, "t-coordinate", np.arange(4.0)), "t-coordinate"),
        ("advection", lambda f: f.attrs.__delitem__("beta"), "missing attribute 'beta'"),
        ("cfd", lambda f: f.__delitem__("Vx"), "missing dataset '/Vx'"),
        ("cfd", lambda f: _replace(f, "pressure", np.ones((2, 3, 31))), "'/pressure' has shape"),
        ("cfd", lambda f: f.attrs.__delitem__("zeta"), "missing attribute 'zeta'"),
        ("diffreact", lambda f: f["0001"].__delitem__("grid"), "missing dataset '/0001/grid/x'"),
        (
            "diffreact",
            lambda f: f["0001"].attrs.__delitem__("config"),
            "missing attribute 'config'",
        ),
        (
            "diffreact",
            lambda f: f["0001"].attrs.__setitem__("config", "sim: [unclosed"),
            "not valid YAML",
        ),
        (
            "diffreact",
            lambda f: f["0001"].attrs.__setitem__("config", "sim:\n  Du: 0.1\n  k: 0.1\n"),
            "lacks 'Dv'",
        ),
        (
            "diffreact",
            lambda f: _replace(f, "0001/grid/y", np.linspace(-1, 1, 7)),
            "'/0001/grid/y' has 7 entries, expected 6",
        ),
        (
            "diffreact",
            lambda f: _replace(f, "0001/data", np.zeros((5, 6, 8, 3))),
            "'/0001/data' has shape (5, 6, 8, 3)",
        ),
    ],
)
def test_malformed_files_name_file_and_key(files, tmp_path, pde, edit, message):
    broken = _broken_copy(files[pde], tmp_path, edit)
    with pytest.raises(PdeDataError) as caught:
        read_pdebench_sample(broken, pde, sample_index=-1)
    assert str(broken) in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("pde", "index", "count"), [("advection", 3, 3), ("cfd", -3, 2)])
def test_out_of_range_index_is_refused(files, pde, index, count):
    with pytest.raises(PdeDataError, match=f"sample_index {index} is out of range for {count}"):
        read_pdebench_sample(files[pde], pde, sample_index=index)


def test_diffreact_out_of_range_index_is_refused(files):
    with pytest.raises(PdeDataError, match="sample_index 2 is out of range for 2 samples"):
        read_pdebench_sample(files["diffreact"], "diffreact", sample_index=2)


def test_wrong_pde_or_file_is_refused(files, tmp_path):
    with pytest.raises(ValueError, match="unknown pde 'burgers'"):
        read_pdebench_sample(files["advection"], "burgers")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        read_pdebench_sample(tmp_path / "nothing.h5", "advection")
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(PdeDataError, match=r"text\.h5: not an HDF5 file.*dcnn-data advection"):
        read_pdebench_sample(not_hdf5, "advection")
    # An advection file read as CFD: the missing key is named.
    with pytest.raises(PdeDataError, match="missing dataset '/density'"):
        read_pdebench_sample(files["advection"], "cfd")


# ------------------------------------------------------------------------- writing and CLI


def test_generators_refuse_to_overwrite_and_validate_sizes(files):
    before = files["advection"].read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        generate.generate_advection(files["advection"], n_samples=1, nx=4, nt=2, **QUIET)
    assert files["advection"].read_bytes() == before
    with pytest.raises(ValueError, match="nx must be an integer >= 2"):
        generate.generate_cfd(files["cfd"].with_name("new.hdf5"), nx=1, **QUIET)
    assert not files["cfd"].with_name("new.hdf5").exists()


def test_cli_writes_file_and_refuses_to_overwrite(tmp_path, capsys):
    arguments = ["advection", "--out", str(tmp_path / "out"), "--beta", "0.2", "--n-samples",
                 "2", "--nx", "16", "--nt", "5", "--seed", "3", "--quiet"]  # fmt: skip
    assert generate.main(arguments) == 0
    path = tmp_path / "out" / "1D_Advection_Sols_beta0.2.hdf5"
    assert capsys.readouterr().out.strip() == str(path)
    first = read_pdebench_sample(path, "advection", sample_index=1)
    assert first.fields.shape == (5, 16, 1) and first.params["beta"] == pytest.approx(0.2)
    contents = path.read_bytes()

    assert generate.main(arguments) == 1
    error = capsys.readouterr().err
    assert str(path) in error and "--overwrite" in error
    assert path.read_bytes() == contents

    assert generate.main([*arguments[:-2], "4", "--quiet", "--overwrite"]) == 0
    second = read_pdebench_sample(path, "advection", sample_index=1)
    assert not np.array_equal(first.fields, second.fields)  # new seed, replaced file


def test_cli_full_sizes_with_explicit_override(tmp_path):
    arguments = ["advection", "--full", "--n-samples", "2", "--out", str(tmp_path), "--quiet"]
    assert generate.main(arguments) == 0
    with h5py.File(tmp_path / generate.advection_filename(0.1), "r") as handle:
        assert handle["tensor"].shape == (2, 201, 1024)
        assert handle["t-coordinate"].shape == (202,)
        np.testing.assert_allclose(handle["t-coordinate"][-1], 2.01, rtol=1e-6)


@pytest.mark.parametrize(
    ("arguments", "name", "pde"),
    [
        (["cfd", "--n-samples", "1", "--nx", "16", "--nt", "2", "--t-final", "0.01"],
         "1D_CFD_Rand_Eta1.e-8_Zeta1.e-8_periodic_Train.hdf5", "cfd"),
        (["diffreact", "--n-samples", "1", "--nx", "6", "--ny", "4", "--nt", "3"],
         "2D_diff-react_NA_NA.h5", "diffreact"),
    ],
)  # fmt: skip
def test_cli_other_pdes(tmp_path, arguments, name, pde):
    assert generate.main([*arguments, "--out", str(tmp_path), "--quiet"]) == 0
    sample = read_pdebench_sample(tmp_path / name, pde, sample_index=0)
    assert sample.fields.shape[0] == int(arguments[arguments.index("--nt") + 1])


def test_cli_rejects_bad_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        generate.main(["advection", "--nx", "0", "--out", str(tmp_path)])
    assert "positive integer" in capsys.readouterr().err
