import pytest
import torch

from molgnn.models.graph_diffusion import (
    GraphDiffusion,
    cosine_alpha_bar,
    posterior_over_x0,
    sample_categorical,
    transition_matrix,
)

T = 20


def make(vocab, x, e, **kw) -> GraphDiffusion:
    torch.manual_seed(0)
    model = GraphDiffusion(vocab.n_node_classes, vocab.n_edge_classes, 9, timesteps=T, hidden_dim=32,
                           n_layers=2, n_heads=4, **kw)
    model.set_data_statistics(x, e)
    return model


def test_cosine_schedule_goes_from_clean_to_limit():
    ab = cosine_alpha_bar(100)
    assert ab.shape == (101,) and ab[0] == 1.0 and ab[-1] == 0.0
    assert (ab[1:] <= ab[:-1]).all()


def test_data_statistics(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, x, e)
    carbon = vocab.node_class(("C", 0)) - 1
    n_atoms = int((x > 0).sum())
    assert torch.isclose(model.node_marginals[carbon], (x == carbon + 1).sum() / n_atoms)
    assert torch.isclose(model.node_marginals.sum(), torch.tensor(1.0))
    assert torch.isclose(model.edge_marginals.sum(), torch.tensor(1.0)) and model.edge_marginals[0] > 0.5
    sizes = (x > 0).sum(1)
    assert torch.isclose(model.size_distribution[5], (sizes == 5).float().mean())


def test_transition_matrices_are_stochastic_and_compose(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, x, e)
    t = torch.arange(1, T + 1)
    for q in (*model.q_t(t), *model.q_bar(t)):
        assert (q >= 0).all() and torch.allclose(q.sum(-1), torch.ones(q.shape[:-1]), atol=1e-5)
    # Qbar_t = Q_1 Q_2 ... Q_t
    qx_t, _ = model.q_t(t)
    prod = torch.eye(model.n_x)
    for step in range(T):
        prod = prod @ qx_t[step]
        assert torch.allclose(prod, model.q_bar(torch.tensor([step + 1]))[0][0], atol=1e-5)


def test_noise_reaches_the_marginals_at_T(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, x, e)
    qx_T, qe_T = model.q_bar(torch.tensor([T]))
    assert torch.allclose(qx_T[0], model.node_marginals.expand(model.n_x, -1), atol=1e-6)
    assert torch.allclose(qe_T[0], model.edge_marginals.expand(model.n_e, -1), atol=1e-6)
    # empirically too: noised node types of many copies of the data follow m
    xs, es = x.repeat(200, 1), e.repeat(200, 1, 1)
    x0, e0, mask = model._split(xs, es)
    xt, et = model._noisy(x0, e0, torch.full((xs.shape[0],), T), mask, torch.Generator().manual_seed(0))
    freq = xt[mask].sum(0) / mask.sum()
    assert torch.allclose(freq, model.node_marginals, atol=0.02)
    assert torch.equal(et, et.transpose(1, 2))


def test_posterior_is_the_bayes_posterior():
    torch.manual_seed(0)
    k, m = 4, torch.tensor([0.5, 0.3, 0.15, 0.05])
    ab = cosine_alpha_bar(10)
    for t in (1, 4, 10):
        q_t = transition_matrix(ab[t] / ab[t - 1], m)
        q_prev = transition_matrix(ab[t - 1], m)
        x0_probs = torch.softmax(torch.randn(1, k, k), -1)           # M = k rows, one per z_t class
        z_t = torch.eye(k).unsqueeze(0)
        post = posterior_over_x0(z_t, x0_probs, q_t[None], q_prev[None])
        assert (post >= 0).all() and torch.allclose(post.sum(-1), torch.ones(1, k), atol=1e-6)
        # brute force: sum_c p(c) * q(z_{t-1}=j | x0=c) q(z_t | z_{t-1}=j) / normaliser
        expected = torch.zeros(k, k)
        for zt in range(k):
            for c in range(k):
                joint = q_prev[c] * q_t[:, zt]
                expected[zt] += x0_probs[0, zt, c] * joint / joint.sum()
        assert torch.allclose(post[0], expected, atol=1e-6)
        if t == 1:   # one step from the data: the posterior is the predicted x0
            assert torch.allclose(post[0], x0_probs[0], atol=1e-6)


def test_sample_categorical_matches_probabilities():
    probs = torch.tensor([0.1, 0.6, 0.3]).expand(20000, 3)
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    assert torch.allclose(torch.bincount(draws, minlength=3) / 20000.0, probs[0], atol=0.015)


def test_denoiser_is_permutation_equivariant_and_symmetric(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, x, e).eval()
    x0, e0, mask = model._split(x[:1], e[:1])
    mask = torch.ones_like(mask)
    xo, eo = model._one_hot(x0, e0, mask)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.5])
    with torch.no_grad():
        xl, el = model.denoiser(xo, eo, t, mask)
        xp, ep = model.denoiser(xo[:, perm], eo[:, perm][:, :, perm], t, mask)
    assert torch.allclose(el, el.transpose(1, 2), atol=1e-5)
    assert torch.allclose(xp, xl[:, perm], atol=1e-4)
    assert torch.allclose(ep, el[:, perm][:, :, perm], atol=1e-4)


def test_overfits_tiny_set(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, x, e)
    xs, es = x.repeat(4, 1), e.repeat(4, 1, 1)

    def held_loss(t: int) -> float:   # same t and noise each time, so the numbers are comparable
        with torch.no_grad():
            return model.loss(xs, es, torch.Generator().manual_seed(7), t=t)["loss"].item()

    before = {t: held_loss(t) for t in (2, T // 2)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):
        loss = model.loss(x, e, gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Little noise: the graph is nearly given and the model must learn to read it off.
    assert held_loss(2) < 0.5 * before[2]
    # Half noise: it must also learn which of the 8 molecules the noisy graph came from.
    assert held_loss(T // 2) < 0.85 * before[T // 2]


def test_sample_shapes_masks_and_determinism(tiny_dense_graphs):
    vocab, x, e = tiny_dense_graphs
    model = make(vocab, x, e).eval()
    a = model.sample(6, generator=torch.Generator().manual_seed(1))
    b = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    xs, es = a
    assert xs.shape == (6, 9) and es.shape == (6, 9, 9)
    assert torch.equal(es, es.transpose(1, 2)) and not es.diagonal(dim1=1, dim2=2).any()
    sizes = (xs > 0).sum(1)
    assert (model.size_distribution[sizes] > 0).all()          # sizes come from the training data
    assert all((xs[i, : sizes[i]] > 0).all() for i in range(6))  # atoms fill the first slots
    absent = xs == 0
    assert not es[absent.unsqueeze(2).expand_as(es)].any()
    with pytest.raises(ValueError, match="diffusion step"):
        model.loss(x, e, t=T + 1)
