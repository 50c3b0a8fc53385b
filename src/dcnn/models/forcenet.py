"""ForceNet energy model (OCP's ForceNet with the force decoder removed, as in [P]), plain torch.

Follows OCP's ``ocpmodels/models/forcenet.py`` with ``basis="gauss"`` (reference/models.md,
section 3): element features -> Gaussian basis -> Linear; edge features (unit vector as
(v + 1) / 2 and four radius-corrected distances / cutoff) -> Gaussian basis; interaction blocks
``h += mlp_trans(sum_s lin(h)_s * W_st + center_W * lin(h))`` with
``W = mlp_edge([lin_basis(e), h_s, h_t]) * cos(pi d / 2c)``; readout ``lin``, activation,
``energy_mlp``. Forces come from autograd outside the model. Scatter sums use ``index_add``.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import atomic_masses, covalent_radii, ground_state_magnetic_moments
from torch import Tensor, nn

from dcnn.models.radial import GaussianBasis, cosine_cutoff
from dcnn.models.triplets import edge_vectors

N_TABLE = 101  # rows Z = 0..100, indexed by Z as in OCP (row 0 unused)
FEATS = ("full", "simple")
READOUTS = ("sum", "pooled")
DISTANCE_FLOOR = 1e-3  # OCP clamps the scaled distances at 1e-3 (zero gradient below)


def _periodic_table_position(z: int) -> tuple[int, int, int, int, int]:
    """Period, group (1..18; La-Yb and Ac-No: 3), block (s, p, d, f = 0..3), valence
    electrons and position within the period of element ``z``, from the table's layout."""
    noble = (0, 2, 10, 18, 36, 54, 86, 118)
    period = next(p for p in range(1, 8) if z <= noble[p])
    position = z - noble[period - 1]
    length = noble[period] - noble[period - 1]
    if length == 2:
        group = 1 if position == 1 else 18
    elif length == 8:
        group = position if position <= 2 else position + 10
    elif length == 18:
        group = position
    else:  # 32: s, f (14 elements, group 3), then d and p from Lu/Lr on
        group = position if position <= 2 else (3 if position <= 16 else position - 14)
    if group <= 2 or z == 2:
        block = 0
    elif length == 32 and 3 <= position <= 16:
        block = 3
    elif group <= 12:
        block = 2
    else:
        block = 1
    valence = 2 if z == 2 else (group if group <= 12 else group - 10)
    return period, group, block, valence, position


def element_feature_table() -> Tensor:
    """(101, 9) element features for Z = 0..100, each min-max scaled to [0, 1] over Z = 1..100.

    A deterministic SUBSTITUTE for OCP's 9 ``CONTINUOUS_EMBEDDINGS`` (an OCP data file that is
    not available offline); these are NOT OCP's numbers. Columns: Z, period, group, block,
    valence electrons, position within the period (from the periodic table's layout), and
    ASE's covalent radius (Cordero 2008), atomic mass and ground-state magnetic moment.
    Scaling follows OCP (per column over the real elements). Row 0 is zeros (OCP: NaN).
    """
    rows = []
    for z in range(1, N_TABLE):
        period, group, block, valence, position = _periodic_table_position(z)
        rows.append(
            [
                z,
                period,
                group,
                block,
                valence,
                position,
                covalent_radii[z],
                atomic_masses[z],
                ground_state_magnetic_moments[z],
            ]
        )
    table = np.asarray(rows, dtype=np.float64)
    low, high = table.min(axis=0), table.max(axis=0)
    table = (table - low) / (high - low)
    return torch.from_numpy(np.vstack([np.zeros((1, table.shape[1])), table])).float()


class FlatGaussianBasis(nn.Module):
    """OCP's ``Basis(basis_type="gauss")``: every input column through ``n`` Gaussians on
    [0, 1], flattened centre-major (index = centre * in_features + column), as OCP orders it."""

    def __init__(self, in_features: int, n: int) -> None:
        super().__init__()
        self.gauss = GaussianBasis(0.0, 1.0, n)
        self.out_dim = in_features * n

    def forward(self, x: Tensor) -> Tensor:
        return self.gauss(x).transpose(1, 2).flatten(1)


class InteractionBlock(nn.Module):
    """OCP ForceNet interaction block (ablation "none"); every activation a separate module."""

    def __init__(self, hidden: int, basis_dim: int, depth_mlp_edge: int, depth_mlp_trans: int):
        super().__init__()
        if depth_mlp_edge < 1 or depth_mlp_trans < 1:
            raise ValueError("ForceNet: depth_mlp_edge and depth_mlp_node must be >= 1")
        self.lin_basis = nn.Linear(basis_dim, hidden)
        edge: list[nn.Module] = [nn.Linear(3 * hidden, hidden)]
        for _ in range(depth_mlp_edge):
            edge += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.mlp_edge = nn.Sequential(*edge)
        self.lin = nn.Linear(hidden, hidden)
        trans: list[nn.Module] = [nn.Linear(hidden, hidden)]
        for _ in range(depth_mlp_trans):
            trans += [nn.BatchNorm1d(hidden), nn.SiLU(), nn.Linear(hidden, hidden)]
        self.mlp_trans = nn.Sequential(*trans)
        self.center_W = nn.Parameter(torch.empty(1, hidden))
        for module in [self.lin_basis, self.lin, *self.mlp_edge, *self.mlp_trans]:
            if isinstance(module, nn.Linear):  # OCP's reset_parameters
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.center_W)

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor, weight: Tensor) -> Tensor:
        source, target = edge_index
        emb = torch.cat(
            [self.lin_basis(edge_attr), h.index_select(0, source), h.index_select(0, target)], dim=1
        )
        filters = self.mlp_edge(emb) * weight[:, None]
        x = self.lin(h)
        messages = torch.zeros_like(x).index_add(0, target, x.index_select(0, source) * filters)
        return self.mlp_trans(messages + self.center_W * x)


class ForceNet(nn.Module):
    """ForceNet energy model on the batch's neighbour list; returns the energy per structure.

    What follows OCP / [P] exactly (``basis="gauss"``, ablation "none", no decoder): sizes,
    Gaussian bases (``num_freqs`` centres on [0, 1]), the 7 edge features (OCP's sign: the unit
    vector points from the receiving atom t to its neighbour s, ``(v + 1) / 2``; d, d - r_s,
    d - r_t, d - r_s - r_t divided by the cutoff, floored at 1e-3), cosine edge weight,
    interaction blocks, xavier inits, SiLU (= OCP's swish) everywhere.

    What differs, and why:

    - ``feat="full"`` element features and atomic radii are OCP data files, unavailable
      offline. Substitutes (documented in ``element_feature_table``): 9 periodic-table / ASE
      features scaled to [0, 1], and ASE's covalent radii (Angstrom) for r. Layer shapes (and
      the parameter count) are OCP's. ``feat="simple"`` is OCP's own alternative,
      ``nn.Embedding(101, hidden)[Z]`` (OCP: 100 rows, which cannot index Z = 100).
    - The floor of the scaled distances is ``torch.clamp`` (out of place) instead of OCP's
      in-place masked assignment: same values and gradients (zero below the floor).
    - Readout: ``readout="sum"`` (default) applies ``energy_mlp`` to each atom and sums, an
      exactly extensive energy; OCP/[P] (``readout="pooled"``) apply it to the summed features,
      which adds the bias once per structure instead of once per atom.
    - Tables and basis centres are buffers, not frozen Parameters (OCP: 1,810 frozen values).
    - ForceNet is not rotation invariant (raw unit-vector features; OCP relies on data
      augmentation). Caveats (models.md section 5): E is continuous at the cutoff but F is not,
      and the distance floor is a kink in F.
    """

    activation_scopes = {"all": [""], "output": ["activation"]}
    default_activation_scope = "all"  # [P]: mlp_edge[1, 3], mlp_trans[2] and model.activation
    normalization_layers: tuple[str, ...]

    def __init__(
        self,
        hidden_channels: int = 512,
        num_interactions: int = 5,
        cutoff: float = 6.0,
        feat: str = "full",
        num_freqs: int = 50,
        depth_mlp_edge: int = 2,
        depth_mlp_node: int = 1,
        readout: str = "sum",
    ) -> None:
        super().__init__()
        if feat not in FEATS:
            raise ValueError(f"ForceNet: feat must be one of {FEATS}, got {feat!r}")
        if readout not in READOUTS:
            raise ValueError(f"ForceNet: readout must be one of {READOUTS}, got {readout!r}")
        self.cutoff = float(cutoff)
        self.feat = feat
        self.readout = readout
        self.register_buffer("atom_radii", torch.tensor(covalent_radii[:N_TABLE]).float())
        if feat == "full":
            self.register_buffer("atom_map", element_feature_table())
            basis = FlatGaussianBasis(self.atom_map.shape[1], num_freqs)
            self.embedding = nn.Sequential(basis, nn.Linear(basis.out_dim, hidden_channels))
        else:
            self.embedding = nn.Embedding(N_TABLE, hidden_channels)
        self.basis_fun = FlatGaussianBasis(7, num_freqs)
        self.interactions = nn.ModuleList(
            InteractionBlock(
                hidden_channels, self.basis_fun.out_dim, depth_mlp_edge, depth_mlp_node
            )
            for _ in range(num_interactions)
        )
        self.lin = nn.Linear(hidden_channels, hidden_channels)
        self.activation = nn.SiLU()
        self.energy_mlp = nn.Linear(hidden_channels, 1)
        self.normalization_layers = tuple(
            f"interactions.{k}.mlp_trans.{3 * j + 1}"
            for k in range(num_interactions)
            for j in range(depth_mlp_node)
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        z = batch["numbers"]
        source, target = batch["edge_index"]
        vectors, distances = edge_vectors(batch)  # t - s; OCP's vector is s - t
        if self.feat == "full":
            h = self.embedding(self.atom_map[z].to(vectors.dtype))
        else:
            h = self.embedding(z)
        radii = self.atom_radii.to(vectors.dtype)
        r_s, r_t = radii[z[source]], radii[z[target]]
        scaled = torch.stack(
            [distances, distances - r_s, distances - r_t, distances - r_s - r_t], dim=1
        )
        scaled = torch.clamp(scaled / self.cutoff, min=DISTANCE_FLOOR)
        unit = (-vectors / distances[:, None] + 1) / 2  # "gauss" basis wants [0, 1]
        edge_attr = self.basis_fun(torch.cat([unit, scaled], dim=1))
        weight = cosine_cutoff(distances, self.cutoff)
        for interaction in self.interactions:
            h = h + interaction(h, batch["edge_index"], edge_attr, weight)
        h = self.activation(self.lin(h))

        n_frames = batch["n_atoms"].shape[0]
        if self.readout == "pooled":  # OCP: scatter-sum the features, then energy_mlp
            pooled = h.new_zeros(n_frames, h.shape[1]).index_add(0, batch["batch"], h)
            return self.energy_mlp(pooled).squeeze(-1)
        per_atom = self.energy_mlp(h).squeeze(-1)
        return per_atom.new_zeros(n_frames).index_add(0, batch["batch"], per_atom)
