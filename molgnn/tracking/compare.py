"""Tracked runs side by side: one column per run, parameters then metrics."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from molgnn.config import load_params


def compare_table(params_path: Path, *, stage: str = "finetune", filter_string: str | None = None,
                  last: int = 5, metrics: list[str] | None = None,
                  params: list[str] | None = None) -> pd.DataFrame:
    from molgnn.tracking.mlflow_tracking import TAG_DATA_MD5, TAG_GIT_COMMIT, TAG_STAGE, Tracker

    cfg = load_params(params_path)
    tracker = Tracker.connect(cfg.tracking, Path(params_path).resolve().parent)
    tracker.close_dangling()   # a run whose process was killed shows as KILLED, not RUNNING forever
    query = f"tags.`{TAG_STAGE}` = '{stage}'" + (f" and {filter_string}" if filter_string else "")
    runs = tracker.client.search_runs([tracker.experiment_id], query, max_results=last,
                                      order_by=["attributes.start_time DESC"])
    if not runs:
        return pd.DataFrame()
    columns = {}
    all_params = sorted({k for r in runs for k in r.data.params})
    if params is None:  # by default only the parameters that differ between the runs
        params = [k for k in all_params if len({r.data.params.get(k) for r in runs}) > 1]
    all_metrics = sorted({k for r in runs for k in r.data.metrics})
    metric_names = metrics or all_metrics
    for r in runs:
        col = {"start": pd.Timestamp(r.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
               "status": r.info.status,
               "git": r.data.tags.get(TAG_GIT_COMMIT, "")[:10],
               "data md5": (r.data.tags.get(TAG_DATA_MD5) or "")[:10]}
        col.update({f"param {k}": r.data.params.get(k, "") for k in params})
        col.update({k: r.data.metrics.get(k) for k in metric_names})
        columns[r.info.run_id[:8]] = col
    return pd.DataFrame(columns)


def compare_runs(params_path: Path, **kwargs) -> str:
    table = compare_table(params_path, **kwargs)
    if table.empty:
        return "no matching runs"
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        return table.to_string()
