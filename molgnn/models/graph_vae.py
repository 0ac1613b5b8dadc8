"""Dense graph VAE (GraphVAE-style, Simonovsky & Komodakis 2018) over canonical-order molecular graphs.

The encoder runs edge-type-aware message passing on the dense graph and pools to (mu, logvar); the
decoder is an MLP from z to node-class logits ``[N, A]`` and symmetric edge-class logits
``[N, N, B]``. Because ``featurize.dense_graph`` fixes a canonical atom order, the reconstruction loss
needs no graph matching; a learned slot embedding tells the encoder which slot a node sits in.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from molgnn.featurize.dense_graph import NO_BOND, PAD_NODE


class EdgeTypeMessagePassing(nn.Module):
    """One residual layer: a separate linear message per bond class, summed over bonded neighbours."""

    def __init__(self, hidden_dim: int, n_bond_types: int) -> None:
        super().__init__()
        self.n_bond_types = n_bond_types
        self.message = nn.Linear(hidden_dim, hidden_dim * n_bond_types)
        self.update = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, h: torch.Tensor, bonds: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        # h [B, N, H]; bonds [B, N, N, K] one-hot of the real bond classes; node_mask [B, N]
        b, n, hid = h.shape
        per_type = self.message(h).view(b, n, self.n_bond_types, hid)
        messages = torch.einsum("bijk,bjkh->bih", bonds, per_type)
        h = self.norm(h + self.update(torch.cat([h, messages], dim=-1)))
        return h * node_mask.unsqueeze(-1)


class GraphVAE(nn.Module):
    """Variational autoencoder of dense graphs ``(X [B, N], E [B, N, N])`` with padding node class 0."""

    def __init__(
        self,
        n_node_classes: int,
        n_edge_classes: int,
        max_nodes: int,
        *,
        latent_dim: int = 32,
        hidden_dim: int = 128,
        n_layers: int = 3,
        beta: float = 0.3,
        edge_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if n_node_classes < 2 or n_edge_classes < 2 or max_nodes < 1:
            raise ValueError(f"GraphVAE needs >= 2 node and edge classes and max_nodes >= 1, got "
                             f"{n_node_classes}, {n_edge_classes}, {max_nodes}")
        self.hparams: dict[str, Any] = dict(
            n_node_classes=n_node_classes, n_edge_classes=n_edge_classes, max_nodes=max_nodes,
            latent_dim=latent_dim, hidden_dim=hidden_dim, n_layers=n_layers, beta=beta, edge_weight=edge_weight,
        )
        self.n_node_classes, self.n_edge_classes, self.max_nodes = n_node_classes, n_edge_classes, max_nodes
        self.latent_dim, self.beta, self.edge_weight = latent_dim, beta, edge_weight

        self.node_embed = nn.Embedding(n_node_classes, hidden_dim)
        self.slot_embed = nn.Embedding(max_nodes, hidden_dim)
        self.layers = nn.ModuleList(EdgeTypeMessagePassing(hidden_dim, n_edge_classes - 1) for _ in range(n_layers))
        # Sum and mean pooling of every layer's output (jumping-knowledge readout).
        readout = 2 * hidden_dim * (n_layers + 1)
        self.to_latent = nn.Sequential(nn.Linear(readout, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, 2 * latent_dim))

        n, a, e = max_nodes, n_node_classes, n_edge_classes
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * hidden_dim), nn.SiLU(),
            nn.Linear(2 * hidden_dim, 4 * hidden_dim), nn.SiLU(),
            nn.Linear(4 * hidden_dim, n * a + n * n * e),
        )
        self.register_buffer("_triu", torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), persistent=False)

    def encode(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X [B, N] long, E [B, N, N] long) -> (mu, logvar), each ``[B, latent_dim]``."""
        node_mask = (x != PAD_NODE).float()
        bonds = F.one_hot(e, self.n_edge_classes)[..., NO_BOND + 1:].float()
        slots = torch.arange(self.max_nodes, device=x.device)
        h = (self.node_embed(x) + self.slot_embed(slots)) * node_mask.unsqueeze(-1)
        count = node_mask.sum(1, keepdim=True).clamp(min=1.0)
        pooled = [h.sum(1), h.sum(1) / count]
        for layer in self.layers:
            h = layer(h, bonds, node_mask)
            pooled += [h.sum(1), h.sum(1) / count]
        mu, logvar = self.to_latent(torch.cat(pooled, dim=-1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, latent] -> node logits [B, N, A], symmetric edge logits [B, N, N, B_e]."""
        n, a, e = self.max_nodes, self.n_node_classes, self.n_edge_classes
        out = self.decoder(z)
        node_logits = out[:, : n * a].view(-1, n, a)
        edge_logits = out[:, n * a:].view(-1, n, n, e)
        return node_logits, (edge_logits + edge_logits.transpose(1, 2)) / 2

    def loss(self, x: torch.Tensor, e: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative ELBO per molecule: reconstruction CE summed over node slots (incl. padding) and over
        the upper-triangle pairs of real atoms, plus ``beta`` * KL(q(z|G) || N(0, I)).
        Returns the parts for logging; ``loss`` is the weighted sum."""
        x, e = x.long(), e.long()
        mu, logvar = self.encode(x, e)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + noise * torch.exp(0.5 * logvar)
        node_logits, edge_logits = self.decode(z)
        # Per-graph sums (nats per molecule), so beta = 1 is the ELBO whatever max_nodes is.
        b = x.shape[0]
        node_loss = F.cross_entropy(node_logits.reshape(-1, self.n_node_classes), x.reshape(-1), reduction="sum") / b
        present = x != PAD_NODE
        pair_mask = present.unsqueeze(2) & present.unsqueeze(1) & self._triu
        edge_loss = F.cross_entropy(edge_logits[pair_mask], e[pair_mask], reduction="sum") / b
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()
        total = node_loss + self.edge_weight * edge_loss + self.beta * kl
        return {"loss": total, "node_loss": node_loss.detach(), "edge_loss": edge_loss.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def graphs_from_logits(self, node_logits: torch.Tensor, edge_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Most likely classes; edges are read from the upper triangle and mirrored, padding slots cleared."""
        x = node_logits.argmax(-1)
        e = torch.triu(edge_logits.argmax(-1), diagonal=1)
        e = e + e.transpose(1, 2)
        present = x != PAD_NODE
        e = e * (present.unsqueeze(2) & present.unsqueeze(1))
        return x, e

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``n`` draws of z ~ N(0, I): (X [n, N], E [n, N, N]) in the vocabulary's classes."""
        device = device if device is not None else next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.graphs_from_logits(*self.decode(z))
