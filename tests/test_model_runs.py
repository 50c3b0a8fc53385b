"""Every model through dcnn-train: the paper's method on MD17 and on periodic catalyst data, with
the surgery each model's table row asks for."""

from __future__ import annotations

import pytest
from helpers import compose_train

from dcnn.train import run

MODELS = ["schnet", "cgcnn", "dimenet_pp", "forcenet", "gemnet_t"]
QUICK = [
    "dataset.n_train=8",
    "dataset.n_val=4",
    "dataset.n_test=4",
    "dataset.batch_size=4",
    "dataset.eval_batch_size=4",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]
# What `surgery.txt` must say for the paper's method (IReLU where the paper put it, no
# normalization layers): replaced activations by owner prefix, removed layers by kind.
SURGERY = {
    "schnet": (["interactions.", "act"], []),
    "cgcnn": (["conv_to_fc.", "fcs."], ["BatchNorm1d", "LayerNorm"]),
    "dimenet_pp": (["output_blocks."], []),
    "forcenet": (["interactions.", "activation"], ["BatchNorm1d"]),
    "gemnet_t": (["out_blocks."], []),
}


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch):
    monkeypatch.setenv("DCNN_DATA_ROOT", str(data_root))
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="module")
def oc20_folder(data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oc20")
    for file in sorted((data_root / "oc20").glob("*.traj"))[:3]:
        (folder / file.name).symlink_to(file)
    return folder


@pytest.mark.parametrize("model", MODELS)
def test_the_papers_method_on_md17_with_each_model(tmp_path, model):
    result = run(compose_train(["experiment=md17_dc", f"model={model}", *QUICK]), tmp_path)
    assert result["status"] == "ok"
    surgery = (tmp_path / "surgery.txt").read_text().splitlines()
    replaced = [line.split()[1] for line in surgery if line.strip().startswith("replaced")]
    removed = [line for line in surgery if line.strip().startswith("removed")]
    owners, kinds = SURGERY[model]
    assert replaced and all(name.startswith(tuple(owners)) for name in replaced), replaced
    assert all(line.rstrip().endswith("-> IReLU") for line in surgery if "replaced " in line)
    assert sorted({line.split(":")[1].split("->")[0].strip() for line in removed}) == kinds


@pytest.mark.parametrize("model", MODELS)
def test_the_papers_method_on_periodic_catalysts_with_each_model(tmp_path, oc20_folder, model):
    overrides = [
        "experiment=oc_dc",
        f"model={model}",
        f"dataset.path={oc20_folder}",
        "model.cutoff=3.0",
        *QUICK,
    ]
    result = run(compose_train(overrides), tmp_path)
    assert result["status"] == "ok" and result["units"]["energy"] == "eV"
    assert result["test"]["force_mae"] > 0
