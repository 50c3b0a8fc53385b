"""GemNet-T energy model (Gasteiger et al. 2021, "GemNet: Universal Directional Graph Neural
Networks for Molecules"), in the OCP variant Lo & Huang trained, with gradient forces.

Plain torch on our neighbour lists: no torch-scatter/torch-sparse/torch-cluster, no radius graph
inside the model. The layers are in ``dcnn.models.gemnet_blocks`` (the triplet interaction is
``TripletInteraction``); /work/shared/reference/models.md sections 4 to 6 is the specification.

Forward pass, as OCP's GemNetT with ``direct_forces=False``:

1. edge vectors from the live positions (forces by autograd are the true -dE/dx), triplets
   (b -> a, c -> a) of distinct edges into the same atom, and ``id_swap`` (the reverse edge);
2. RBF: (1 - 21x^5 + 35x^6 - 15x^7) * Gaussians on x = d / cutoff; CBF: its own RBF of d_ca and
   Y_l0(cos phi_cab), l < num_spherical;
3. atom embedding Embedding(num_elements)[Z - 1]; edge embedding Dense([h_s, h_t, rbf]);
4. output block 0, then per interaction block the block and its output block; the per-atom
   energies of all output blocks are summed, then summed over the atoms of each frame
   (extensive) or averaged (intensive).

Differences from OCP (all harmless for MD17 and stated here so that they are not surprises):
OCP reorders edges (s < t edges followed by their reverses) to find ``id_swap`` by offset; we
look the reverse edge up in the full neighbour list instead. OCP clamps cos(phi) to [-1, 1],
which zeroes its gradient wherever rounding takes it past 1 (collinear atoms); here the cosine
is not clamped: the Legendre polynomials are defined there and the gradient stays the true one.
OCP's trainer divides the gradients of the four shared projections by the number of blocks
that use them (``shared_parameters``); that is a training-loop feature not reproduced here
(Adam is nearly invariant to it).
"""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from dcnn.data.neighbors import reverse_edges
from dcnn.models.gemnet_blocks import (
    CircularBasisDownProjection,
    Dense,
    EdgeEmbedding,
    InteractionBlock,
    OutputBlock,
    scatter_sum,
)
from dcnn.models.radial import GaussianBasis, polynomial_envelope
from dcnn.models.triplets import (
    cosine_between,
    edge_vectors,
    gemnet_triplets,
    legendre_harmonics,
)

# OCP's fitted scale factors for GemNet-dT (gemnet-dT.json, "tri_gaussian128"; [P] loads the
# same file), as listed in models.md section 4. Fixed constants: never trained. Block i of the
# interactions uses entry i - 1 of the first three lists, output block i entry i of the last.
# ("OutBlock_*_had" belongs to the direct-force head, which gradient forces do not have.)
PUBLISHED_SCALE_FACTORS: dict[str, tuple[float, ...]] = {
    "TripInteraction_had_rbf": (18.87, 16.11, 15.02),
    "TripInteraction_sum_cbf": (8.00, 7.61, 7.03),
    "AtomUpdate_sum": (1.22, 0.97, 0.89),
    "OutBlock_sum": (1.64, 1.11, 0.95, 0.91),
}


def _published(name: str, index: int) -> float:
    values = PUBLISHED_SCALE_FACTORS[name]
    if index < len(values):
        return values[index]
    # OCP leaves a scale factor the file lacks at 0 = "not fitted", i.e. identity.
    warnings.warn(
        f"GemNetT: no published scale factor {name}[{index}] (the published file covers 3 "
        "interaction blocks); using 1.0 as OCP does for an unfitted factor",
        stacklevel=3,
    )
    return 1.0


class RadialBasis(nn.Module):
    """GemNet's RBF: polynomial envelope (exponent p) times Gaussians, both of d / cutoff.

    With p = 5 the envelope is 1 - 21x^5 + 35x^6 - 15x^7 (zero with two derivatives at x = 1);
    the Gaussians have centres evenly spaced on [0, 1] and a width equal to their spacing (PyG's
    GaussianSmearing(0, 1, num_radial), as OCP uses). No trainable parameters.
    """

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int = 5) -> None:
        super().__init__()
        self.inv_cutoff = 1.0 / float(cutoff)
        self.envelope_exponent = int(envelope_exponent)
        self.gaussians = GaussianBasis(0.0, 1.0, num_radial)

    def forward(self, distance: Tensor) -> Tensor:
        x = distance * self.inv_cutoff
        return polynomial_envelope(x, self.envelope_exponent)[:, None] * self.gaussians(x)


class GemNetT(nn.Module):
    """GemNet-T energy model E(batch) -> (B,), forces from ``dcnn.models.forces``.

    Input: a batch dict with ``numbers`` (N,), ``positions`` (N, 3), ``batch`` (N,), ``n_atoms``
    (B,), ``edge_index`` (2, E) (a full neighbour list: both directions of every pair) and
    ``edge_shift`` (E, 3). Defaults are Lo & Huang's (OCP's class defaults with gradient forces).
    """

    # Module names the activation surgery may touch. "output": the paper replaced the
    # ScaledSiLU of out_blocks[i].layers[0] and layers[1..num_atom].dense_mlp[0, 1] (models.md
    # section 4); those are exactly the activations inside out_blocks (dense_rbf and out_energy
    # have none), so the whole out_blocks list is the scope.
    activation_scopes: dict[str, list[str]] = {"all": [""], "output": ["out_blocks"]}
    default_activation_scope = "output"
    # No normalization layers; the fixed scale factors are not normalization.
    normalization_layers: tuple[str, ...] = ()

    def __init__(
        self,
        num_spherical: int = 7,
        num_radial: int = 128,
        num_blocks: int = 3,
        emb_size_atom: int = 512,
        emb_size_edge: int = 512,
        emb_size_trip: int = 64,
        emb_size_rbf: int = 16,
        emb_size_cbf: int = 16,
        emb_size_bil_trip: int = 64,
        num_before_skip: int = 1,
        num_after_skip: int = 2,
        num_concat: int = 1,
        num_atom: int = 3,
        cutoff: float = 6.0,
        envelope_exponent: int = 5,
        extensive: bool = True,
        num_elements: int = 83,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"GemNetT: num_blocks must be >= 1, got {num_blocks}")
        if not cutoff > 0:
            raise ValueError(f"GemNetT: cutoff must be > 0, got {cutoff}")
        self.num_blocks = int(num_blocks)
        self.num_spherical = int(num_spherical)
        self.cutoff = float(cutoff)
        self.extensive = bool(extensive)
        self.num_elements = int(num_elements)

        # Basis functions: the RBF, and the CBF's own radial basis (same form, separate module).
        self.radial_basis = RadialBasis(num_radial, cutoff, envelope_exponent)
        self.radial_basis_cbf3 = RadialBasis(num_radial, cutoff, envelope_exponent)

        # Projections of the bases shared by all blocks.
        self.mlp_rbf3 = Dense(num_radial, emb_size_rbf, activation=False)
        self.mlp_cbf3 = CircularBasisDownProjection(num_spherical, num_radial, emb_size_cbf)
        self.mlp_rbf_h = Dense(num_radial, emb_size_rbf, activation=False)
        self.mlp_rbf_out = Dense(num_radial, emb_size_rbf, activation=False)

        # Embeddings: element Z has row Z - 1, initialised uniformly on [-sqrt(3), sqrt(3)].
        self.atom_emb = nn.Embedding(num_elements, emb_size_atom)
        nn.init.uniform_(self.atom_emb.weight, -(3**0.5), 3**0.5)
        self.edge_emb = EdgeEmbedding(emb_size_atom, num_radial, emb_size_edge)

        self.int_blocks = nn.ModuleList(
            [
                InteractionBlock(
                    emb_size_atom=emb_size_atom,
                    emb_size_edge=emb_size_edge,
                    emb_size_trip=emb_size_trip,
                    emb_size_rbf=emb_size_rbf,
                    emb_size_cbf=emb_size_cbf,
                    emb_size_bil_trip=emb_size_bil_trip,
                    num_before_skip=num_before_skip,
                    num_after_skip=num_after_skip,
                    num_concat=num_concat,
                    num_atom=num_atom,
                    scale_rbf=_published("TripInteraction_had_rbf", i),
                    scale_cbf_sum=_published("TripInteraction_sum_cbf", i),
                    scale_atom_sum=_published("AtomUpdate_sum", i),
                )
                for i in range(num_blocks)
            ]
        )
        self.out_blocks = nn.ModuleList(
            [
                OutputBlock(
                    emb_size_atom,
                    emb_size_edge,
                    emb_size_rbf,
                    num_atom,
                    scale_sum=_published("OutBlock_sum", i),
                )
                for i in range(num_blocks + 1)
            ]
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        numbers = batch["numbers"]
        edge_index = batch["edge_index"]
        source, target = edge_index
        n_atoms = numbers.shape[0]
        n_frames = batch["n_atoms"].shape[0]
        if n_atoms and (int(numbers.min()) < 1 or int(numbers.max()) > self.num_elements):
            raise ValueError(
                f"GemNetT: atomic numbers must lie in 1..{self.num_elements} (num_elements), "
                f"got {int(numbers.min())}..{int(numbers.max())}"
            )

        vectors, distance = edge_vectors(batch)
        triplets = gemnet_triplets(edge_index, n_atoms)
        id_swap = batch.get("edge_reverse")  # the collate computes it once per batch
        if id_swap is None:
            id_swap = reverse_edges(edge_index, batch["edge_shift"], n_atoms)
        ba, ca, rank = triplets.ba, triplets.ca, triplets.rank

        # phi_cab, as in GemNet: the angle at atom a between the edges c -> a and b -> a, from
        # the cosine of their vectors (both point into a, so it equals the angle between a -> c
        # and a -> b); no arccos, no clamp (see the module docstring).
        cos_cab = cosine_between(vectors.index_select(0, ca), vectors.index_select(0, ba))
        harmonics = legendre_harmonics(cos_cab, self.num_spherical)  # (T, L)
        rad_cbf3 = self.radial_basis_cbf3(distance)  # (E, R): rbf of d_ca, per edge c -> a
        rbf = self.radial_basis(distance)  # (E, R)

        h = self.atom_emb(numbers - 1)  # (N, emb_size_atom)
        m = self.edge_emb(h, rbf, source, target)  # (E, emb_size_edge)

        rbf3 = self.mlp_rbf3(rbf)
        cbf3 = self.mlp_cbf3(rad_cbf3, harmonics, ca, rank, triplets.max_per_edge)
        rbf_h = self.mlp_rbf_h(rbf)
        rbf_out = self.mlp_rbf_out(rbf)

        energy_per_atom = self.out_blocks[0](m, rbf_out, target, n_atoms)  # (N, 1)
        trip = (ba, ca, rank, triplets.max_per_edge)
        for block, out_block in zip(self.int_blocks, self.out_blocks[1:], strict=True):
            h, m = block(h, m, rbf3, cbf3, rbf_h, trip, id_swap, source, target)
            energy_per_atom = energy_per_atom + out_block(m, rbf_out, target, n_atoms)

        energy = scatter_sum(energy_per_atom[:, 0], batch["batch"], n_frames)
        if not self.extensive:
            energy = energy / batch["n_atoms"].to(energy.dtype)
        return energy
