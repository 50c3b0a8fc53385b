"""SchNet energy model: PyG's SchNet layers driven by our own (periodic-aware) neighbour graph."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.nn.models import schnet as pyg_schnet

from dcnn.data.neighbors import reverse_edges
from dcnn.models.triplets import edge_vectors


class SchNet(pyg_schnet.SchNet):
    """PyG SchNet that reads a neighbour list from the batch instead of calling ``radius_graph``.

    PyG's own graph construction needs torch-cluster and ignores periodic cells; here the
    interatomic vectors are rebuilt from positions and cell shifts inside the forward pass, so
    they stay differentiable with respect to the positions (forces by autograd).

    The layers and their parameters are PyG's; the interaction is evaluated here with the same
    arithmetic in a cheaper order. A filter depends on the distance only, and a full neighbour
    list holds every pair twice (i -> j and j -> i, the same distance), so each interaction's
    filter network, which does most of the work, runs on one edge of each pair and is shared
    with its reverse; messages are gathered and summed with ``index_add`` instead of PyG's
    ``propagate``. Gathers use ``index_select``: the backward of ``x[index]`` is an accumulating
    ``index_put``, which made a training step 1.7x slower on two CPU threads. The result equals
    PyG's forward (tested to round-off).

    Input: a batch dict with ``numbers`` (N,), ``positions`` (N, 3), ``batch`` (N,),
    ``n_atoms`` (B,), ``edge_index`` (2, E) and ``edge_shift`` (E, 3), optionally
    ``edge_reverse`` (E,) (the collate provides it). Output: energy (B,).
    """

    # Module names the activation surgery may touch ("output" = the readout activation only).
    activation_scopes = {"all": [""], "output": ["act"]}
    default_activation_scope = "all"

    def __init__(
        self,
        hidden_channels: int = 128,
        num_filters: int = 128,
        num_interactions: int = 6,
        num_gaussians: int = 50,
        cutoff: float = 10.0,
        readout: str = "add",
    ) -> None:
        super().__init__(
            hidden_channels=hidden_channels,
            num_filters=num_filters,
            num_interactions=num_interactions,
            num_gaussians=num_gaussians,
            cutoff=cutoff,
            readout=readout,
        )
        # PyG's default radius graph is never used; drop it so it cannot be called by mistake.
        del self.interaction_graph

    def forward(self, batch: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        source, target = batch["edge_index"]
        pair, first_of_pair = _pairs(batch)
        _, distances = edge_vectors(batch)
        distance = distances.index_select(0, first_of_pair)  # one per pair of reverse edges
        expanded = self.distance_expansion(distance)
        smooth_cutoff = 0.5 * (torch.cos(distance * math.pi / self.cutoff) + 1.0)

        h = self.embedding(batch["numbers"])
        for interaction in self.interactions:
            conv = interaction.conv
            filters = (interaction.mlp(expanded) * smooth_cutoff[:, None]).index_select(0, pair)
            messages = conv.lin1(h).index_select(0, source) * filters
            aggregated = messages.new_zeros(len(h), messages.shape[1]).index_add(
                0, target, messages
            )
            h = h + interaction.lin(interaction.act(conv.lin2(aggregated)))
        h = self.lin2(self.act(self.lin1(h)))
        n_frames = batch["n_atoms"].shape[0]
        return self.readout(h, batch["batch"], dim=0, dim_size=n_frames).squeeze(-1)


def _pairs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """For each edge the index of its pair, and the first edge of each pair (E / 2,)."""
    reverse = batch.get("edge_reverse")
    if reverse is None:
        reverse = reverse_edges(batch["edge_index"], batch["edge_shift"], len(batch["numbers"]))
    first = torch.minimum(torch.arange(len(reverse), device=reverse.device), reverse)
    first_of_pair, pair = torch.unique(first, sorted=True, return_inverse=True)
    return pair, first_of_pair
