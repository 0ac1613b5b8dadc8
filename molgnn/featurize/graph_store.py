"""A whole dataset of 2D graphs as a few concatenated tensors.

One file of flat tensors (not a pickled list of ``Data`` objects) loads with
``torch.load(weights_only=True)`` and stays compact for all of QM9 or MOSES.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch_geometric.data import Data

from molgnn.data.artifacts import atomic_path
from molgnn.featurize.graph2d import FeaturizerError, get_featurizer


def _featurize_chunk(args: tuple[str, list[str]]) -> list[tuple | str]:
    name, smiles = args
    feat = get_featurizer(name)
    out: list[tuple | str] = []
    for smi in smiles:
        try:
            g = feat(smi)
            out.append((g.x, g.edge_index, g.edge_attr))
        except FeaturizerError as exc:
            out.append(str(exc))
    return out


def featurize_graphs(smiles: list[str], mol_ids: list[str], featurizer: str, workers: int = 1,
                     chunk: int = 2000) -> tuple[dict, list[tuple[int, str]]]:
    """Featurize every SMILES; returns the store and ``(index, reason)`` for each failure."""
    chunks = [(featurizer, smiles[i:i + chunk]) for i in range(0, len(smiles), chunk)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = [r for part in pool.map(_featurize_chunk, chunks) for r in part]
    else:
        results = [r for c in chunks for r in _featurize_chunk(c)]
    xs, eis, eas, ids, rejects = [], [], [], [], []
    node_counts, edge_counts = [], []
    for i, r in enumerate(results):
        if isinstance(r, str):
            rejects.append((i, r))
            continue
        x, ei, ea = r
        xs.append(x), eis.append(ei), eas.append(ea), ids.append(mol_ids[i])
        node_counts.append(x.shape[0]), edge_counts.append(ei.shape[1])
    feat = get_featurizer(featurizer)
    store = {
        "featurizer": featurizer,
        "mol_ids": ids,
        "x": torch.cat(xs) if xs else torch.zeros(0, feat.atom_dim),
        "edge_index": torch.cat(eis, dim=1) if eis else torch.zeros(2, 0, dtype=torch.long),
        "edge_attr": torch.cat(eas) if eas else torch.zeros(0, feat.bond_dim),
        "node_ptr": torch.tensor([0] + node_counts).cumsum(0),
        "edge_ptr": torch.tensor([0] + edge_counts).cumsum(0),
    }
    return store, rejects


def save_graphs(store: dict, path: str | Path) -> None:
    # Saved through a file object: torch names the zip's records after a path's file name, and
    # the temporary name is random, which would change the bytes (and the DVC md5) on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(store, fh)


def load_graphs(path: str | Path) -> tuple[str, list[Data]]:
    """Returns the featurizer name and one ``Data`` per molecule (``mol_id`` attribute set)."""
    store = torch.load(path, weights_only=True)
    np_, ep = store["node_ptr"], store["edge_ptr"]
    graphs = []
    for k, mol_id in enumerate(store["mol_ids"]):
        graphs.append(Data(
            x=store["x"][np_[k]:np_[k + 1]],
            edge_index=store["edge_index"][:, ep[k]:ep[k + 1]],
            edge_attr=store["edge_attr"][ep[k]:ep[k + 1]],
            mol_id=mol_id,
        ))
    return store["featurizer"], graphs
