"""SchNet energy model: PyG's SchNet layers driven by our own (periodic-aware) neighbour graph."""

from __future__ import annotations

from torch import Tensor
from torch_geometric.nn.models import schnet as pyg_schnet


class SchNet(pyg_schnet.SchNet):
    """PyG SchNet that reads a neighbour list from the batch instead of calling ``radius_graph``.

    PyG's own graph construction needs torch-cluster and ignores periodic cells; here the
    interatomic vectors are rebuilt from positions and cell shifts inside the forward pass, so
    they stay differentiable with respect to the positions (forces by autograd).

    Input: a batch dict with ``numbers`` (N,), ``positions`` (N, 3), ``batch`` (N,),
    ``n_atoms`` (B,), ``edge_index`` (2, E) and ``edge_shift`` (E, 3). Output: energy (B,).
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
        positions = batch["positions"]
        source, target = batch["edge_index"]
        vectors = positions[target] - positions[source] + batch["edge_shift"]
        edge_weight = vectors.norm(dim=-1)
        edge_attr = self.distance_expansion(edge_weight)

        h = self.embedding(batch["numbers"])
        for interaction in self.interactions:
            h = h + interaction(h, batch["edge_index"], edge_weight, edge_attr)
        h = self.lin2(self.act(self.lin1(h)))
        n_frames = batch["n_atoms"].shape[0]
        return self.readout(h, batch["batch"], dim=0, dim_size=n_frames).squeeze(-1)
