"""A small 2D message-passing model (GINE) on ``atom-bond-v1`` graphs: the fast screening tier.

It needs only SMILES (no conformers). An ensemble of a few seeds gives a mean and a spread; it is
trained (``train_graph2d``) on true labels or on a blend of labels and a 3D teacher's predictions
(distillation), see :mod:`molgnn.screen.fast_tier`. Regression targets come out in their units;
binary classification targets (``Graph2DConfig.task_types``) come out as probabilities.

Checkpoint: ``{"kind": "graph2d", "config": {...}, "state_dicts": [...], "featurizer": "atom-bond-v1"}``
(plain tensors and JSON-able config, ``torch.load(weights_only=True)`` safe).

Featurization for screening goes through :func:`featurize_many`, which gives exactly the tensors of
``molgnn.featurize.graph2d.get_featurizer("atom-bond-v1")`` but caches the feature row of each
distinct atom and bond environment (a library has few), several times faster. Prediction can take
the store in indexed form (:func:`featurize_indexed`: each atom and bond a row number into a small
table of distinct feature rows), so the input embedding and the edge projections are computed once
per distinct row instead of once per atom and bond.

The GINE layer is written out here (sum over neighbours of ``relu(h_j + W e_ji)``, then an MLP of
``(1 + eps) h_i + sum``): the same parameters and numbers as torch-geometric's ``GINEConv``, whose
import alone costs seconds at every ``molgnn screen``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem, rdBase
from torch import nn

from molgnn.featurize.graph2d import get_featurizer

FEATURIZER = "atom-bond-v1"
KIND = "graph2d"
REGRESSION, CLASSIFICATION = "regression", "classification"   # as molgnn.models.property_model


# ----------------------------------------------------------------------------------------------
# featurization: same numbers as atom-bond-v1, cached per atom/bond environment

class FastAtomBond:
    """Cached ``atom-bond-v1``: row numbers into ``atom_rows`` / ``bond_rows`` per molecule."""

    def __init__(self, name: str = FEATURIZER):
        if name != FEATURIZER:
            raise ValueError(f"the fast featurizer implements only {FEATURIZER!r}, not {name!r}")
        self.feat = get_featurizer(name)
        self.atom_cache: dict[tuple, int] = {}
        self.bond_cache: dict[tuple, int] = {}
        self.atom_rows: list[list[float]] = []
        self.bond_rows: list[list[float]] = []
        self.atom_dim = self.feat.atom_dim
        self.bond_dim = self.feat.bond_dim

    def _new_atom(self, key: tuple, a: Chem.Atom) -> int:
        idx = self.atom_cache[key] = len(self.atom_rows)
        self.atom_rows.append(self.feat.atom_features(a))
        return idx

    def _new_bond(self, key: tuple, b: Chem.Bond) -> int:
        idx = self.bond_cache[key] = len(self.bond_rows)
        self.bond_rows.append(self.feat.bond_features(b))
        return idx

    def indices(self, smiles: str) -> tuple[list[int], list[int], list[int], list[int]] | None:
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        return self.mol_indices(mol)

    def mol_indices(self, mol: Chem.Mol) -> tuple[list[int], list[int], list[int], list[int]]:
        """Rows into ``atom_rows`` / ``bond_rows`` and the directed edges of a sanitized molecule.

        The hot loop of screening: keys are tuples of the getters the features read (every feature
        is a function of its key), looked up in a dict; a new key computes its row once."""
        acache, bcache = self.atom_cache, self.bond_cache
        atoms = []
        # by index: GetAtoms()/GetBonds() are Python sequence wrappers costing ~2 us per item
        atom, bond = mol.GetAtomWithIdx, mol.GetBondWithIdx
        for i in range(mol.GetNumAtoms()):
            a = atom(i)
            key = (a.GetAtomicNum(), a.GetTotalDegree(), a.GetFormalCharge(), a.GetTotalNumHs(),
                   a.GetHybridization(), a.GetIsAromatic(), a.IsInRing(), a.GetIsotope())
            idx = acache.get(key)
            atoms.append(self._new_atom(key, a) if idx is None else idx)
        src: list[int] = []
        dst: list[int] = []
        bonds: list[int] = []
        for k in range(mol.GetNumBonds()):
            b = bond(k)
            key = (b.GetBondType(), b.GetIsConjugated(), b.IsInRing(), b.GetStereo())
            f = bcache.get(key)
            if f is None:
                f = self._new_bond(key, b)
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            src += (i, j)
            dst += (j, i)
            bonds += (f, f)
        return atoms, src, dst, bonds

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(atom table [A, atom_dim], bond table [B, bond_dim]); one zero row when empty."""
        return (torch.tensor(self.atom_rows or [[0.0] * self.atom_dim], dtype=torch.float32),
                torch.tensor(self.bond_rows or [[0.0] * self.bond_dim], dtype=torch.float32))


def featurize_indexed(items: Sequence[str | Chem.Mol], fa: FastAtomBond | None = None
                      ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Indexed graph store of the parsable items, and the positions of the unparsable ones.

    Items may be SMILES or sanitized RDKit molecules. Store: ``atom_idx`` [N] / ``bond_idx`` [E]
    (rows of ``atom_table`` / ``bond_table``), ``edge_index`` [2, E] (global node indices),
    ``node_ptr`` / ``edge_ptr`` [G+1]. ``fa`` (reused across calls) keeps its cache.
    """
    fa = fa or FastAtomBond()
    atom_idx: list[int] = []
    src: list[int] = []
    dst: list[int] = []
    bond_idx: list[int] = []
    node_counts, edge_counts, failed = [], [], []
    offset = 0
    quiet = rdBase.BlockLogs()      # unparsable SMILES are reported by position, not on stderr
    for k, item in enumerate(items):
        r = fa.mol_indices(item) if isinstance(item, Chem.Mol) else fa.indices(item)
        if r is None:
            failed.append(k)
            continue
        a, s, d, b = r
        atom_idx += a
        if offset:
            s = [offset + i for i in s]
            d = [offset + i for i in d]
        src += s
        dst += d
        bond_idx += b
        offset += len(a)
        node_counts.append(len(a))
        edge_counts.append(len(s))
    del quiet
    atom_table, bond_table = fa.tables()
    store = {
        "atom_idx": torch.tensor(atom_idx, dtype=torch.long),
        "bond_idx": torch.tensor(bond_idx, dtype=torch.long),
        "atom_table": atom_table, "bond_table": bond_table,
        "edge_index": torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
        "node_ptr": torch.tensor([0] + node_counts, dtype=torch.long).cumsum(0),
        "edge_ptr": torch.tensor([0] + edge_counts, dtype=torch.long).cumsum(0),
    }
    return store, failed


def featurize_many(smiles: Sequence[str | Chem.Mol]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One batched graph store for all parsable SMILES, and the positions of the unparsable ones.

    Items may be SMILES or sanitized RDKit molecules. Store: ``x`` [N, atom_dim], ``edge_index`` [2, E]
    (global node indices), ``edge_attr`` [E, bond_dim], ``node_ptr`` / ``edge_ptr`` [G+1]; graph g is
    the g-th parsable SMILES.
    """
    ind, failed = featurize_indexed(smiles)
    return dense_store(ind), failed


def dense_store(ind: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An indexed store (:func:`featurize_indexed`) with its feature rows written out."""
    return {"x": ind["atom_table"][ind["atom_idx"]],
            "edge_index": ind["edge_index"],
            "edge_attr": ind["bond_table"][ind["bond_idx"]].reshape(-1, ind["bond_table"].shape[1]),
            "node_ptr": ind["node_ptr"], "edge_ptr": ind["edge_ptr"]}


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
    """The sub-store of graphs ``idx`` (in that order), node indices renumbered (dense or indexed store)."""
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
    out = {"edge_index": store["edge_index"][:, edge_sel] + shift, "node_ptr": new_np, "edge_ptr": new_ep}
    if "x" in store:
        out.update(x=store["x"][node_sel], edge_attr=store["edge_attr"][edge_sel])
    else:
        out.update(atom_idx=store["atom_idx"][node_sel], bond_idx=store["bond_idx"][edge_sel],
                   atom_table=store["atom_table"], bond_table=store["bond_table"])
    return out


def slice_indexed(store: dict[str, torch.Tensor], a: int, b: int) -> dict[str, torch.Tensor]:
    """Graphs ``a`` to ``b - 1`` of an indexed store (node numbers shifted to start at 0)."""
    n0, n1 = int(store["node_ptr"][a]), int(store["node_ptr"][b])
    e0, e1 = int(store["edge_ptr"][a]), int(store["edge_ptr"][b])
    return {"atom_idx": store["atom_idx"][n0:n1], "bond_idx": store["bond_idx"][e0:e1],
            "atom_table": store["atom_table"], "bond_table": store["bond_table"],
            "edge_index": store["edge_index"][:, e0:e1] - n0,
            "node_ptr": store["node_ptr"][a:b + 1] - n0, "edge_ptr": store["edge_ptr"][a:b + 1] - e0}


def batches(store: dict[str, torch.Tensor], batch_size: int, order: torch.Tensor | None = None):
    """Yield (x, edge_index, edge_attr, batch, n_graphs, graph_idx) batches of a dense store."""
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
    task_types: list[str] | None = None       # per target, regression | classification; None: all regression

    def types(self) -> list[str]:
        return list(self.task_types) if self.task_types else [REGRESSION] * len(self.targets)


class GINELayer(nn.Module):
    """GINE (Hu et al. 2020): ``mlp((1 + eps) h_i + sum_j relu(h_j + lin(e_ji)))``; parameter names
    and numbers as torch-geometric's ``GINEConv(mlp, edge_dim=...)`` (``eps`` a fixed buffer)."""

    def __init__(self, mlp: nn.Sequential, edge_dim: int):
        super().__init__()
        self.nn = mlp
        self.register_buffer("eps", torch.zeros(1))
        self.lin = nn.Linear(edge_dim, mlp[0].in_features)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_emb: torch.Tensor) -> torch.Tensor:
        """``edge_emb``: ``lin(edge_attr)``, one row per edge."""
        msg = (x.index_select(0, edge_index[0]) + edge_emb).relu()
        agg = torch.zeros_like(x).index_add_(0, edge_index[1], msg)
        return self.nn(agg + (1 + self.eps) * x)


class Graph2DModel(nn.Module):
    """GINE message passing (edge features in every message), sum + mean readout, MLP head.
    Outputs are in target units (the head predicts standardised values, un-scaled by buffers) and
    probabilities for classification targets (the head predicts their logits)."""

    def __init__(self, cfg: Graph2DConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.embed = nn.Linear(cfg.atom_dim, h)
        self.convs = nn.ModuleList(
            GINELayer(nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h)), cfg.bond_dim)
            for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, len(cfg.targets)))
        self.register_buffer("y_mean", torch.zeros(len(cfg.targets)))
        self.register_buffer("y_std", torch.ones(len(cfg.targets)))
        self.register_buffer("is_cls", torch.tensor([t == CLASSIFICATION for t in cfg.types()], dtype=torch.bool))

    def _encode(self, h, edge_index, edge_embs, batch, n_graphs: int) -> torch.Tensor:
        for conv, norm, e in zip(self.convs, self.norms, edge_embs):
            h = h + torch.nn.functional.silu(norm(conv(h, edge_index, e)))
        summed = torch.zeros(n_graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h)
        counts = torch.bincount(batch, minlength=n_graphs).clamp_min(1).to(h.dtype)
        return self.head(torch.cat([summed / 10.0, summed / counts[:, None]], dim=1))

    def logits(self, x, edge_index, edge_attr, batch, n_graphs: int) -> torch.Tensor:
        """The head's raw output: standardised values (regression) and logits (classification)."""
        return self._encode(self.embed(x), edge_index, [conv.lin(edge_attr) for conv in self.convs], batch, n_graphs)

    def outputs(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.where(self.is_cls, torch.sigmoid(raw), raw * self.y_std + self.y_mean)

    def forward(self, x, edge_index, edge_attr, batch, n_graphs: int) -> torch.Tensor:
        return self.outputs(self.logits(x, edge_index, edge_attr, batch, n_graphs))

    def forward_indexed(self, store: dict[str, torch.Tensor]) -> torch.Tensor:
        """Outputs for a whole indexed store (:func:`featurize_indexed`): the input embedding and
        each layer's edge projection are computed on the distinct feature rows, then gathered."""
        counts = store["node_ptr"][1:] - store["node_ptr"][:-1]
        n_graphs = counts.numel()
        batch = torch.repeat_interleave(torch.arange(n_graphs), counts)
        h = self.embed(store["atom_table"]).index_select(0, store["atom_idx"])
        embs = [conv.lin(store["bond_table"]).index_select(0, store["bond_idx"]) for conv in self.convs]
        return self.outputs(self._encode(h, store["edge_index"], embs, batch, n_graphs))


def _load_state(model: Graph2DModel, sd: dict[str, torch.Tensor]) -> None:
    """Load weights; a checkpoint from before classification support has no ``is_cls`` (all regression)."""
    sd = dict(sd)
    sd.setdefault("is_cls", model.is_cls)
    model.load_state_dict(sd)


def _val_score(pred: torch.Tensor, y: torch.Tensor, std: torch.Tensor, is_cls: torch.Tensor) -> float:
    """Mean over targets of MAE / label std (regression) and binary cross-entropy (classification)."""
    parts = []
    for k in range(y.shape[1]):
        ok = ~torch.isnan(y[:, k])
        if not bool(ok.any()):
            continue
        p, t = pred[ok, k].double(), y[ok, k].double()
        if bool(is_cls[k]):
            parts.append(float(torch.nn.functional.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), t)))
        else:
            parts.append(float((p - t).abs().mean()) / float(std[k]))
    return float(np.mean(parts)) if parts else math.nan


def train_graph2d(store: dict[str, torch.Tensor], y: torch.Tensor, targets: Sequence[str], *,
                  val_store: dict | None = None, val_y: torch.Tensor | None = None, seed: int = 0,
                  epochs: int = 60, batch_size: int = 64, lr: float = 2e-3, hidden: int = 64,
                  layers: int = 3, weight_decay: float = 1e-4,
                  task_types: Sequence[str] | None = None) -> tuple[Graph2DModel, list[dict]]:
    """Train one model on ``y`` [G, T] (NaN entries masked); the weights of the best validation
    score (``val_score``: MAE / label std for regression, cross-entropy for classification) kept.

    Classification targets (``task_types``) train with binary cross-entropy on their logit; their
    ``y`` may be soft (a teacher's probability blended with the label) and must lie in [0, 1]."""
    torch.manual_seed(seed)
    atom_dim, bond_dim = store["x"].shape[1], store["edge_attr"].shape[1]
    cfg = Graph2DConfig(list(targets), atom_dim, bond_dim, hidden, layers,
                        task_types=list(task_types) if task_types else None)
    model = Graph2DModel(cfg)
    is_cls = model.is_cls
    y = y.float()
    bad = y[:, is_cls][~torch.isnan(y[:, is_cls])]
    if bad.numel() and bool(((bad < 0) | (bad > 1)).any()):
        raise ValueError("classification targets of the 2D tier need labels in [0, 1]")
    mean = torch.where(is_cls, torch.zeros(()), torch.nanmean(y, 0).nan_to_num(0.0))
    std = torch.tensor([1.0 if bool(is_cls[k]) else (float(np.nanstd(y[:, k].numpy())) or 1.0)
                        for k in range(y.shape[1])])
    model.y_mean.copy_(mean), model.y_std.copy_(std.nan_to_num(1.0).clamp_min(1e-8))
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
            raw = model.logits(x, ei, ea, b, ng)
            t0 = torch.where(valid, target, torch.zeros_like(target))
            sq = ((raw - (t0 - model.y_mean) / model.y_std) ** 2)
            ce = torch.nn.functional.binary_cross_entropy_with_logits(raw, t0.clamp(0, 1), reduction="none")
            per = torch.where(valid, torch.where(is_cls, ce, sq), torch.zeros_like(sq))
            loss = per.sum() / valid.sum().clamp_min(1)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            total, n = total + float(loss.detach()) * ng, n + ng
        sched.step()
        rec = {"epoch": epoch, "train_loss": total / max(n, 1)}
        if val_store is not None and val_y is not None:
            vp = predict_store(model, val_store)
            rec["val_score"] = _val_score(vp, val_y.float(), model.y_std, is_cls)
            if rec["val_score"] < best:
                best, best_state = rec["val_score"], {k: v.clone() for k, v in model.state_dict().items()}
        history.append(rec)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


@torch.no_grad()
def predict_store(model: Graph2DModel, store: dict[str, torch.Tensor], batch_size: int = 2048) -> torch.Tensor:
    """Outputs for a dense or an indexed store, in graph order."""
    model.eval()
    if "atom_idx" in store:
        g = store["node_ptr"].numel() - 1
        outs = [model.forward_indexed(slice_indexed(store, s, min(s + batch_size, g)) if g > batch_size else store)
                for s in range(0, g, batch_size)]
    else:
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
        _load_state(m, sd)
        m.eval()
        models.append(m)
    return models


@torch.no_grad()
def predict_ensemble_2d(models: Sequence[Graph2DModel], store: dict[str, torch.Tensor],
                        batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std over members, ddof=0), each [G, T]."""
    stacked = torch.stack([predict_store(m, store, batch_size) for m in models]).double()
    return stacked.mean(0), stacked.std(0, unbiased=False)
