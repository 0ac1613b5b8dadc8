"""Keys of the training histories (one dict per epoch) and of the fine-tuning metrics.

The trainers write them; the stages, the plots and the run report read them. Spelled once here, so
a renamed key breaks an import or a test instead of silently dropping a curve from a plot (the
fine-tuning history recorded ``val_mae_<target>`` while the plots asked for ``val_mae``).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

# every history
EPOCH = "epoch"
LR = "lr"
SECONDS = "seconds"                            # training seconds of this epoch
MOLECULES_PER_SECOND = "molecules_per_second"

# fine-tuning (molgnn.train.finetune)
TRAIN_LOSS = "train_loss"                      # mean scaled, masked MSE over the epoch's molecules
VAL_SCORE = "val_score"                        # mean over targets of val MAE / target scale: selects weights
ELAPSED_SECONDS = "elapsed_seconds"            # training seconds so far, across resumed calls
WARMUP_SECONDS = "warmup_seconds"              # compile / CUDA-graph capture time within the epoch
CUDA_GRAPHS_CAPTURED = "cuda_graphs_captured"
VAL_MAE_PREFIX = "val_mae_"
VAL_ROC_AUC_PREFIX = "val_roc_auc_"            # classification targets (molgnn.train.tasks)
TEST_MAE_PREFIX = "test_mae_"

# pretraining (molgnn.train.pretrain)
LOSS = "loss"
DENOISE_LOSS = "denoise_loss"
MASK_LOSS = "mask_loss"
MASK_ACCURACY = "mask_accuracy"
EHT_LOSS = "eht_loss"                          # only when the extended-Hückel objective is on


def val_mae(target: str) -> str:
    """History key of one target's validation MAE, e.g. ``val_mae_gap``."""
    return VAL_MAE_PREFIX + target


def val_roc_auc(target: str) -> str:
    """History key of one classification target's validation ROC-AUC, e.g. ``val_roc_auc_toxic``."""
    return VAL_ROC_AUC_PREFIX + target


def test_average(metric: str) -> str:
    """Fine-tuning stage metric averaged over the classification targets, e.g. ``test_roc_auc_avg``."""
    return f"test_{metric}_avg"


def test_mae(target: str) -> str:
    """History key of one target's test MAE (fine-tuning with ``eval_test``), e.g. ``test_mae_gap``."""
    return TEST_MAE_PREFIX + target


def test_metric(metric: str, target: str) -> str:
    """Fine-tuning stage metric of the test set, e.g. ``test_metric("rmse", "gap") == "test_rmse_gap"``."""
    return f"test_{metric}_{target}"


# uncertainty calibration of the fine-tuned ensemble, per target (molgnn.stages.finetune)
CALIB_SPEARMAN = "spearman"                    # Spearman(ensemble std, absolute error)
CALIB_SCALE = "scale"                          # std multiplier fitted on the validation split
CALIB_COVERAGE95_RAW = "coverage95_raw"
CALIB_COVERAGE95 = "coverage95"
CALIB_MISCAL_AREA_RAW = "miscal_area_raw"
CALIB_MISCAL_AREA = "miscal_area"


def calib_metric(name: str, target: str) -> str:
    """Fine-tuning stage metric of the calibration, e.g. ``calib_metric(CALIB_SCALE, "gap") == "calib_scale_gap"``."""
    return f"calib_{name}_{target}"


def _present(history: Sequence[Mapping[str, object]], keys: Iterable[str]) -> list[str]:
    seen = {k for h in history for k in h}
    return [k for k in keys if k in seen]


def finetune_curve_keys(history: Sequence[Mapping[str, object]]) -> list[str]:
    """What the fine-tuning learning curve draws: the training loss and each target's validation
    MAE found in ``history`` (in the order they first appear)."""
    targets = dict.fromkeys(k for h in history for k in h if k.startswith((VAL_MAE_PREFIX, VAL_ROC_AUC_PREFIX)))
    return [TRAIN_LOSS, *targets]


def pretrain_curve_keys(history: Sequence[Mapping[str, object]]) -> list[str]:
    """What the pretraining learning curve draws: total, denoising and masking losses, and the EHT
    loss when that objective was trained."""
    return [LOSS, DENOISE_LOSS, MASK_LOSS, *_present(history, [EHT_LOSS])]
