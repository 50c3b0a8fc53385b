"""Layers of GemNet-T (Gasteiger et al. 2021, as in OCP's ``ocpmodels/models/gemnet``), plain torch.

Written from the published architecture for this project (no torch-scatter/torch-sparse):
scatter sums are ``index_add``, the padded bilinear layer uses the triplet ranks of
``dcnn.models.triplets.gemnet_triplets``.

Edge convention (``dcnn.data.neighbors``): edge ``e`` runs from ``s = edge_index[0, e]`` to
``t = edge_index[1, e]``; in GemNet's naming an edge c -> a has source c and target a, and
messages are summed into the target.

- ``ScaledSiLU``: SiLU(x) / 0.6 (a subclass of nn.SiLU, so ``dcnn.surgery`` recognises it);
- ``Dense``: Linear without bias, then ScaledSiLU (or nothing), He-orthogonal init;
- ``ResidualLayer``: x + Dense(Dense(x)), times 1/sqrt(2);
- ``ScaleFactor``: a fixed, published constant (a buffer, never trained);
- ``EdgeEmbedding``: Dense([h_s, h_t, features]);
- ``CircularBasisDownProjection``: the shared projection of the CBF to (E, emb_size_cbf, L)
  together with the zero-padded (E, L, Kmax) harmonics;
- ``EfficientBilinear``: the bilinear layer over the padded (E, Kmax, .) triplets;
- ``TripletInteraction``, ``AtomUpdateBlock``, ``OutputBlock``, ``InteractionBlock``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INV_SQRT_2 = 1 / math.sqrt(2.0)


def he_orthogonal_init(tensor: Tensor) -> Tensor:
    """A random (semi-)orthogonal matrix, standardized to zero mean and unit variance per output
    unit, then scaled to variance 1 / fan_in (OCP GemNet's initializer).

    For a 3-d weight the last axis is the output axis and fan_in is the product of the others.
    """
    with torch.no_grad():
        nn.init.orthogonal_(tensor)
        if tensor.dim() == 3:
            fan_in = tensor.shape[0] * tensor.shape[1]
            axis: int | list[int] = [0, 1]
        else:
            fan_in = tensor.shape[1]
            axis = 1
        variance, mean = torch.var_mean(tensor, dim=axis, unbiased=True, keepdim=True)
        tensor.copy_((tensor - mean) / (variance + 1e-6) ** 0.5 * (1 / fan_in) ** 0.5)
    return tensor


class ScaledSiLU(nn.SiLU):
    """SiLU(x) / 0.6, GemNet's activation.

    A subclass of nn.SiLU without child modules: the activation surgery (``isinstance`` against
    ``dcnn.activations.ACTIVATION_MODULE_TYPES``) replaces this module as a whole, as the paper
    did (IReLU in its place loses the 1/0.6 factor).
    """

    scale_factor = 1 / 0.6

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x) * self.scale_factor


class Dense(nn.Module):
    """Linear layer (no bias by default) followed by ScaledSiLU, or by nothing when
    ``activation=False``."""

    def __init__(
        self, in_features: int, out_features: int, activation: bool = True, bias: bool = False
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self._activation: nn.Module = ScaledSiLU() if activation else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        he_orthogonal_init(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self._activation(self.linear(x))


class ResidualLayer(nn.Module):
    """(x + Dense(Dense(x))) / sqrt(2)."""

    def __init__(self, units: int, n_layers: int = 2) -> None:
        super().__init__()
        self.dense_mlp = nn.Sequential(*[Dense(units, units) for _ in range(n_layers)])

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.dense_mlp(x)) * INV_SQRT_2


class ScaleFactor(nn.Module):
    """Multiplies by a fixed constant, held as a buffer (in the state dict, never trained).

    OCP fitted these once (sqrt(var_in / var_out) on OC20) and loads them from a file as
    Parameters with requires_grad=False; 0 there means "not fitted" = identity.
    """

    scale_factor: Tensor

    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("scale_factor", torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_factor

    def extra_repr(self) -> str:
        return f"{float(self.scale_factor):g}"


def scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Sum of rows of ``values`` into ``size`` rows chosen by ``index`` (torch_scatter's sum)."""
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add(0, index, values)


class EdgeEmbedding(nn.Module):
    """m_st = Dense([h_s, h_t, features_st]) with ScaledSiLU."""

    def __init__(self, atom_features: int, edge_features: int, out_features: int) -> None:
        super().__init__()
        self.dense = Dense(2 * atom_features + edge_features, out_features)

    def forward(self, h: Tensor, features: Tensor, source: Tensor, target: Tensor) -> Tensor:
        return self.dense(
            torch.cat([h.index_select(0, source), h.index_select(0, target), features], dim=-1)
        )


class CircularBasisDownProjection(nn.Module):
    """The CBF in GemNet's efficient form, projected once and shared by all blocks.

    The CBF of a triplet (b -> a, c -> a) is rbf(d_ca)_n * Y_l0(cos phi_cab)_l. Its projection
    with a weight (L, n_radial, emb_size_cbf) factorises into a per-edge part
    ``rbf_w`` (E, emb_size_cbf, L) and the harmonics placed in a zero-padded
    ``harmonics`` (E, L, Kmax): row ``ca``, column ``rank`` of the triplet.
    """

    def __init__(self, num_spherical: int, num_radial: int, emb_size_cbf: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_spherical, num_radial, emb_size_cbf))
        he_orthogonal_init(self.weight)

    def forward(
        self, rbf: Tensor, harmonics: Tensor, ca: Tensor, rank: Tensor, max_per_edge: int
    ) -> tuple[Tensor, Tensor]:
        # (E, R) x (L, R, C) -> (E, C, L)
        rbf_w = torch.einsum("er,lrc->ecl", rbf, self.weight)
        padded = harmonics.new_zeros(rbf.shape[0], max_per_edge, harmonics.shape[-1])
        padded = padded.index_put((ca, rank), harmonics)
        return rbf_w, padded.transpose(1, 2)  # (E, C, L), (E, L, Kmax)


class EfficientBilinear(nn.Module):
    """Bilinear layer of the triplet messages with the CBF, summed over each edge's triplets.

    out[ca, o] = sum_{triplets k of ca} sum_{t, c, l} rbf_w[ca, c, l] Y[k, l] x[k, t] W[t, c, o]
    computed with the triplet messages x (T, emb_size) zero-padded to (E, Kmax, emb_size).
    """

    def __init__(self, emb_size: int, emb_size_cbf: int, units_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(emb_size, emb_size_cbf, units_out))
        he_orthogonal_init(self.weight)

    def forward(
        self,
        basis: tuple[Tensor, Tensor],
        x: Tensor,
        ca: Tensor,
        rank: Tensor,
        max_per_edge: int,
    ) -> Tensor:
        rbf_w, harmonics = basis  # (E, C, L), (E, L, Kmax)
        padded = x.new_zeros(rbf_w.shape[0], max_per_edge, x.shape[-1])
        padded = padded.index_put((ca, rank), x)  # (E, Kmax, emb_size)
        sum_k = torch.matmul(harmonics, padded)  # (E, L, emb_size)
        rbf_w_sum_k = torch.matmul(rbf_w, sum_k)  # (E, C, emb_size)
        return torch.einsum("ect,tco->eo", rbf_w_sum_k, self.weight)


class TripletInteraction(nn.Module):
    """GemNet-T's triplet message passing into every edge c -> a from the edges b -> a.

    x_ba = Dense(m) * (W rbf(d_ba)), scaled; down-projected to emb_size_trip; gathered per
    triplet; bilinear with the CBF (rbf(d_ca), Y_l0(cos phi_cab)) and summed over the triplets of
    c -> a, scaled; up-projected twice, and the projection meant for the reverse edge a -> c
    added through ``id_swap``; the sum is scaled by 1/sqrt(2).
    """

    def __init__(
        self,
        emb_size_edge: int,
        emb_size_trip: int,
        emb_size_bilinear: int,
        emb_size_rbf: int,
        emb_size_cbf: int,
        scale_rbf: float,
        scale_cbf_sum: float,
    ) -> None:
        super().__init__()
        self.dense_ba = Dense(emb_size_edge, emb_size_edge)
        self.mlp_rbf = Dense(emb_size_rbf, emb_size_edge, activation=False)
        self.scale_rbf = ScaleFactor(scale_rbf)
        self.mlp_cbf = EfficientBilinear(emb_size_trip, emb_size_cbf, emb_size_bilinear)
        self.scale_cbf_sum = ScaleFactor(scale_cbf_sum)
        self.down_projection = Dense(emb_size_edge, emb_size_trip)
        self.up_projection_ca = Dense(emb_size_bilinear, emb_size_edge)
        self.up_projection_ac = Dense(emb_size_bilinear, emb_size_edge)

    def forward(
        self,
        m: Tensor,
        rbf3: Tensor,
        cbf3: tuple[Tensor, Tensor],
        ba: Tensor,
        ca: Tensor,
        rank: Tensor,
        max_per_edge: int,
        id_swap: Tensor,
    ) -> Tensor:
        x_ba = self.dense_ba(m)  # (E, emb_size_edge)
        x_ba = self.scale_rbf(x_ba * self.mlp_rbf(rbf3))
        x_ba = self.down_projection(x_ba)  # (E, emb_size_trip)
        x_ba = x_ba.index_select(0, ba)  # (T, emb_size_trip)
        x = self.mlp_cbf(cbf3, x_ba, ca, rank, max_per_edge)  # (E, emb_size_bilinear)
        x = self.scale_cbf_sum(x)
        x_ca = self.up_projection_ca(x)
        x_ac = self.up_projection_ac(x).index_select(0, id_swap)  # goes to the edge a -> c
        return (x_ca + x_ac) * INV_SQRT_2


def _atom_mlp(emb_size_edge: int, emb_size_atom: int, n_residual: int) -> nn.ModuleList:
    """Dense(edge -> atom) followed by ``n_residual`` residual layers (two Dense each)."""
    layers: list[nn.Module] = [Dense(emb_size_edge, emb_size_atom)]
    layers += [ResidualLayer(emb_size_atom) for _ in range(n_residual)]
    return nn.ModuleList(layers)


class AtomUpdateBlock(nn.Module):
    """h_a = MLP(scale * sum_{c -> a} m_ca * (W rbf(d_ca)))."""

    def __init__(
        self,
        emb_size_atom: int,
        emb_size_edge: int,
        emb_size_rbf: int,
        n_residual: int,
        scale_sum: float,
    ) -> None:
        super().__init__()
        self.dense_rbf = Dense(emb_size_rbf, emb_size_edge, activation=False)
        self.scale_sum = ScaleFactor(scale_sum)
        self.layers = _atom_mlp(emb_size_edge, emb_size_atom, n_residual)

    def aggregate(self, m: Tensor, rbf: Tensor, target: Tensor, n_atoms: int) -> Tensor:
        x = self.scale_sum(scatter_sum(m * self.dense_rbf(rbf), target, n_atoms))
        for layer in self.layers:
            x = layer(x)
        return x  # (N, emb_size_atom)

    def forward(self, m: Tensor, rbf: Tensor, target: Tensor, n_atoms: int) -> Tensor:
        return self.aggregate(m, rbf, target, n_atoms)


class OutputBlock(AtomUpdateBlock):
    """The atom update's aggregation and MLP, then a Linear to one energy per atom (no
    activation; He-orthogonal init as OCP's default ``output_init``). GemNet's direct-force head
    is left out: forces are -dE/dx."""

    def __init__(
        self,
        emb_size_atom: int,
        emb_size_edge: int,
        emb_size_rbf: int,
        n_residual: int,
        scale_sum: float,
        num_targets: int = 1,
    ) -> None:
        super().__init__(emb_size_atom, emb_size_edge, emb_size_rbf, n_residual, scale_sum)
        self.out_energy = Dense(emb_size_atom, num_targets, activation=False)

    def forward(self, m: Tensor, rbf: Tensor, target: Tensor, n_atoms: int) -> Tensor:
        return self.out_energy(self.aggregate(m, rbf, target, n_atoms))  # (N, num_targets)


class InteractionBlock(nn.Module):
    """One GemNet-T interaction (OCP's InteractionBlockTripletsOnly).

    Edge update: (Dense(m) + TripletInteraction(m)) / sqrt(2), ``num_before_skip`` residual
    layers, skip (m + x) / sqrt(2), ``num_after_skip`` residual layers. Atom update:
    (h + AtomUpdate(m)) / sqrt(2). Then the edges again from the new atoms: concat layer
    Dense([h_s, h_t, m]), ``num_concat`` residual layers, (m + m2) / sqrt(2).
    """

    def __init__(
        self,
        emb_size_atom: int,
        emb_size_edge: int,
        emb_size_trip: int,
        emb_size_rbf: int,
        emb_size_cbf: int,
        emb_size_bil_trip: int,
        num_before_skip: int,
        num_after_skip: int,
        num_concat: int,
        num_atom: int,
        scale_rbf: float,
        scale_cbf_sum: float,
        scale_atom_sum: float,
    ) -> None:
        super().__init__()
        self.dense_ca = Dense(emb_size_edge, emb_size_edge)
        self.trip_interaction = TripletInteraction(
            emb_size_edge=emb_size_edge,
            emb_size_trip=emb_size_trip,
            emb_size_bilinear=emb_size_bil_trip,
            emb_size_rbf=emb_size_rbf,
            emb_size_cbf=emb_size_cbf,
            scale_rbf=scale_rbf,
            scale_cbf_sum=scale_cbf_sum,
        )
        self.layers_before_skip = nn.ModuleList(
            [ResidualLayer(emb_size_edge) for _ in range(num_before_skip)]
        )
        self.layers_after_skip = nn.ModuleList(
            [ResidualLayer(emb_size_edge) for _ in range(num_after_skip)]
        )
        self.atom_update = AtomUpdateBlock(
            emb_size_atom, emb_size_edge, emb_size_rbf, num_atom, scale_atom_sum
        )
        self.concat_layer = EdgeEmbedding(emb_size_atom, emb_size_edge, emb_size_edge)
        self.residual_m = nn.ModuleList([ResidualLayer(emb_size_edge) for _ in range(num_concat)])

    def forward(
        self,
        h: Tensor,
        m: Tensor,
        rbf3: Tensor,
        cbf3: tuple[Tensor, Tensor],
        rbf_h: Tensor,
        triplets: tuple[Tensor, Tensor, Tensor, int],
        id_swap: Tensor,
        source: Tensor,
        target: Tensor,
    ) -> tuple[Tensor, Tensor]:
        ba, ca, rank, max_per_edge = triplets
        x_skip = self.dense_ca(m)
        x3 = self.trip_interaction(m, rbf3, cbf3, ba, ca, rank, max_per_edge, id_swap)
        x = (x_skip + x3) * INV_SQRT_2
        for layer in self.layers_before_skip:
            x = layer(x)
        m = (m + x) * INV_SQRT_2
        for layer in self.layers_after_skip:
            m = layer(m)

        h = (h + self.atom_update(m, rbf_h, target, h.shape[0])) * INV_SQRT_2

        m2 = self.concat_layer(h, m, source, target)
        for layer in self.residual_m:
            m2 = layer(m2)
        m = (m + m2) * INV_SQRT_2
        return h, m
