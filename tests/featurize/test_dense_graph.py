import json

import pytest
import torch
from rdkit import Chem

from molgnn.featurize.dense_graph import (
    GraphEncodingError,
    GraphVocab,
    VocabError,
    decode,
    decode_largest_fragment,
    decode_many,
    encode,
    encode_many,
    fit_vocab,
)

QM9_LIKE = ["CC(=O)O", "c1ccoc1", "C#N", "OCC1CC1", "[NH3+]CC([O-])=O", "c1cc[nH]c1", "N#CC1=CC=CN1",
            "O=C1CC2OC12", "CC1(C)CN1", "FC(F)F"]
AROMATIC = ["c1ccoc1", "c1ccccc1", "c1cc[nH]c1", "Cc1ncc[nH]1", "c1ncncn1"]


def canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


@pytest.fixture(scope="module")
def vocab() -> GraphVocab:
    return GraphVocab.from_smiles(QM9_LIKE + AROMATIC)


def test_vocab_learns_element_charge_tokens_and_round_trips_json(vocab):
    assert set(vocab.atom_tokens) == {("C", 0), ("N", 0), ("N", 1), ("O", -1), ("O", 0), ("F", 0)}
    assert vocab.atom_tokens[0] == ("C", 0)          # sorted by atomic number, then charge
    assert vocab.n_node_classes == 7 and vocab.n_edge_classes == 4
    raw = json.loads(json.dumps(vocab.to_dict()))
    assert GraphVocab.from_dict(raw) == vocab
    with pytest.raises(VocabError, match="format"):
        GraphVocab.from_dict({"atom_tokens": [["C", 0]]})
    with pytest.raises(VocabError, match="duplicate"):
        GraphVocab(atom_tokens=(("C", 0), ("C", 0)))


def test_fit_vocab_ignores_molecules_over_max_nodes():
    vocab, largest = fit_vocab(["CC", "ClCCCCCCCCCCCl", "not a smiles"], max_nodes=9)
    assert vocab.atom_tokens == (("C", 0),) and largest == 2


@pytest.mark.parametrize("smiles", QM9_LIKE + AROMATIC)
def test_encode_decode_round_trip(vocab, smiles):
    x, e = encode(smiles, vocab, max_nodes=9)
    assert x.shape == (9,) and e.shape == (9, 9) and x.dtype == e.dtype == torch.long
    assert torch.equal(e, e.T) and not e.diagonal().any()
    n = Chem.MolFromSmiles(smiles).GetNumAtoms()
    assert (x[:n] > 0).all() and (x[n:] == 0).all() and not e[n:].any()
    assert decode(x, e, vocab) == (canonical(smiles), "ok")


@pytest.mark.parametrize("smiles", AROMATIC)
def test_aromatic_rings_are_kekulized(vocab, smiles):
    _, e = encode(smiles, vocab, max_nodes=9)
    assert int(e.max()) <= 3 and (e == 2).any()     # explicit double bonds, no aromatic class


def test_atom_order_is_canonical(vocab):
    a = encode("OCC1CC1", vocab, 9)
    b = encode("C1CC1CO", vocab, 9)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_encode_raises_clear_errors(vocab):
    with pytest.raises(GraphEncodingError, match="more than max_nodes=5"):
        encode("CCCCCCC", vocab, 5)
    with pytest.raises(GraphEncodingError, match=r"\[S\]|S.*not in the vocabulary"):
        encode("CS", vocab, 9)
    with pytest.raises(GraphEncodingError, match="cannot parse"):
        encode("C1CC", vocab, 9)
    with pytest.raises(GraphEncodingError, match="radical"):
        encode("[CH2]C", vocab, 9)


def test_encode_many_records_rejects_with_index_and_reason(vocab):
    smiles = ["CCO", "CCCCCCCCCC", "CS", "xyz", "c1ccoc1"]
    x, e, kept, rejects = encode_many(smiles, vocab, 9, dtype=torch.uint8)
    assert kept == [0, 4] and x.shape == (2, 9) and e.shape == (2, 9, 9) and x.dtype == torch.uint8
    assert [i for i, _ in rejects] == [1, 2, 3]
    assert "10 heavy atoms" in rejects[0][1] and "vocabulary" in rejects[1][1] and "parse" in rejects[2][1]
    assert sorted(kept + [i for i, _ in rejects]) == list(range(len(smiles)))
    assert [s for s, _ in decode_many(x, e, vocab)] == [canonical("CCO"), canonical("c1ccoc1")]


def test_decode_reports_invalid_graphs_without_correcting(vocab):
    c, o = vocab.node_class(("C", 0)), vocab.node_class(("O", 0))
    empty = torch.zeros(4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long)
    assert decode(*empty, vocab) == (None, "empty graph: no atoms")

    # O with three single bonds: a valence error, not silently fixed
    x = torch.tensor([o, c, c, c])
    e = torch.zeros(4, 4, dtype=torch.long)
    e[0, 1:] = e[1:, 0] = 1
    smiles, reason = decode(x, e, vocab)
    assert smiles is None and "valence" in reason.lower()
    assert decode_largest_fragment(x, e, vocab)[0] is None   # one fragment: nothing to correct

    # C-C-C plus a lone O: disconnected before correction, propane after
    x = torch.tensor([c, c, c, o, 0])
    e = torch.zeros(5, 5, dtype=torch.long)
    e[0, 1] = e[1, 0] = e[1, 2] = e[2, 1] = 1
    e[3, 4] = e[4, 3] = 1   # a bond to a padding slot is ignored
    assert decode(x, e, vocab) == (None, "disconnected: 2 fragments")
    assert decode(x, e, vocab, correct=True) == ("CCC", "ok")
    assert decode_largest_fragment(x, e, vocab) == ("CCC", "ok")


def test_decode_rejects_malformed_tensors(vocab):
    with pytest.raises(VocabError, match="expected node_types"):
        decode(torch.zeros(3, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long), vocab)
    with pytest.raises(VocabError, match="outside the vocabulary"):
        decode(torch.tensor([99]), torch.zeros(1, 1, dtype=torch.long), vocab)
