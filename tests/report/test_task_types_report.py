"""The run report's fine-tuning section states each task's type and its metrics."""
from __future__ import annotations

from molgnn.report.run_report import write_report
from molgnn.stages.common import StageResult
from molgnn.train import history_keys as H


def test_report_shows_task_types_and_classification_scores(tmp_path):
    metrics = {H.test_metric("mae", "logS"): 0.512, H.test_metric("rmse", "logS"): 0.7,
               H.test_metric("roc_auc", "toxic"): 0.871, H.test_metric("pr_auc", "toxic"): 0.654,
               H.test_metric("ece", "toxic"): 0.043, H.test_metric("ece_calibrated", "toxic"): 0.021,
               H.test_metric("roc_auc", "approved"): 0.733,
               H.test_average("roc_auc"): 0.802, H.test_average("pr_auc"): 0.6, H.test_average("ece"): 0.05}
    info = {"units": {"logS": "log mol/L", "toxic": "", "approved": ""}, "mlflow_run_id": "r",
            "task_types": {"logS": "regression", "toxic": "classification", "approved": "classification"},
            "task_type_reasons": {"logS": "auto: labels are not all 0/1", "toxic": "auto: every label is 0 or 1",
                                  "approved": "declared"}}
    result = StageResult(stage="finetune", key="k", out_dir=str(tmp_path), outputs={}, metrics=metrics, info=info)
    text = write_report({"finetune": result}, tmp_path / "report", {}).read_text()
    assert "`toxic` classification (auto: every label is 0 or 1)" in text
    assert "`approved` classification (declared)" in text and "`logS` regression" in text
    assert "ROC-AUC" in text and "0.871" in text and "0.654" in text and "0.043" in text
    assert "ECE (calibrated)" in text and "0.021" in text
    assert "mean over tasks" in text and "0.802" in text
    assert "0.512" in text                                   # the regression row keeps its errors
    reg_table = text.split("Test-split errors")[1].split("Test-split classification")[0]
    assert "toxic" not in reg_table
