"""Shared fixtures: every test gets its own Prefect home; tracking never touches the repo's mlruns/."""
from __future__ import annotations

import os
import tempfile

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="molgnn-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """torch on one thread in every test, restored at the end: tests compare training runs bit for bit
    (two threads may split sums differently between runs), and tiny models gain nothing from a second
    core on the shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# A pipeline small enough for the 2-core test machine: every stage runs, nothing is tuned.
TINY_PARAMS = {
    "seed": 0,
    "device": "cpu",
    "data": {"sources": ["qm9-sample"], "limit": 60},
    "featurize": {"workers": 1, "conformers": {"timeout_s": 5}},
    "model": {"n_atom_basis": 16, "n_interactions": 1, "n_rbf": 8, "cutoff": 4.0},
    "pretrain": {"epochs": 1, "batch_size": 16, "init_from": None},   # the shipped encoder needs the default model
    "finetune": {"targets": ["gap", "homo"], "epochs": 2, "batch_size": 16, "ensemble_size": 2,
                 "split": "scaffold"},
    "generate": {"vae": {"epochs": 40, "hidden_dim": 32, "latent_dim": 8},
                 "diffusion": {"epochs": 40, "timesteps": 10, "hidden_dim": 16, "n_layers": 1},
                 "guidance": {"enabled": True, "epochs": 1, "hidden_dim": 16, "n_layers": 1, "edge_scale": 0.0},
                 "n_samples": 16},
    "fast_tier": {"members": 2, "epochs": 3, "hidden": 16, "layers": 2},
    "screen": {"rank_by": "gap", "top_k": 2, "uncertain_k": 1},
}


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    import copy

    return copy.deepcopy(TINY_PARAMS)


def _synthetic_atomistic(n_mol: int, *, min_atoms: int, missing_gap=(), seed: int = 0):
    """Random small molecules with two targets: ``gap`` (mean-like, NaN at ``missing_gap``) and
    ``U0`` (sum-like), for padding and training-step tests."""
    import numpy as np
    import torch

    from molgnn.featurize.atomistic import AtomisticDataset

    rng = np.random.default_rng(seed)
    n = rng.integers(min_atoms, 10, n_mol)
    ptr = np.concatenate([[0], np.cumsum(n)])
    z = rng.choice([1, 6, 7, 8], ptr[-1]).astype(np.uint8)
    pos = rng.uniform(0, 2.5, (ptr[-1], 3))
    gap = np.array([z[a:b].mean() / 4 + pos[a:b, 0].std() for a, b in zip(ptr[:-1], ptr[1:])])
    # sum-like, plus a geometry term: purely linear in composition, the atom references would fit it
    # exactly and leave a loss scale of float noise (losses ~1e16, chaotic training)
    u0 = np.array([-(z[a:b].astype(float) ** 1.5).sum() - 0.5 * (b - a) * pos[a:b, 1].std()
                   for a, b in zip(ptr[:-1], ptr[1:])])
    gap[list(missing_gap)] = np.nan
    y = torch.tensor(np.stack([gap, u0], 1))
    return AtomisticDataset(np.array([f"m{i}" for i in range(n_mol)]), torch.from_numpy(z),
                            torch.from_numpy(pos).float(), torch.from_numpy(ptr), y, ["gap", "U0"])


@pytest.fixture
def synthetic_atomistic():
    """Factory of :func:`_synthetic_atomistic` datasets (deterministic under ``seed``)."""
    return _synthetic_atomistic


def _embed_structures(smiles) -> "pd.DataFrame":
    """A structures table (``mol_id`` = ``smiles`` = the SMILES, ``atomic_numbers``, flat ``positions``) of one
    ETKDG conformer per molecule, with explicit H, seeded by the molecule's position in ``smiles``."""
    import pandas as pd
    from rdkit import Chem
    from rdkit.Chem import AllChem

    rows = []
    for k, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        assert AllChem.EmbedMolecule(mol, randomSeed=k) == 0, f"no conformer for {smi}"
        rows.append({"mol_id": smi, "smiles": smi, "atomic_numbers": [a.GetAtomicNum() for a in mol.GetAtoms()],
                     "positions": mol.GetConformer().GetPositions().ravel().tolist()})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def embed_structures():
    """Factory of :func:`_embed_structures` tables (the same SMILES give the same table)."""
    return _embed_structures


# The fine-tuning settings of the synthetic-data training tests: two targets (intensive gap,
# extensive U0), batches of 5 over a 28-molecule training split.
_FINETUNE_TEST_CFG = dict(targets=["gap", "U0"], epochs=3, batch_size=5, lr=2e-3, patience=10)


@pytest.fixture(scope="session")
def finetune_cfg():
    """``finetune_cfg(**changes)``: a FinetuneConfig of the synthetic-data training tests."""
    from molgnn.config import FinetuneConfig

    return lambda **changes: FinetuneConfig(**{**_FINETUNE_TEST_CFG, **changes})


@pytest.fixture(scope="session")
def untimed():
    """``untimed(history)``: the history without its wall-clock entries, for comparing two runs."""
    from molgnn.train import history_keys as hk

    # "elapsed": the generators' running training time (molgnn.generate.training)
    timing = {hk.SECONDS, hk.MOLECULES_PER_SECOND, hk.ELAPSED_SECONDS, "elapsed"}
    return lambda history: [{k: v for k, v in h.items() if k not in timing} for h in history]


# Eight small molecules (up to 9 heavy atoms, a zwitterion among them) for the dense-graph generators.
TINY_GRAPH_SMILES = ["CC(=O)O", "c1ccoc1", "C#N", "OCC1CC1", "[NH3+]CC([O-])=O", "CC1(C)CN1", "N#CC1=CC=CN1",
                     "O=C1CC2OC12"]


@pytest.fixture(scope="module")   # tensors: each module gets its own, as before
def tiny_dense_graphs():
    """``(vocab, x, e)``: :data:`TINY_GRAPH_SMILES` as dense graphs of 9 nodes, every molecule kept."""
    from molgnn.featurize.dense_graph import GraphVocab, encode_many

    vocab = GraphVocab.from_smiles(TINY_GRAPH_SMILES)
    x, e, _, rejects = encode_many(TINY_GRAPH_SMILES, vocab, 9)
    assert not rejects
    return vocab, x, e
