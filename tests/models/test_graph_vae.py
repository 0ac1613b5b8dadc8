import pytest
import torch

from molgnn.featurize.dense_graph import decode
from molgnn.models.graph_vae import GraphVAE

def make(vocab, **kw) -> GraphVAE:
    torch.manual_seed(0)
    return GraphVAE(vocab.n_node_classes, vocab.n_edge_classes, 9, latent_dim=16, hidden_dim=64, **kw)


def test_shapes_and_symmetric_edge_logits(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab)
    mu, logvar = model.encode(x, e)
    assert mu.shape == logvar.shape == (len(x), 16)
    node_logits, edge_logits = model.decode(mu)
    assert node_logits.shape == (len(x), 9, vocab.n_node_classes)
    assert edge_logits.shape == (len(x), 9, 9, vocab.n_edge_classes)
    assert torch.allclose(edge_logits, edge_logits.transpose(1, 2))
    parts = model.loss(x, e)
    assert set(parts) == {"loss", "node_loss", "edge_loss", "kl"} and parts["loss"].requires_grad


def test_overfits_tiny_set_and_reconstructs(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, beta=0.01)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(150):
        parts = model.loss(x, e, generator=gen)
        first = first if first is not None else parts["loss"].item()
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
    assert parts["loss"].item() < 0.2 * first
    with torch.no_grad():
        xr, er = model.graphs_from_logits(*model.decode(model.encode(x, e)[0]))
    recon = [decode(xr[i], er[i], vocab)[0] for i in range(len(x))]
    truth = [decode(x[i], e[i], vocab)[0] for i in range(len(x))]
    assert sum(r == t for r, t in zip(recon, truth)) >= 6


def test_sample_is_deterministic_symmetric_and_masked(tiny_dense_graphs):
    vocab, _, _ = tiny_dense_graphs
    model = make(vocab).eval()
    a = model.sample(5, generator=torch.Generator().manual_seed(1))
    b = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x, e = a
    assert x.shape == (5, 9) and e.shape == (5, 9, 9)
    assert torch.equal(e, e.transpose(1, 2)) and not e.diagonal(dim1=1, dim2=2).any()
    absent = x == 0
    assert not e[absent.unsqueeze(2).expand_as(e)].any()


def test_hparams_rebuild_the_model(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab).eval()
    clone = GraphVAE(**model.hparams).eval()
    clone.load_state_dict(model.state_dict())
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(model.sample(4, gen())[1], clone.sample(4, gen())[1])


def test_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="max_nodes"):
        GraphVAE(1, 4, 9)
