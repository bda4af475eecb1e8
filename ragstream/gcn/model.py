"""The GCN encoder, its node features, exact inference on a subset of nodes, and GAE training.

Exactness: a 2-layer GCN's output for node v depends only on v's 2-hop neighbourhood, *given*
the symmetric normalisation ``w_uv / sqrt(d_u d_v)``, which depends on degrees. Normalising the
whole graph once (``gcn_norm``) and then running ``GCNConv(normalize=False)`` layer 2 over every
edge into the targets and layer 1 over every edge into their neighbours gives the targets'
full-pass outputs (see ``embed``).
Features use fixed per-node transforms only (no global statistics), so a change stays local.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import negative_sampling

log = logging.getLogger(__name__)

LAYERS = 2  # the receptive field, in hops
# log(1 + degree) and log(1 + weighted degree), scaled to sit beside unit-length text embeddings
# (components ~0.05) instead of drowning them: unscaled, Cora link-prediction AUC fell to ~0.6.
STRUCTURAL_SCALE = 0.1


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


class GcnEncoder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        # normalize=False: the caller normalises once on the full graph (see module docstring)
        self.conv1 = GCNConv(in_dim, hidden_dim, normalize=False)
        self.conv2 = GCNConv(hidden_dim, out_dim, normalize=False)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        return self.layers(x, (edge_index, edge_weight), (edge_index, edge_weight))

    def layers(self, x: Tensor, first: tuple[Tensor, Tensor],
               second: tuple[Tensor, Tensor]) -> Tensor:
        """Each layer over its own edges: inference on a subset passes only what it needs."""
        x = F.dropout(x, self.dropout, self.training)
        # (A X) W = A (X W): layer 1 aggregates its narrower input first, which halves its cost
        h = self.conv1.propagate(first[0], x=x, edge_weight=first[1])
        h = torch.relu(self.conv1.lin(h) + self.conv1.bias)
        h = F.dropout(h, self.dropout, self.training)
        return self.conv2(h, *second)


@dataclass(frozen=True)
class GraphTensors:
    """A graph ready for the encoder: both edge directions, transformed weights, features."""

    x: Tensor            # (n, text + structural)
    edge_index: Tensor   # (2, 2m), both directions
    edge_weight: Tensor  # (2m,)

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


def edge_weight(cooccurrences: Tensor) -> Tensor:
    """1 + log(count): a pair seen once weighs 1 (plain GCN); heavy pairs do not dominate."""
    return 1.0 + torch.log(cooccurrences.clamp(min=1.0))


def build(text: Tensor, pairs: Tensor, weights: Tensor) -> GraphTensors:
    """Undirected graph from each pair stored once; features = text ++ structural."""
    n = text.shape[0]
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    w = edge_weight(weights.to(torch.float32)).repeat(2)
    degree = torch.zeros(n).index_add_(0, edge_index[1], torch.ones(edge_index.shape[1]))
    weighted = torch.zeros(n).index_add_(0, edge_index[1], w)
    structural = STRUCTURAL_SCALE * torch.stack([torch.log1p(degree), torch.log1p(weighted)], 1)
    return GraphTensors(torch.cat([text.to(torch.float32), structural], dim=1), edge_index, w)


def within_hops(seeds: Tensor, hops: int, edge_index: Tensor, num_nodes: int) -> Tensor:
    """Boolean mask of the nodes within ``hops`` of ``seeds`` (indices or a mask)."""
    mask = torch.zeros(num_nodes, dtype=torch.bool)
    mask[seeds] = True
    src, dst = edge_index
    for _ in range(hops):
        mask[dst[mask[src]]] = True
    return mask


@torch.no_grad()
def embed(model: GcnEncoder, graph: GraphTensors, targets: Tensor,
          device: torch.device) -> Tensor:
    """The full-pass embeddings of ``targets`` (a mask), computing only what they depend on:
    layer 2 over the edges into the targets, layer 1 over the edges into the targets' neighbours,
    with the weights normalised on the whole graph."""
    model.eval()
    n = graph.num_nodes
    ei, ew = gcn_norm(graph.edge_index, graph.edge_weight, n, add_self_loops=True)
    needed = within_hops(targets, LAYERS - 1, ei, n)  # whose layer-1 output layer 2 reads
    into_needed, into_targets = needed[ei[1]], targets[ei[1]]
    inputs = torch.zeros(n, dtype=torch.bool)
    inputs[ei[0][into_needed]] = True  # self-loops put every needed node in here too
    position = torch.full((n,), -1, dtype=torch.long)
    position[inputs] = torch.arange(int(inputs.sum()))
    out = model.layers(graph.x[inputs].to(device),
                       (position[ei[:, into_needed]].to(device), ew[into_needed].to(device)),
                       (position[ei[:, into_targets]].to(device), ew[into_targets].to(device)))
    return out.cpu()[position[targets]]


@dataclass(frozen=True)
class TrainResult:
    model: GcnEncoder
    loss: float
    validation_auc: float | None


def train(graph: GraphTensors, hidden_dim: int, out_dim: int, *, epochs: int, lr: float,
          dropout: float = 0.0, held_out: Tensor | None = None, seed: int = 0,
          device: torch.device | None = None) -> TrainResult:
    """GAE: reconstruct edges with an inner-product decoder against as many sampled non-edges.

    ``graph`` is the training graph; ``held_out`` (2, k) are positive pairs kept out of it to
    score the link-prediction ROC AUC against as many sampled non-edges."""
    torch.manual_seed(seed)
    device = device or pick_device()
    n = graph.num_nodes
    model = GcnEncoder(graph.x.shape[1], hidden_dim, out_dim, dropout).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    ei, ew = gcn_norm(graph.edge_index, graph.edge_weight, n, add_self_loops=True)
    x, ei, ew = graph.x.to(device), ei.to(device), ew.to(device)
    positives = graph.edge_index.to(device)
    loss = torch.tensor(math.nan)
    for epoch in range(epochs):
        model.train()
        optimiser.zero_grad()
        z = model(x, ei, ew)
        negatives = negative_sampling(positives, n, positives.shape[1])
        loss = (F.binary_cross_entropy_with_logits(_score(z, positives), torch.ones(
                    positives.shape[1], device=device))
                + F.binary_cross_entropy_with_logits(_score(z, negatives), torch.zeros(
                    negatives.shape[1], device=device)))
        loss.backward()
        optimiser.step()
        if epoch % 50 == 0:
            log.debug("gcn training", extra={"epoch": epoch, "loss": loss.item()})
    model = model.cpu().eval()
    auc = None
    if held_out is not None and held_out.shape[1]:
        with torch.no_grad():
            z = embed(model, graph, torch.ones(n, dtype=torch.bool), torch.device("cpu"))
        auc = link_auc(z, held_out, negative_sampling(graph.edge_index, n, held_out.shape[1]))
    return TrainResult(model, loss.item(), auc)


def _score(z: Tensor, pairs: Tensor) -> Tensor:
    return (z[pairs[0]] * z[pairs[1]]).sum(dim=1)


def link_auc(z: Tensor, positives: Tensor, negatives: Tensor) -> float:
    """ROC AUC of inner-product scores, positive pairs against negative pairs (Mann-Whitney U,
    ties counted half)."""
    scores = torch.cat([_score(z, positives), _score(z, negatives)]).double()
    ranks = torch.empty_like(scores)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    _, tie = torch.unique(scores, return_inverse=True)
    ties = torch.zeros(int(tie.max()) + 1, dtype=scores.dtype)
    ranks = (ties.index_add(0, tie, ranks) / ties.index_add(0, tie, torch.ones_like(ranks)))[tie]
    n_pos, n_neg = positives.shape[1], negatives.shape[1]
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def split_edges(pairs: Tensor, weights: Tensor, fraction: float,
                seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Hold out ``fraction`` of the pairs: (train pairs, train weights, held-out pairs)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(pairs.shape[1], generator=generator)
    k = int(pairs.shape[1] * fraction)
    held, kept = order[:k], order[k:]
    return pairs[:, kept], weights[kept], pairs[:, held]
