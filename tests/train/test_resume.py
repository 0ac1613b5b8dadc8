"""Fast path and resumable fine-tuning: same batches on the device, bit-identical resume, time budgets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import molgnn.train.finetune as ft
from molgnn.config import ModelConfig
from molgnn.featurize.atomistic import DeviceBatcher, make_batch
from molgnn.featurize.neighbors import neighbor_pairs, pair_table
from molgnn.train.finetune import finetune
from molgnn.train.steps import cosine_time_lr
from molgnn.train.resume import ResumeError, ResumeMismatchError, fingerprint, load_state, save_state

CFG = ModelConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=3.0)


SPLIT = (np.arange(28), np.arange(28, 34), np.arange(34, 40))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pair_table_matches_neighbor_pairs(synthetic_atomistic):
    ds = synthetic_atomistic(40, min_atoms=3)
    pair_ptr, local = pair_table(ds.positions, ds.ptr, 3.0, chunk_atoms=50)  # several chunks
    i, j = neighbor_pairs(ds.positions, ds.n_atoms, 3.0)
    mol = torch.repeat_interleave(torch.arange(len(ds)), ds.n_atoms)
    assert int(pair_ptr[-1]) == i.numel() == local.shape[0]
    assert torch.equal(local[:, 0].long(), i - ds.ptr[mol[i]]) and torch.equal(local[:, 1].long(), j - ds.ptr[mol[i]])
    assert torch.equal(pair_ptr[1:] - pair_ptr[:-1], torch.bincount(mol[i], minlength=len(ds)))


def test_device_batcher_gives_make_batch_batches(synthetic_atomistic):
    ds = synthetic_atomistic(40, min_atoms=3)
    batcher = DeviceBatcher(ds, 3.0)
    order = np.random.default_rng(1).permutation(len(ds))
    got = list(batcher.batches(order, 7))
    assert len(got) == math.ceil(len(ds) / 7)
    for k, batch in enumerate(got):
        ref = make_batch(ds, order[k * 7:(k + 1) * 7], cutoff=3.0)
        assert batch.keys() == ref.keys()
        for key in ref:
            assert batch[key].dtype == ref[key].dtype
            assert torch.equal(batch[key].nan_to_num(), ref[key].nan_to_num()), key
    assert len(list(batcher.batches(order, 7, drop_last=True))) == len(ds) // 7
    with pytest.raises(IndexError):
        next(batcher.batches([len(ds)], 2))


def test_fast_options_train_the_same_model(synthetic_atomistic, finetune_cfg, untimed):
    ds = synthetic_atomistic(40, min_atoms=3)
    plain = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0)
    fast = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, device_batches=True, check_every=0)
    assert _same_weights(plain.checkpoint["state_dict"], fast.checkpoint["state_dict"])
    assert untimed(plain.history) == untimed(fast.history)
    assert all("elapsed_seconds" in h for h in fast.history)


class _StopAfter:
    """A Deadline that expires after ``n`` checks (deterministic stand-in for a wall clock)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, max_seconds):
        outer = self

        class D:
            def expired(self):
                outer.n -= 1
                return max_seconds is not None and outer.n < 0

            def elapsed(self):
                return 0.0
        return D()


@pytest.mark.parametrize("stop_after", [3, 6, 11])  # mid-epoch and on epoch boundaries (6 steps/epoch)
def test_resumed_run_equals_uninterrupted_run(synthetic_atomistic, finetune_cfg, untimed,
                                              tmp_path, monkeypatch, stop_after):
    ds = synthetic_atomistic(40, min_atoms=3)
    ref = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, device_batches=True, check_every=0)
    state = tmp_path / "state.pt"
    monkeypatch.setattr(ft, "Deadline", _StopAfter(stop_after))
    part = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, device_batches=True, check_every=0,
                    state_path=state, max_seconds=1.0)
    assert not part.completed and state.exists()
    saved = load_state(state, kind="finetune-state")
    assert not saved["completed"] and 1 <= saved["global_step"] < 18
    calls = 0
    while True:  # resume until done, each call again stopped after a few steps
        monkeypatch.setattr(ft, "Deadline", _StopAfter(4))
        res = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, device_batches=True, check_every=0,
                       state_path=state, max_seconds=1.0)
        calls += 1
        if res.completed:
            break
        assert calls < 10
    assert _same_weights(ref.checkpoint["state_dict"], res.checkpoint["state_dict"])
    assert untimed(ref.history) == untimed(res.history)
    assert res.test_metrics == ref.test_metrics
    # a completed state: calling again trains nothing and returns the same result
    again = finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, device_batches=True, check_every=0, state_path=state)
    assert again.completed and _same_weights(again.checkpoint["state_dict"], res.checkpoint["state_dict"])


def test_resume_refuses_another_run(synthetic_atomistic, finetune_cfg, tmp_path):
    ds = synthetic_atomistic(40, min_atoms=3)
    state = tmp_path / "state.pt"
    finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=1), seed=0, state_path=state)
    with pytest.raises(ResumeMismatchError, match="another run"):
        finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=1, lr=1e-3), seed=0, state_path=state)
    with pytest.raises(ResumeMismatchError):
        finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=1), seed=1, state_path=state)
    with pytest.raises(ResumeError, match="holds a"):
        load_state(state, kind="pretrain-state")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ResumeError, match="cannot read"):
        load_state(tmp_path / "junk.pt", kind="finetune-state")
    assert load_state(tmp_path / "absent.pt", kind="finetune-state") is None


def test_state_file_round_trip(tmp_path):
    state = {"kind": "x", "fingerprint": fingerprint(a=np.arange(3), b={"c": 1}), "t": torch.ones(2)}
    save_state(tmp_path / "s.pt", state)
    back = load_state(tmp_path / "s.pt", kind="x", fingerprint_=state["fingerprint"])
    assert torch.equal(back["t"], state["t"])
    assert fingerprint(a=np.arange(3)) != fingerprint(a=np.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


def test_time_budget_and_cosine_time_schedule(synthetic_atomistic, finetune_cfg):
    ds = synthetic_atomistic(40, min_atoms=3)
    res = finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=1000, patience=1000), seed=0, scheduler="cosine-time",
                   time_budget_s=1.5, warmup_steps=3, device_batches=True, check_every=0)
    assert res.completed and 1 <= len(res.history) < 1000
    assert res.train_seconds >= 1.5
    assert res.history[-1]["lr"] < 2e-3 * 0.5  # decayed towards zero by the end of the budget
    assert cosine_time_lr(1.0, 0.0, 10.0, 0, 4, 0.0) == pytest.approx(0.25)
    assert cosine_time_lr(1.0, 5.0, 10.0, 100, 4, 0.1) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="needs time_budget_s"):
        finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, scheduler="cosine-time")


def test_amp_and_eval_options_run_on_cpu(synthetic_atomistic, finetune_cfg):
    ds = synthetic_atomistic(40, min_atoms=3)
    res = finetune(ds, None, SPLIT, CFG, finetune_cfg(epochs=4), seed=0, amp="bf16", device_batches=True, check_every=0,
                   eval_every=2, eval_test=True)
    assert [("val_score" in h) for h in res.history] == [False, True, False, True]
    assert all(math.isfinite(h["test_mae_gap"]) for h in res.history if "val_score" in h)
    assert math.isfinite(res.test_metrics["gap"]["mae"])
    with pytest.raises(ValueError, match="amp must be"):
        finetune(ds, None, SPLIT, CFG, finetune_cfg(), seed=0, amp="fp8")
