"""The learning-curve plots draw what the trainers record (the fine-tuning validation curve once
vanished: the history said ``val_mae_<target>``, the plot asked for ``val_mae``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from molgnn.config import FinetuneConfig, ModelConfig
from molgnn.report import plots
from molgnn.train import history_keys as H

CFG = ModelConfig(n_atom_basis=16, n_interactions=1, n_rbf=8, cutoff=4.0)
SPLIT = (np.arange(24), np.arange(24, 32), np.arange(32, 40))


@pytest.fixture
def finetune_history(synthetic_atomistic):
    """A real (tiny) fine-tuning history: the keys the trainer writes, not hand-typed ones."""
    from molgnn.train.finetune import finetune

    ds = synthetic_atomistic(40, min_atoms=3)
    cfg = FinetuneConfig(targets=["gap", "U0"], epochs=3, batch_size=8, lr=2e-3, patience=10)
    return finetune(ds, None, SPLIT, CFG, cfg, seed=0).history


def _lines(fig) -> dict[str, np.ndarray]:
    (ax,) = fig.axes
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()}


def test_finetune_curve_draws_training_and_validation(finetune_history):
    keys = H.finetune_curve_keys(finetune_history)
    assert keys == [H.TRAIN_LOSS, H.val_mae("gap"), H.val_mae("U0")]
    lines = _lines(plots.learning_curve(finetune_history, keys, "fine-tuning"))
    assert set(lines) == set(keys)
    for key in (H.val_mae("gap"), H.val_mae("U0")):
        assert len(lines[key]) == 3 and np.isfinite(lines[key]).all(), key   # evaluated every epoch


def test_a_key_no_epoch_records_is_an_error_not_a_missing_curve(finetune_history):
    with pytest.raises(KeyError, match=r"no epoch records \['val_mae'\]"):
        plots.learning_curve(finetune_history, [H.TRAIN_LOSS, "val_mae"], "fine-tuning")


def test_pretrain_curve_keys_follow_the_objectives():
    plain = [{H.EPOCH: 1, H.LOSS: 1.0, H.DENOISE_LOSS: 0.5, H.MASK_LOSS: 0.4}]
    assert H.pretrain_curve_keys(plain) == [H.LOSS, H.DENOISE_LOSS, H.MASK_LOSS]
    with_eht = [{**plain[0], H.EHT_LOSS: 0.3}]
    assert H.pretrain_curve_keys(with_eht)[-1] == H.EHT_LOSS
    assert set(_lines(plots.learning_curve(with_eht, H.pretrain_curve_keys(with_eht), "pretraining"))) == {
        H.LOSS, H.DENOISE_LOSS, H.MASK_LOSS, H.EHT_LOSS}


def test_stage_and_report_plot_the_validation_curve(finetune_history, tmp_path, monkeypatch):
    """The fine-tuning stage's MLflow figure and the run report's figure ask for the recorded keys."""
    from molgnn.report.run_report import write_report
    from molgnn.stages.common import StageResult

    drawn: list[list[str]] = []
    real = plots.learning_curve

    def spy(history, keys, title):
        fig = real(history, keys, title)
        drawn.append(sorted(_lines(fig)))
        return fig

    monkeypatch.setattr(plots, "learning_curve", spy)
    path = tmp_path / "history.json"
    path.write_text(json.dumps([finetune_history]))
    result = StageResult(stage="finetune", key="k", out_dir=str(tmp_path), outputs={"history": str(path)},
                         metrics={H.test_metric("mae", "gap"): 0.123, H.calib_metric(H.CALIB_SCALE, "gap"): 1.25},
                         info={"units": {"gap": "eV"}, "mlflow_run_id": "r"})
    text = write_report({"finetune": result}, tmp_path / "report", {}).read_text()
    assert "0.123" in text and "1.25" in text          # the test MAE and calibration keys the stage writes
    assert drawn and all(H.val_mae("gap") in keys for keys in drawn)
