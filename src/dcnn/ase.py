"""An ASE calculator for a trained run: energy and forces of any ``ase.Atoms``.

    calc = DcnnCalculator.from_run("outputs/runs/2026-12-01/12-00-00")
    atoms.calc = calc
    atoms.get_potential_energy(), atoms.get_forces()

The calculator rebuilds the run's model from its ``config_resolved.yaml`` (the same activation
and normalization surgery), loads the weights and the fitted label transform from
``checkpoints/last.ckpt``, and answers in the data set's units (``calc.units``: kcal/mol and
kcal/mol/Angstrom for MD17 runs, eV and eV/Angstrom for ASE data; train with
``dataset.report_energy_unit=eV`` to have ASE's own units for dynamics). Periodic cells are
honoured like in training; positions are in Angstrom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from omegaconf import OmegaConf
from torch import nn

from dcnn.build import build_model
from dcnn.data.atoms import AtomsCollate, AtomsData, AtomsDataset
from dcnn.models.forces import EnergyForceModel
from dcnn.rescaling import LabelScaler
from dcnn.runs.checkpoint import last_checkpoint
from dcnn.runs.record import CONFIG_FILE, read_record

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _frame(atoms: Atoms) -> AtomsData:
    return AtomsData(
        numbers=atoms.numbers,
        positions=atoms.positions,
        offsets=np.array([0, len(atoms)]),
        energy=np.zeros(1),
        forces=np.zeros((len(atoms), 3)),
        cell=atoms.cell.array[None],
        pbc=np.asarray(atoms.pbc)[None],
        frame_ids=np.zeros(1, dtype=np.int64),
    )


class DcnnCalculator(Calculator):
    """An ASE calculator around an energy model and the label transform it was trained with."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        energy_model: nn.Module,
        scaler: LabelScaler,
        cutoff: float,
        units: dict[str, str],
        dtype: str = "float32",
        device: str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; expected one of {', '.join(DTYPES)}")
        self.dtype = DTYPES[dtype]
        self.device = torch.device(device)
        self.model = EnergyForceModel(energy_model.to(self.device, self.dtype).eval())
        self.scaler = scaler.to(self.device)
        self.collate = AtomsCollate(cutoff)
        self.units = dict(units)

    @classmethod
    def from_run(cls, run_folder: str | Path, dtype: str = "float32", device: str = "cpu"):
        """The calculator of the run in ``run_folder`` (a ``dcnn-train`` output folder)."""
        folder = Path(run_folder)
        checkpoint_path = last_checkpoint(folder)
        for needed in (folder / CONFIG_FILE, checkpoint_path):
            if not needed.is_file():
                raise FileNotFoundError(
                    f"{needed} is missing: DcnnCalculator.from_run needs a dcnn-train run folder "
                    f"with {CONFIG_FILE} and checkpoints/last.ckpt"
                )
        config = OmegaConf.load(folder / CONFIG_FILE)
        if config.task != "potential":
            raise ValueError(f"{folder} is a {config.task} run; the calculator needs a potential")
        record = read_record(folder) or {}
        model, _ = build_model(config.model, config.activation, config.normalization.name)
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(_with_prefix(state, "model.energy_model."))
        scaler = LabelScaler()
        scaler.load_state_dict(_with_prefix(state, "scaler."))
        return cls(model, scaler, config.model.cutoff, record.get("units", {}), dtype, device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        item = AtomsDataset(_frame(self.atoms), dtype=self.dtype)[0]
        batch = {key: value.to(self.device) for key, value in self.collate([item]).items()}
        with torch.enable_grad():
            energy, forces = self.model(batch)
        structure = (batch["n_atoms"], batch["numbers"], batch["batch"])
        energy = self.scaler.decode_energy(energy.detach(), *structure)
        forces = self.scaler.decode_forces(forces.detach())
        self.results = {
            "energy": float(energy[0]),
            "free_energy": float(energy[0]),
            "forces": forces.cpu().numpy(),
        }


def _with_prefix(state: dict, prefix: str) -> dict:
    return {
        key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)
    }
