"""Resumable generator training: state files, time budget, LR schedule, EMA."""
from pathlib import Path

import pytest
import torch

from molgnn.generate.checkpoints import load_generator, save_generator
from molgnn.generate.training import (
    TrainingStateError,
    learning_rate,
    train_generator,
)

TINY = ["CC(=O)O", "c1ccoc1", "C#N", "OCC1CC1", "CC1(C)CN1", "N#CC1=CC=CN1", "O=C1CC2OC12", "CCO", "CCN"]
SMALL = {
    "vae": dict(latent_dim=8, hidden_dim=32, n_layers=2),
    "diffusion": dict(timesteps=10, hidden_dim=32, n_layers=2),
}


def run(kind, state=None, epochs=4, **kw):
    opts = dict(epochs=epochs, batch_size=4, lr=1e-3, seed=0, max_nodes=9, lr_schedule="cosine",
                warmup_steps=3, ema_decay=0.9, state_path=state, checkpoint_every=0.0)
    opts.update(kw)
    return train_generator(kind, TINY, **{**SMALL[kind], **opts})


@pytest.mark.parametrize("kind", ["vae", "diffusion"])
def test_resume_reproduces_uninterrupted_training(untimed, kind, tmp_path: Path):
    full = run(kind)
    state = tmp_path / "state.pt"
    first = run(kind, state, on_epoch_end=lambda rec: rec["epoch"] >= 2)   # stop after epoch 2
    assert first.stop_reason == "callback" and len(first.history) == 2 and state.exists()
    resumed = run(kind, state)
    assert resumed.stop_reason == "epochs" and resumed.steps == full.steps
    assert untimed(resumed.history) == untimed(full.history)
    a, b = full.model.state_dict(), resumed.model.state_dict()   # EMA weights
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished state resumes to the same model without training further.
    again = run(kind, state)
    assert again.steps == full.steps and all(torch.equal(a[k], again.model.state_dict()[k]) for k in a)


def test_resume_inside_an_epoch_is_exact(untimed, tmp_path: Path):
    """Budget stops land mid-epoch: the saved position, permutation and partial sums carry over."""
    full = run("vae", epochs=3, batch_size=2)
    state = tmp_path / "s.pt"
    calls = {"n": 0}

    def stop_soon(model, info):   # evaluation hook used as a deterministic interrupt point
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("vae", state, epochs=3, batch_size=2, evaluate_every=1e-12, on_evaluate=stop_soon)
    saved = torch.load(state, weights_only=True)
    assert 0 < saved["batch_start"] < len(TINY) or saved["epoch"] > 1
    resumed = run("vae", state, epochs=3, batch_size=2)
    assert untimed(resumed.history) == untimed(full.history)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_budget_stops_and_checkpoints(tmp_path: Path):
    state = tmp_path / "state.pt"
    trained = run("diffusion", state, epochs=10_000, max_seconds=1.0)
    assert trained.stop_reason == "time budget"
    assert 1.0 <= trained.train_seconds < 5.0 and state.exists()
    assert trained.history and trained.history[-1]["elapsed"] == pytest.approx(trained.train_seconds)
    # The budget is over all calls: resuming with the same budget trains no further.
    again = run("diffusion", state, epochs=10_000, max_seconds=1.0)
    assert again.steps == trained.steps and again.stop_reason == "time budget"
    more = run("diffusion", state, epochs=10_000, max_seconds=1.5)
    assert more.steps > trained.steps
    # The generator checkpoint records how training ended.
    loaded = load_generator(save_generator(more, tmp_path / "g.pt"))
    assert loaded.steps == more.steps and loaded.stop_reason == "time budget" and loaded.ema_decay == 0.9


def test_bad_state_files_give_clear_errors(tmp_path: Path):
    bad = tmp_path / "state.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TrainingStateError, match="not a readable training-state file"):
        run("vae", bad)
    torch.save({"format": "something else"}, bad)
    with pytest.raises(TrainingStateError, match="not a molgnn generator training state"):
        run("vae", bad)
    good = tmp_path / "good.pt"
    run("vae", good, epochs=1)
    with pytest.raises(TrainingStateError, match=r"another run \(differs in \['batch_size'\]\)"):
        run("vae", good, batch_size=3)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])   # truncated by a crash outside atomic writes
    with pytest.raises(TrainingStateError, match="delete it to start over"):
        run("vae", good)


def test_learning_rate_schedule():
    assert learning_rate(1.0, 0, warmup_steps=4, schedule="constant", progress=0) == 0.25
    assert learning_rate(1.0, 10, warmup_steps=4, schedule="constant", progress=0.5) == 1.0
    assert learning_rate(1.0, 10, warmup_steps=0, schedule="cosine", progress=0.0) == 1.0
    assert learning_rate(1.0, 10, warmup_steps=0, schedule="cosine", progress=1.0, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert learning_rate(1.0, 10, warmup_steps=0, schedule="cosine", progress=0.5, min_lr_ratio=0.0) == pytest.approx(0.5)


def test_bf16_autocast_trains_on_cpu():
    trained = run("diffusion", epochs=2, bf16=True, ema_decay=None)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trained.history)
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())
