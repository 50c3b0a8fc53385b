"""CGCNN energy model, the OCP variant used by Lo & Huang, in plain torch.

Follows OCP's ``ocpmodels/models/cgcnn.py`` (reference/models.md, section 1) layer by layer:
Gaussian edge features of the distance (0..cutoff, no envelope), convolutions
``z = bn1(lin1([x_t, x_s, e]))``, message ``sigmoid(z1) * softplus(z2)`` summed at the target,
update ``softplus(ln1(aggregate) + x)``, then a Softplus MLP readout and ``Linear(1)``.
Scatter sums use ``index_add`` (no torch-scatter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcnn.models.radial import GaussianBasis
from dcnn.models.triplets import edge_vectors

READOUTS = ("sum", "mean")


class CGCNNConv(nn.Module):
    """One OCP CGCNN convolution on a directed neighbour graph (edge s -> t updates t).

    The gate (sigmoid * softplus) and the update's softplus are plain function calls, as in OCP
    and [P] (created inline there, so the paper kept them): activation surgery does not see them.
    """

    def __init__(self, node_dim: int, edge_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(2 * node_dim + edge_dim, 2 * node_dim)
        self.bn1 = nn.BatchNorm1d(2 * node_dim)
        self.ln1 = nn.LayerNorm(node_dim)
        nn.init.xavier_uniform_(self.lin1.weight)  # OCP's reset_parameters
        nn.init.zeros_(self.lin1.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        source, target = edge_index
        z = self.bn1(
            self.lin1(
                torch.cat([x.index_select(0, target), x.index_select(0, source), edge_attr], dim=1)
            )
        )
        gate, core = z.chunk(2, dim=1)
        messages = torch.sigmoid(gate) * F.softplus(core)
        aggregate = torch.zeros_like(x).index_add(0, target, messages)
        return F.softplus(self.ln1(aggregate) + x)


class CGCNN(nn.Module):
    """CGCNN (OCP version) on the batch's neighbour list; returns the energy per structure (B,).

    What follows OCP / [P] exactly: layer sizes, Gaussian edge basis (``num_gaussians`` centres
    on [0, cutoff], width = spacing, no envelope), the convolution (BatchNorm1d on the messages,
    LayerNorm on the aggregate), xavier init of ``lin1``, the readout MLP
    ``conv_to_fc = [Linear, Softplus]``, ``fcs = (num_fc_layers - 1) x [Linear, Softplus]``,
    ``fc_out = Linear(fc_feat_size, 1)``. OCP's ``bond_feat_dim`` equals ``num_gaussians``
    (both 100 in [P]), so only the latter is an argument here.

    What differs, and why:

    - Element features: OCP indexes a frozen 92-dim k-hot table (a data file of OCP, not
      available offline) by Z - 1 and applies ``Linear(92, atom_embedding_size)``. Here the
      fixed table is a one-hot of Z - 1 over ``num_elements`` (100) elements, followed by the
      same kind of trainable Linear. One-hot then Linear can represent any fixed table then
      Linear (``table @ W`` is just a (100, H) matrix), so OCP's model is a special case; the
      chemical prior of the k-hot table is lost. ``Linear(100, 512)`` has 4,096 more weights
      than ``Linear(92, 512)``.
    - Readout: ``readout="sum"`` (default) applies the readout MLP to every atom and sums, so
      the energy is extensive. ``readout="mean"`` reproduces OCP: mean-pool the atom features
      first, then the MLP (an intensive energy, as in the paper's runs).
    - Graph: read from the batch (full, periodic-aware list built with ``cutoff``), edge
      vectors rebuilt from the live positions, so autograd forces are the true -dE/dx. OCP/[P]
      used radius_graph with 50 neighbours at most and no periodic cell.

    Caveat (models.md section 5): no envelope, so E jumps when a pair crosses the cutoff.
    """

    activation_scopes = {"all": [""], "output": ["conv_to_fc", "fcs"]}
    default_activation_scope = "output"  # [P]: IReLU at conv_to_fc[1], fcs[1], fcs[3]
    normalization_layers: tuple[str, ...]

    def __init__(
        self,
        atom_embedding_size: int = 64,
        num_graph_conv_layers: int = 6,
        fc_feat_size: int = 128,
        num_fc_layers: int = 4,
        num_gaussians: int = 50,
        cutoff: float = 6.0,
        readout: str = "sum",
        num_elements: int = 100,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"CGCNN: readout must be one of {READOUTS}, got {readout!r}")
        if num_fc_layers < 1 or num_graph_conv_layers < 1:
            raise ValueError("CGCNN: need num_fc_layers >= 1 and num_graph_conv_layers >= 1")
        self.cutoff = float(cutoff)
        self.readout = readout
        self.num_elements = num_elements
        self.distance_expansion = GaussianBasis(0.0, self.cutoff, num_gaussians)
        self.embedding_fc = nn.Linear(num_elements, atom_embedding_size)
        self.convs = nn.ModuleList(
            CGCNNConv(atom_embedding_size, num_gaussians) for _ in range(num_graph_conv_layers)
        )
        self.conv_to_fc = nn.Sequential(nn.Linear(atom_embedding_size, fc_feat_size), nn.Softplus())
        if num_fc_layers > 1:
            layers: list[nn.Module] = []
            for _ in range(num_fc_layers - 1):
                layers += [nn.Linear(fc_feat_size, fc_feat_size), nn.Softplus()]
            self.fcs = nn.Sequential(*layers)
        else:
            self.fcs = nn.Identity()
        self.fc_out = nn.Linear(fc_feat_size, 1)
        self.normalization_layers = tuple(
            f"convs.{i}.{name}" for i in range(num_graph_conv_layers) for name in ("bn1", "ln1")
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        positions = batch["positions"]
        _, distances = edge_vectors(batch)
        edge_attr = self.distance_expansion(distances)
        # One-hot of Z - 1 (F.one_hot rejects Z outside 1..num_elements).
        elements = F.one_hot(batch["numbers"] - 1, self.num_elements).to(positions.dtype)
        h = self.embedding_fc(elements)
        for conv in self.convs:
            h = conv(h, batch["edge_index"], edge_attr)

        n_frames = batch["n_atoms"].shape[0]
        frame = batch["batch"]
        if self.readout == "mean":  # OCP: global_mean_pool, then the MLP
            pooled = h.new_zeros(n_frames, h.shape[1]).index_add(0, frame, h)
            pooled = pooled / batch["n_atoms"].to(h.dtype)[:, None]
            return self.fc_out(self.fcs(self.conv_to_fc(pooled))).squeeze(-1)
        per_atom = self.fc_out(self.fcs(self.conv_to_fc(h))).squeeze(-1)
        return per_atom.new_zeros(n_frames).index_add(0, frame, per_atom)
