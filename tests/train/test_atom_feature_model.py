"""The 3D encoder reading per-atom 2D features: starts as the element-only encoder, learns from the
features, loads a pretrained encoder, and predicts the same after a checkpoint round trip."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molgnn.config import FinetuneConfig, ModelConfig, PretrainConfig
from molgnn.featurize.atomistic import ATOM_FEATURES, AtomisticDataset, make_batch
from molgnn.models.property_model import CheckpointMismatchError, PropertyModel
from molgnn.screen.explain import atom_attributions
from molgnn.screen.predict import predict_ensemble
from molgnn.train.checkpoints import checkpoint_from_model
from molgnn.train.finetune import finetune
from molgnn.train.pretrain import pretrain

CFG = ModelConfig(n_atom_basis=16, n_interactions=2, n_rbf=10, cutoff=4.0)
NAME = "atom-bond-v1"
# aromatic rings and their saturated twins: the label is the number of aromatic atoms
SMILES = ("c1ccccc1", "C1CCCCC1", "c1ccncc1", "C1CCNCC1", "Cc1ccccc1", "CC1CCCCC1", "c1ccoc1", "C1CCOC1",
          "c1ccc2ccccc2c1", "C1CCC2CCCCC2C1")


@pytest.fixture(scope="module")
def table(embed_structures):
    structures = embed_structures(SMILES)
    from rdkit import Chem
    labels = pd.DataFrame({"mol_id": list(SMILES),
                           "aromatic": [float(sum(a.GetIsAromatic() for a in Chem.MolFromSmiles(s).GetAtoms()))
                                        for s in SMILES]})
    return structures, labels


def _model(**kw) -> PropertyModel:
    torch.manual_seed(0)
    return PropertyModel(CFG, ["aromatic"], atom_features=NAME, atom_feature_dim=43, **kw).eval()


def test_features_start_silent_and_then_count(table):
    structures, _ = table
    ds = AtomisticDataset.from_frames(structures, atom_features=NAME)
    model = _model()
    b = make_batch(ds, range(len(ds)), cutoff=CFG.cutoff)
    blank = {**b, ATOM_FEATURES: torch.zeros_like(b[ATOM_FEATURES])}
    with torch.no_grad():
        assert torch.equal(model(b), model(blank))                    # zero-initialised map
        model.encoder.electronic_embeddings[0].linear.weight.normal_()
        assert not torch.allclose(model(b), model(blank))
    with pytest.raises(KeyError, match="per-atom 2D features"):
        model({k: v for k, v in b.items() if k != ATOM_FEATURES})


def test_pretrained_encoder_loads_and_a_checkpoint_predicts_the_same(table, tmp_path):
    structures, labels = table
    pre = pretrain(structures, CFG, PretrainConfig(epochs=1, batch_size=5), seed=0).checkpoint
    split = (np.arange(6), np.array([6, 7]), np.array([8, 9]))
    cfg = FinetuneConfig(targets=["aromatic"], epochs=2, batch_size=4, lr=2e-3, patience=10)
    res = finetune(structures, labels, split, CFG, cfg, seed=0, pretrained=pre, atom_features=NAME)
    ckpt = res.checkpoint
    assert ckpt["config"]["atom_features"] == NAME and ckpt["config"]["atom_feature_dim"] == 43
    enc = {k: v for k, v in pre["state_dict"].items() if k.startswith("encoder.")}
    assert set(ckpt["state_dict"]) - set(enc) >= {"encoder.electronic_embeddings.0.linear.weight"}
    # the screening path builds the features from the structures' SMILES by itself
    pred = predict_ensemble([ckpt], structures.iloc[8:].reset_index(drop=True))
    test = res.test_predictions.set_index("mol_id").loc[pred["mol_id"], "y_pred"].to_numpy()
    np.testing.assert_allclose(pred["aromatic_mean"].to_numpy(), test, rtol=1e-5, atol=1e-5)
    # explain: same model, same molecule, the per-atom shares sum to the prediction
    z, pos = structures["atomic_numbers"][8], structures["positions"][8]
    model = PropertyModel.from_hparams(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    shares, preds = atom_attributions([model.eval()], np.asarray(z), np.asarray(pos), smiles=SMILES[8])
    np.testing.assert_allclose(preds[0], test[0], rtol=1e-5, atol=1e-5)
    # a model without atom features cannot take this checkpoint's encoder
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        PropertyModel(CFG, ["aromatic"]).load_encoder(ckpt)


def test_features_asked_of_a_dataset_without_them_is_an_error(table):
    structures, labels = table
    ds = AtomisticDataset.from_frames(structures, labels, ["aromatic"])
    cfg = FinetuneConfig(targets=["aromatic"], epochs=1, batch_size=4, lr=2e-3, patience=10)
    with pytest.raises(ValueError, match="no atom features"):
        finetune(ds, None, (np.arange(6), np.array([6, 7]), np.array([8, 9])), CFG, cfg, seed=0, atom_features=NAME)
