"""A small 2D message-passing model (GINE) on ``atom-bond-v1`` graphs: the fast screening tier.

It needs only SMILES (no conformers). An ensemble of a few seeds gives a mean and a spread; it is
trained (``train_graph2d``) on a blend of true labels and a 3D teacher's predictions (distillation),
see :mod:`molgnn.screen.fast_tier`.

Checkpoint: ``{"kind": "graph2d", "config": {...}, "state_dicts": [...], "featurizer": "atom-bond-v1"}``
(plain tensors and JSON-able config, ``torch.load(weights_only=True)`` safe).

Featurization for screening goes through :func:`featurize_many`, which gives exactly the tensors of
``molgnn.featurize.graph2d.get_featurizer("atom-bond-v1")`` but caches the feature row of each
distinct atom and bond environment (a library has few), several times faster.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem, RDLogger
from torch import nn
from torch_geometric.nn import GINEConv
from torch_geometric.utils import scatter

from molgnn.featurize.graph2d import get_featurizer

FEATURIZER = "atom-bond-v1"
KIND = "graph2d"


# ----------------------------------------------------------------------------------------------
# featurization: same numbers as atom-bond-v1, cached per atom/bond environment

class FastAtomBond:
    """Cached ``atom-bond-v1``: ``graph(smiles)`` -> (x, edge_index, edge_attr) or None if unparsable."""

    def __init__(self, name: str = FEATURIZER):
        if name != FEATURIZER:
            raise ValueError(f"the fast featurizer implements only {FEATURIZER!r}, not {name!r}")
        self.feat = get_featurizer(name)
        self.atom_cache: dict[tuple, int] = {}
        self.bond_cache: dict[tuple, int] = {}
        self.atom_rows: list[list[float]] = []
        self.bond_rows: list[list[float]] = []
        self.bond_dim = self.feat.bond_dim

    def _atom(self, a: Chem.Atom) -> int:
        key = (a.GetAtomicNum(), a.GetTotalDegree(), a.GetFormalCharge(), a.GetTotalNumHs(),
               a.GetHybridization(), a.GetIsAromatic(), a.IsInRing(), a.GetIsotope())
        idx = self.atom_cache.get(key)
        if idx is None:
            idx = self.atom_cache[key] = len(self.atom_rows)
            self.atom_rows.append(self.feat.atom_features(a))
        return idx

    def _bond(self, b: Chem.Bond) -> int:
        key = (b.GetBondType(), b.GetIsConjugated(), b.IsInRing(), b.GetStereo())
        idx = self.bond_cache.get(key)
        if idx is None:
            idx = self.bond_cache[key] = len(self.bond_rows)
            self.bond_rows.append(self.feat.bond_features(b))
        return idx

    def indices(self, smiles: str) -> tuple[list[int], list[int], list[int], list[int]] | None:
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        return self.mol_indices(mol)

    def mol_indices(self, mol: Chem.Mol) -> tuple[list[int], list[int], list[int], list[int]]:
        """Rows into ``atom_rows`` / ``bond_rows`` and the directed edges of a sanitized molecule."""
        atoms = [self._atom(a) for a in mol.GetAtoms()]
        src, dst, bonds = [], [], []
        for b in mol.GetBonds():
            i, j, f = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), self._bond(b)
            src += [i, j]
            dst += [j, i]
            bonds += [f, f]
        return atoms, src, dst, bonds


def featurize_many(smiles: Sequence[str | Chem.Mol]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One batched graph store for all parsable SMILES, and the positions of the unparsable ones.

    Items may be SMILES or sanitized RDKit molecules. Store: ``x`` [N, atom_dim], ``edge_index`` [2, E] (global node indices), ``edge_attr`` [E, bond_dim],
    ``node_ptr`` / ``edge_ptr`` [G+1]; graph g is the g-th parsable SMILES.
    """
    RDLogger.DisableLog("rdApp.*")
    fa = FastAtomBond()
    atom_idx: list[int] = []
    src: list[int] = []
    dst: list[int] = []
    bond_idx: list[int] = []
    node_counts, edge_counts, failed = [], [], []
    offset = 0
    for k, smi in enumerate(smiles):
        r = fa.mol_indices(smi) if isinstance(smi, Chem.Mol) else fa.indices(smi)
        if r is None:
            failed.append(k)
            continue
        a, s, d, b = r
        atom_idx += a
        src += [offset + i for i in s]
        dst += [offset + i for i in d]
        bond_idx += b
        offset += len(a)
        node_counts.append(len(a))
        edge_counts.append(len(s))
    atom_table = torch.tensor(fa.atom_rows or [[0.0] * fa.feat.atom_dim], dtype=torch.float32)
    bond_table = torch.tensor(fa.bond_rows or [[0.0] * fa.bond_dim], dtype=torch.float32)
    store = {
        "x": atom_table[torch.tensor(atom_idx, dtype=torch.long)],
        "edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
        "edge_attr": bond_table[torch.tensor(bond_idx, dtype=torch.long)].reshape(-1, fa.bond_dim),
        "node_ptr": torch.tensor([0] + node_counts, dtype=torch.long).cumsum(0),
        "edge_ptr": torch.tensor([0] + edge_counts, dtype=torch.long).cumsum(0),
    }
    return store, failed


def _chunk_worker(smiles: list[str]) -> tuple[dict[str, torch.Tensor], list[int]]:
    torch.set_num_threads(1)
    return featurize_many(smiles)


def featurize_parallel(smiles: Sequence[str], workers: int = 1, chunk: int = 5000
                       ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """:func:`featurize_many` over ``workers`` processes (chunks concatenated in order)."""
    smiles = list(smiles)
    if workers <= 1 or len(smiles) <= chunk:
        return featurize_many(smiles)
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    parts = [smiles[i:i + chunk] for i in range(0, len(smiles), chunk)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        results = list(pool.map(_chunk_worker, parts))
    return concat_stores(results, [len(p) for p in parts])


def concat_stores(results: list[tuple[dict, list[int]]], sizes: list[int]) -> tuple[dict, list[int]]:
    xs, eis, eas, nps, eps, failed = [], [], [], [], [], []
    n_off = base = 0
    for (st, fail), size in zip(results, sizes):
        xs.append(st["x"]), eis.append(st["edge_index"] + n_off), eas.append(st["edge_attr"])
        nps.append(st["node_ptr"][1:] - st["node_ptr"][:-1]), eps.append(st["edge_ptr"][1:] - st["edge_ptr"][:-1])
        failed += [base + f for f in fail]
        n_off += st["x"].shape[0]
        base += size
    zero = torch.zeros(1, dtype=torch.long)
    return {"x": torch.cat(xs), "edge_index": torch.cat(eis, 1), "edge_attr": torch.cat(eas),
            "node_ptr": torch.cat([zero, torch.cat(nps)]).cumsum(0),
            "edge_ptr": torch.cat([zero, torch.cat(eps)]).cumsum(0)}, failed


def select_graphs(store: dict[str, torch.Tensor], idx: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """The sub-store of graphs ``idx`` (in that order), node indices renumbered."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    np_, ep = store["node_ptr"], store["edge_ptr"]
    n_counts, e_counts = np_[idx + 1] - np_[idx], ep[idx + 1] - ep[idx]
    node_sel = torch.cat([torch.arange(int(np_[i]), int(np_[i + 1])) for i in idx]) if len(idx) else torch.zeros(0, dtype=torch.long)
    edge_sel = torch.cat([torch.arange(int(ep[i]), int(ep[i + 1])) for i in idx]) if len(idx) else torch.zeros(0, dtype=torch.long)
    new_np = torch.cat([torch.zeros(1, dtype=torch.long), n_counts.cumsum(0)])
    new_ep = torch.cat([torch.zeros(1, dtype=torch.long), e_counts.cumsum(0)])
    # shift each edge from its old graph offset to the new one
    graph_of_edge = torch.repeat_interleave(torch.arange(len(idx)), e_counts)
    shift = (new_np[:-1] - np_[idx])[graph_of_edge]
    return {"x": store["x"][node_sel], "edge_index": store["edge_index"][:, edge_sel] + shift,
            "edge_attr": store["edge_attr"][edge_sel], "node_ptr": new_np, "edge_ptr": new_ep}


def batches(store: dict[str, torch.Tensor], batch_size: int, order: torch.Tensor | None = None):
    """Yield (x, edge_index, edge_attr, batch, n_graphs, graph_idx) batches of a store."""
    g = store["node_ptr"].numel() - 1
    order = torch.arange(g) if order is None else order
    contiguous = bool((order == torch.arange(g)).all()) if len(order) == g else False
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if contiguous:
            a, b = int(idx[0]), int(idx[-1]) + 1
            n0, n1 = int(store["node_ptr"][a]), int(store["node_ptr"][b])
            e0, e1 = int(store["edge_ptr"][a]), int(store["edge_ptr"][b])
            counts = store["node_ptr"][a + 1:b + 1] - store["node_ptr"][a:b]
            sub = {"x": store["x"][n0:n1], "edge_index": store["edge_index"][:, e0:e1] - n0,
                   "edge_attr": store["edge_attr"][e0:e1]}
        else:
            sub = select_graphs(store, idx)
            counts = sub["node_ptr"][1:] - sub["node_ptr"][:-1]
        batch = torch.repeat_interleave(torch.arange(len(idx)), counts)
        yield sub["x"], sub["edge_index"], sub["edge_attr"], batch, len(idx), idx


# ----------------------------------------------------------------------------------------------
# model

@dataclass
class Graph2DConfig:
    targets: list[str]
    atom_dim: int
    bond_dim: int
    hidden: int = 64
    layers: int = 3
    featurizer: str = FEATURIZER


class Graph2DModel(nn.Module):
    """GINE message passing (edge features in every message), sum + mean readout, MLP head.
    Outputs are in target units: the head predicts standardised values, un-scaled by buffers."""

    def __init__(self, cfg: Graph2DConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.embed = nn.Linear(cfg.atom_dim, h)
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h)), edge_dim=cfg.bond_dim)
            for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, len(cfg.targets)))
        self.register_buffer("y_mean", torch.zeros(len(cfg.targets)))
        self.register_buffer("y_std", torch.ones(len(cfg.targets)))

    def forward(self, x, edge_index, edge_attr, batch, n_graphs: int) -> torch.Tensor:
        h = self.embed(x)
        for conv, norm in zip(self.convs, self.norms):
            h = h + torch.nn.functional.silu(norm(conv(h, edge_index, edge_attr)))
        pooled = torch.cat([scatter(h, batch, 0, dim_size=n_graphs, reduce="sum") / 10.0,
                            scatter(h, batch, 0, dim_size=n_graphs, reduce="mean")], dim=1)
        return self.head(pooled) * self.y_std + self.y_mean


def train_graph2d(store: dict[str, torch.Tensor], y: torch.Tensor, targets: Sequence[str], *,
                  val_store: dict | None = None, val_y: torch.Tensor | None = None, seed: int = 0,
                  epochs: int = 60, batch_size: int = 64, lr: float = 2e-3, hidden: int = 64,
                  layers: int = 3, weight_decay: float = 1e-4) -> tuple[Graph2DModel, list[dict]]:
    """Train one model on ``y`` [G, T] (NaN entries masked); best validation-MAE weights kept."""
    torch.manual_seed(seed)
    atom_dim, bond_dim = store["x"].shape[1], store["edge_attr"].shape[1]
    model = Graph2DModel(Graph2DConfig(list(targets), atom_dim, bond_dim, hidden, layers))
    y = y.float()
    mean = torch.nanmean(y, 0)
    std = torch.tensor([float(np.nanstd(y[:, k].numpy())) or 1.0 for k in range(y.shape[1])])
    model.y_mean.copy_(mean), model.y_std.copy_(std.clamp_min(1e-8))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    g = y.shape[0]
    best, best_state, history = math.inf, None, []
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for x, ei, ea, b, ng, idx in batches(store, batch_size, torch.randperm(g, generator=gen)):
            target = y[idx]
            valid = ~torch.isnan(target)
            pred = model(x, ei, ea, b, ng)
            loss = (((pred - torch.where(valid, target, pred.detach())) / model.y_std) ** 2).sum() / valid.sum().clamp_min(1)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            total, n = total + float(loss.detach()) * ng, n + ng
        sched.step()
        rec = {"epoch": epoch, "train_loss": total / max(n, 1)}
        if val_store is not None and val_y is not None:
            vp = predict_store(model, val_store)
            err = (vp - val_y.float()).abs()
            rec["val_mae"] = float(torch.nanmean(err))
            if rec["val_mae"] < best:
                best, best_state = rec["val_mae"], {k: v.clone() for k, v in model.state_dict().items()}
        history.append(rec)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


@torch.no_grad()
def predict_store(model: Graph2DModel, store: dict[str, torch.Tensor], batch_size: int = 2048) -> torch.Tensor:
    model.eval()
    outs = [model(x, ei, ea, b, ng) for x, ei, ea, b, ng, _ in batches(store, batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, len(model.cfg.targets))


def checkpoint_from_models(models: Sequence[Graph2DModel], **extra: Any) -> dict[str, Any]:
    return {"kind": KIND, "config": asdict(models[0].cfg), "featurizer": models[0].cfg.featurizer,
            "state_dicts": [m.state_dict() for m in models], **extra}


def models_from_checkpoint(ckpt: dict[str, Any]) -> list[Graph2DModel]:
    if ckpt.get("kind") != KIND:
        raise ValueError(f"checkpoint is of kind {ckpt.get('kind')!r}, not a 2D screening model ({KIND!r})")
    if ckpt["config"].get("featurizer") != FEATURIZER:
        raise ValueError(f"2D model was trained on featurizer {ckpt['config'].get('featurizer')!r}")
    models = []
    for sd in ckpt["state_dicts"]:
        m = Graph2DModel(Graph2DConfig(**ckpt["config"]))
        m.load_state_dict(sd)
        m.eval()
        models.append(m)
    return models


@torch.no_grad()
def predict_ensemble_2d(models: Sequence[Graph2DModel], store: dict[str, torch.Tensor],
                        batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std over members, ddof=0), each [G, T]."""
    stacked = torch.stack([predict_store(m, store, batch_size) for m in models]).double()
    return stacked.mean(0), stacked.std(0, unbiased=False)
