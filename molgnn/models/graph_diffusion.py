"""DiGress-style discrete denoising diffusion over dense molecular graphs (Vignac et al. 2023).

Noise is categorical: each node type and each edge type (incl. "no bond") follows the Markov chain
``Q_t = alpha_t I + (1 - alpha_t) 1 m^T`` whose limit is ``m``, the training marginals, so the prior
already has realistic atom and bond frequencies. A dense graph transformer predicts the clean graph
from ``G_t``; training is cross-entropy on x0, sampling draws from the exact posterior
``q(z_{t-1} | z_t, x0)`` marginalised over the predicted x0. The number of atoms is drawn from the
training size distribution and absent atoms are masked everywhere.

Node classes here exclude the vocabulary's padding class (absent atoms are handled by the mask);
``sample`` and ``loss`` speak the vocabulary's encoding (padding = 0), like the graph VAE.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from molgnn.featurize.dense_graph import NO_BOND, PAD_NODE

# (X_t, E_t, t, node_mask) -> log-weights of the nodes' and edges' next classes (see GraphDiffusion.sample)
Guidance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_MASK_FILL = -1e9   # not -inf: rows of absent atoms would become NaN after softmax


# --------------------------------------------------------------------------------------- noise process
def cosine_alpha_bar(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """``alpha_bar[t]`` for t = 0..T of the cosine schedule (Nichol & Dhariwal); 1 at t=0, 0 at t=T."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = (f / f[0]).clamp(0.0, 1.0)
    alpha_bar[-1] = 0.0   # cos(pi/2)^2 is 1e-33 in floating point: make the limit exact
    return alpha_bar.float()


def transition_matrix(alpha: torch.Tensor, marginals: torch.Tensor) -> torch.Tensor:
    """``alpha I + (1 - alpha) 1 m^T`` for each alpha: ``[...] -> [..., K, K]``; rows sum to 1."""
    k = marginals.shape[0]
    eye = torch.eye(k, device=marginals.device, dtype=marginals.dtype)
    a = alpha.to(marginals.dtype)[..., None, None]
    return a * eye + (1 - a) * marginals.expand(k, k)


def posterior_over_x0(z_t: torch.Tensor, x0_probs: torch.Tensor, q_t: torch.Tensor,
                      q_bar_prev: torch.Tensor) -> torch.Tensor:
    """``p(z_{t-1} | z_t) = sum_x0 p(x0) q(z_{t-1} | z_t, x0)``, normalised.

    z_t: one-hot ``[B, M, K]``; x0_probs ``[B, M, K]``; q_t and q_bar_prev ``[B, K, K]``.
    ``q(z_{t-1}=k | z_t, x0=c) = Q_t[k, z_t] Qbar_{t-1}[c, k] / Qbar_t[c, z_t]``.
    """
    left = z_t @ q_t.transpose(1, 2)                               # [B, M, K]: Q_t[k, z_t]
    joint = left.unsqueeze(2) * q_bar_prev.unsqueeze(1)            # [B, M, C, K]
    per_x0 = joint / joint.sum(-1, keepdim=True).clamp(min=1e-20)  # normaliser = Qbar_t[c, z_t]
    post = (x0_probs.unsqueeze(-1) * per_x0).sum(2)
    return post / post.sum(-1, keepdim=True).clamp(min=1e-20)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``probs [..., K]`` by inverse CDF (works with a seeded generator on any device)."""
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[..., -1:].clamp(min=1e-20)
    return (cdf < u).sum(-1).clamp(max=probs.shape[-1] - 1)


def _tilt(probs: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """``probs * exp(log_weights)`` row-wise, max-shifted so exp cannot overflow. Not renormalised:
    ``sample_categorical`` normalises its CDF, so zero weights leave draws bit-identical. A row whose
    every class the weights push to underflow keeps its unguided probabilities."""
    tilted = probs * torch.exp(log_weights - log_weights.amax(-1, keepdim=True))
    return torch.where(tilted.sum(-1, keepdim=True) > 1e-30, tilted, probs)


def symmetric_from_upper(e: torch.Tensor) -> torch.Tensor:
    """Keep the strict upper triangle of ``[B, N, N]`` and mirror it (zero diagonal)."""
    upper = torch.triu(e, diagonal=1)
    return upper + upper.transpose(1, 2)


# --------------------------------------------------------------------------------------- denoiser
class GraphTransformerLayer(nn.Module):
    """DiGress layer: attention whose scores are modulated by edge features (FiLM), which also
    updates the edges; node, edge and global (y) streams each get a residual + norm + feed-forward."""

    def __init__(self, dx: int, de: int, dy: int, n_heads: int) -> None:
        super().__init__()
        if dx % n_heads:
            raise ValueError(f"hidden_dim {dx} must be divisible by n_heads {n_heads}")
        self.n_heads, self.df = n_heads, dx // n_heads
        self.q, self.k, self.v = nn.Linear(dx, dx), nn.Linear(dx, dx), nn.Linear(dx, dx)
        self.e_mul, self.e_add = nn.Linear(de, dx), nn.Linear(de, dx)
        self.y_e_mul, self.y_e_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.y_x_mul, self.y_x_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.x_out, self.e_out = nn.Linear(dx, dx), nn.Linear(dx, de)
        self.y_out = nn.Sequential(nn.Linear(dy + dx + de, dy), nn.SiLU(), nn.Linear(dy, dy))
        self.norm_x1, self.norm_e1, self.norm_y1 = nn.LayerNorm(dx), nn.LayerNorm(de), nn.LayerNorm(dy)
        self.ff_x = nn.Sequential(nn.Linear(dx, 2 * dx), nn.SiLU(), nn.Linear(2 * dx, dx))
        self.ff_e = nn.Sequential(nn.Linear(de, 2 * de), nn.SiLU(), nn.Linear(2 * de, de))
        self.ff_y = nn.Sequential(nn.Linear(dy, 2 * dy), nn.SiLU(), nn.Linear(2 * dy, dy))
        self.norm_x2, self.norm_e2, self.norm_y2 = nn.LayerNorm(dx), nn.LayerNorm(de), nn.LayerNorm(dy)

    def forward(self, x: torch.Tensor, e: torch.Tensor, y: torch.Tensor,
                node_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        h, df = self.n_heads, self.df
        xm = node_mask.unsqueeze(-1)                                  # [B, N, 1]
        em = (node_mask.unsqueeze(2) & node_mask.unsqueeze(1)).unsqueeze(-1)
        q = self.q(x).view(b, n, 1, h, df)
        k = self.k(x).view(b, 1, n, h, df)
        v = self.v(x).view(b, 1, n, h, df)
        scores = q * k / math.sqrt(df)                                # [B, N, N, H, df]
        scores = scores * (self.e_mul(e).view(b, n, n, h, df) + 1) + self.e_add(e).view(b, n, n, h, df)

        new_e = scores.flatten(-2)
        new_e = self.y_e_add(y)[:, None, None] + (self.y_e_mul(y)[:, None, None] + 1) * new_e
        new_e = self.e_out(new_e) * em

        attn_mask = node_mask.view(b, 1, n, 1, 1)
        attn = torch.softmax(scores.masked_fill(~attn_mask, _MASK_FILL), dim=2)
        new_x = (attn * v).sum(2).flatten(-2)                         # [B, N, dx]
        new_x = self.y_x_add(y)[:, None] + (self.y_x_mul(y)[:, None] + 1) * new_x
        new_x = self.x_out(new_x) * xm

        count = node_mask.sum(1, keepdim=True).clamp(min=1).float()
        x_pool = (x * xm).sum(1) / count
        e_pool = (e * em).sum((1, 2)) / (count * count)
        new_y = self.y_out(torch.cat([y, x_pool, e_pool], dim=-1))

        x = self.norm_x1(x + new_x)
        e = self.norm_e1(e + new_e)
        y = self.norm_y1(y + new_y)
        x = self.norm_x2(x + self.ff_x(x)) * xm
        e = self.norm_e2(e + self.ff_e(e)) * em
        y = self.norm_y2(y + self.ff_y(y))
        return x, e, y


def structural_features(e_onehot: torch.Tensor, node_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cheap features of the noisy graph that a plain transformer finds hard to count (DiGress uses
    cycle counts too): per atom the bond count, the bond-order sum (valence use) and closed 3- and
    4-walks; globally the bond count and ring-closure count. Returns (``[B, N, 4]``, ``[B, 2]``)."""
    adj = e_onehot[..., NO_BOND + 1:].sum(-1)                      # [B, N, N] 0/1
    order = torch.arange(1, e_onehot.shape[-1], device=adj.device, dtype=adj.dtype)
    valence = (e_onehot[..., NO_BOND + 1:] * order).sum((-1, -2))
    degree = adj.sum(-1)
    a2 = adj @ adj
    a3 = a2 @ adj
    walks3 = torch.diagonal(a3, dim1=1, dim2=2) / 2
    walks4 = torch.diagonal(a3 @ adj, dim1=1, dim2=2)
    node = torch.stack([degree / 4, valence / 4, torch.log1p(walks3), torch.log1p(walks4)], dim=-1)
    node = node * node_mask.unsqueeze(-1)
    n_atoms = node_mask.sum(1).clamp(min=1)
    n_bonds = degree.sum(1) / 2
    rings = (n_bonds - n_atoms + 1).clamp(min=0)   # cycle rank, if the noisy graph is connected
    return node, torch.stack([n_bonds / n_atoms, torch.log1p(rings)], dim=-1)


def run_trunk(module: nn.Module, x_t: torch.Tensor, e_t: torch.Tensor, t_frac: torch.Tensor,
              node_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The graph-transformer trunk shared by the denoiser and the guidance regressor: embeds the noisy
    one-hot graph with its structural features, the step and the size, then runs ``module.layers``.
    ``module`` holds ``x_in``, ``e_in``, ``y_in`` and ``layers`` (same names in both, so checkpoints
    keep their keys). Returns the node, edge and global streams."""
    n_max = node_mask.shape[1]
    node_feat, graph_feat = structural_features(e_t, node_mask)
    size = node_mask.sum(1, keepdim=True).float() / n_max
    x = module.x_in(torch.cat([x_t, node_feat], dim=-1))
    e = module.e_in(e_t)
    e = (e + e.transpose(1, 2)) / 2
    y = module.y_in(torch.cat([t_frac.unsqueeze(-1), size, graph_feat], dim=-1))
    for layer in module.layers:
        x, e, y = layer(x, e, y, node_mask)
    return x, e, y


class GraphTransformerDenoiser(nn.Module):
    """(one-hot X_t, E_t, t/T, n/N) -> logits of the clean node types ``[B, N, Kx]`` and edge types
    ``[B, N, N, Ke]`` (symmetric)."""

    def __init__(self, n_x: int, n_e: int, hidden_dim: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        dx, de, dy = hidden_dim, max(hidden_dim // 4, 8), hidden_dim
        self.x_in = nn.Sequential(nn.Linear(n_x + 4, dx), nn.SiLU(), nn.Linear(dx, dx))
        self.e_in = nn.Sequential(nn.Linear(n_e, de), nn.SiLU(), nn.Linear(de, de))
        self.y_in = nn.Sequential(nn.Linear(2 + 2, dy), nn.SiLU(), nn.Linear(dy, dy))
        self.layers = nn.ModuleList(GraphTransformerLayer(dx, de, dy, n_heads) for _ in range(n_layers))
        self.x_head = nn.Sequential(nn.Linear(dx, dx), nn.SiLU(), nn.Linear(dx, n_x))
        self.e_head = nn.Sequential(nn.Linear(de, de), nn.SiLU(), nn.Linear(de, n_e))

    def forward(self, x_t: torch.Tensor, e_t: torch.Tensor, t_frac: torch.Tensor,
                node_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, e, _ = run_trunk(self, x_t, e_t, t_frac, node_mask)
        x_logits = self.x_head(x) + x_t        # residual on the noisy input, as in DiGress
        e_logits = self.e_head(e) + e_t
        return x_logits, (e_logits + e_logits.transpose(1, 2)) / 2


# --------------------------------------------------------------------------------------- the model
class GraphDiffusion(nn.Module):
    """Discrete graph diffusion; ``set_data_statistics`` must see the training graphs before training."""

    def __init__(
        self,
        n_node_classes: int,
        n_edge_classes: int,
        max_nodes: int,
        *,
        timesteps: int = 100,
        hidden_dim: int = 64,
        n_layers: int = 3,
        n_heads: int = 4,
        lambda_edge: float = 5.0,
    ) -> None:
        super().__init__()
        if n_node_classes < 2 or n_edge_classes < 2 or max_nodes < 1 or timesteps < 1:
            raise ValueError(f"GraphDiffusion needs >= 2 node/edge classes, max_nodes >= 1 and timesteps >= 1, "
                             f"got {n_node_classes}, {n_edge_classes}, {max_nodes}, {timesteps}")
        self.hparams: dict[str, Any] = dict(
            n_node_classes=n_node_classes, n_edge_classes=n_edge_classes, max_nodes=max_nodes,
            timesteps=timesteps, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads,
            lambda_edge=lambda_edge,
        )
        self.n_x = n_node_classes - 1          # atom types; absence is the node mask, not a class
        self.n_e = n_edge_classes
        self.max_nodes, self.timesteps, self.lambda_edge = max_nodes, timesteps, lambda_edge
        self.denoiser = GraphTransformerDenoiser(self.n_x, self.n_e, hidden_dim, n_layers, n_heads)
        # Data statistics are buffers so that a checkpoint's state_dict carries them.
        self.register_buffer("node_marginals", torch.full((self.n_x,), 1.0 / self.n_x))
        self.register_buffer("edge_marginals", torch.full((self.n_e,), 1.0 / self.n_e))
        sizes = torch.ones(max_nodes + 1)
        sizes[0] = 0.0
        self.register_buffer("size_distribution", sizes / sizes.sum())
        self.register_buffer("alpha_bar", cosine_alpha_bar(timesteps))

    # ---- statistics and schedule
    @torch.no_grad()
    def set_data_statistics(self, x: torch.Tensor, e: torch.Tensor, chunk: int = 65536) -> None:
        """Node/edge marginals (edges over atom pairs i<j) and the atom-count distribution of the
        training graphs, in vocabulary encoding; chunked so MOSES-sized uint8 tensors fit."""
        node_counts = torch.zeros(self.n_x + 1, dtype=torch.float64)
        edge_counts = torch.zeros(self.n_e, dtype=torch.float64)
        size_counts = torch.zeros(self.max_nodes + 1, dtype=torch.float64)
        triu = torch.triu(torch.ones(self.max_nodes, self.max_nodes, dtype=torch.bool, device=x.device), 1)
        for start in range(0, x.shape[0], chunk):
            xc, ec = x[start:start + chunk].long(), e[start:start + chunk].long()
            present = xc != PAD_NODE
            node_counts += torch.bincount(xc[present], minlength=self.n_x + 1).double().cpu()
            pairs = present.unsqueeze(2) & present.unsqueeze(1) & triu
            edge_counts += torch.bincount(ec[pairs], minlength=self.n_e).double().cpu()
            size_counts += torch.bincount(present.sum(1), minlength=self.max_nodes + 1).double().cpu()
        if node_counts[1:].sum() == 0:
            raise ValueError("set_data_statistics: the training graphs contain no atoms")
        dev = self.node_marginals.device
        self.node_marginals.copy_((node_counts[1:] / node_counts[1:].sum()).float().to(dev))
        if edge_counts.sum() > 0:   # single-atom graphs only: keep the uniform edge prior
            self.edge_marginals.copy_((edge_counts / edge_counts.sum()).float().to(dev))
        self.size_distribution.copy_((size_counts / size_counts.sum()).float().to(dev))

    def q_t(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-step matrices Q_t for integer steps ``t [B]`` (nodes, edges): ``[B, K, K]`` each."""
        alpha = self.alpha_bar[t] / self.alpha_bar[t - 1].clamp(min=1e-20)
        return transition_matrix(alpha, self.node_marginals), transition_matrix(alpha, self.edge_marginals)

    def q_bar(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cumulative matrices Qbar_t = Q_1 ... Q_t (nodes, edges): ``[B, K, K]`` each."""
        ab = self.alpha_bar[t]
        return transition_matrix(ab, self.node_marginals), transition_matrix(ab, self.edge_marginals)

    # ---- forward process and loss
    def _noisy(self, x0: torch.Tensor, e0: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (one-hot X_t, E_t) from q(G_t | G_0); edges drawn on the upper triangle and mirrored."""
        qx, qe = self.q_bar(t)
        px = F.one_hot(x0, self.n_x).float() @ qx                        # rows of Qbar_t picked by x0
        pe = (F.one_hot(e0, self.n_e).float().flatten(1, 2) @ qe).view(*e0.shape, self.n_e)
        xt = sample_categorical(px, generator)
        et = symmetric_from_upper(sample_categorical(pe, generator))
        return self._one_hot(xt, et, node_mask)

    def _one_hot(self, x: torch.Tensor, e: torch.Tensor, node_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pair = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
        pair = pair & ~torch.eye(node_mask.shape[1], dtype=torch.bool, device=pair.device)
        xo = F.one_hot(x, self.n_x).float() * node_mask.unsqueeze(-1)
        eo = F.one_hot(e, self.n_e).float() * pair.unsqueeze(-1)
        return xo, eo

    def _split(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vocabulary encoding -> (internal node classes, edge classes, node mask)."""
        x, e = x.long(), e.long()
        node_mask = x != PAD_NODE
        return (x - 1).clamp(min=0), e, node_mask

    def loss(self, x: torch.Tensor, e: torch.Tensor, generator: torch.Generator | None = None,
             t: torch.Tensor | int | None = None) -> dict[str, torch.Tensor]:
        """CE(x0 | G_t) on present atoms + ``lambda_edge`` * CE on the atom pairs i<j.

        ``t`` ~ U{1..T} per graph unless given (a fixed ``t`` makes evaluation comparable)."""
        x0, e0, node_mask = self._split(x, e)
        b = x0.shape[0]
        if t is None:
            t = torch.randint(1, self.timesteps + 1, (b,), generator=generator, device=x0.device)
        else:
            t = torch.as_tensor(t, device=x0.device, dtype=torch.long).expand(b)
            if int(t.min()) < 1 or int(t.max()) > self.timesteps:
                raise ValueError(f"diffusion step t must be in 1..{self.timesteps}, got {t.tolist()}")
        xt, et = self._noisy(x0, e0, t, node_mask, generator)
        x_logits, e_logits = self.denoiser(xt, et, t.float() / self.timesteps, node_mask)
        triu = torch.ones(self.max_nodes, self.max_nodes, dtype=torch.bool, device=x0.device).triu(1)
        pairs = node_mask.unsqueeze(2) & node_mask.unsqueeze(1) & triu
        node_loss = F.cross_entropy(x_logits[node_mask], x0[node_mask])
        edge_loss = F.cross_entropy(e_logits[pairs], e0[pairs]) if pairs.any() else node_loss * 0
        return {"loss": node_loss + self.lambda_edge * edge_loss,
                "node_loss": node_loss.detach(), "edge_loss": edge_loss.detach()}

    # ---- reverse process
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: str | torch.device | None = None,
               guidance: Guidance | None = None, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` graphs: (X [n, N], E [n, N, N]) in vocabulary encoding (padding = 0).

        ``steps`` (default: all ``timesteps``): reverse steps on an evenly spaced grid of t. A jump
        t -> s uses the exact posterior q(G_s | G_t, G_0): marginal transitions compose, so
        Q_{s->t} = Qbar_t Qbar_s^-1 is again a marginal matrix, with alpha_bar_t / alpha_bar_s. Fewer
        steps sample proportionally faster; how much validity that costs is measured, not assumed
        (benchmarks/README.md).

        ``guidance(X_t, E_t, t, node_mask)`` (one-hot, internal classes) may return log-weights
        ``([n, N, Kx], [n, N, N, Ke])`` that multiply each step's posterior, e.g.
        ``molgnn.generate.guidance.RegressorGuidance``. It draws no random numbers, so guided and
        unguided runs under one seed share their uniforms, and all-zero weights change nothing."""
        device = device if device is not None else self.alpha_bar.device
        n_max = self.max_nodes
        sizes = sample_categorical(self.size_distribution.to(device).expand(n, -1), generator)
        node_mask = torch.arange(n_max, device=device).unsqueeze(0) < sizes.unsqueeze(1)
        x = sample_categorical(self.node_marginals.to(device).expand(n, n_max, -1), generator)
        e = symmetric_from_upper(sample_categorical(self.edge_marginals.to(device).expand(n, n_max, n_max, -1), generator))
        xo, eo = self._one_hot(x, e, node_mask)
        steps = self.timesteps if steps is None else int(steps)
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"sampling steps must be in 1..{self.timesteps}, got {steps}")
        grid = [round(self.timesteps * (1 - i / steps)) for i in range(steps + 1)]   # T .. 0, distinct
        for step, prev in zip(grid[:-1], grid[1:]):
            t = torch.full((n,), step, device=device, dtype=torch.long)
            s = torch.full((n,), prev, device=device, dtype=torch.long)
            x_logits, e_logits = self.denoiser(xo, eo, t.float() / self.timesteps, node_mask)
            if prev == step - 1:
                qx_t, qe_t = self.q_t(t)
            else:
                alpha = self.alpha_bar[t] / self.alpha_bar[s].clamp(min=1e-20)
                qx_t, qe_t = transition_matrix(alpha, self.node_marginals), transition_matrix(alpha, self.edge_marginals)
            qx_prev, qe_prev = self.q_bar(s)
            px = posterior_over_x0(xo, torch.softmax(x_logits, -1), qx_t, qx_prev)
            pe = posterior_over_x0(eo.flatten(1, 2), torch.softmax(e_logits, -1).flatten(1, 2), qe_t, qe_prev)
            if guidance is not None:
                wx, we = guidance(xo, eo, t, node_mask)
                px, pe = _tilt(px, wx), _tilt(pe, we.flatten(1, 2))
            x = sample_categorical(px, generator)
            e = symmetric_from_upper(sample_categorical(pe.view(n, n_max, n_max, self.n_e), generator))
            xo, eo = self._one_hot(x, e, node_mask)
        x_vocab = torch.where(node_mask, x + 1, torch.zeros_like(x))
        pair = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
        return x_vocab, e * pair
