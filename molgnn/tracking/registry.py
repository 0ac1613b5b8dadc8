"""The MLflow Model Registry side of a pipeline run: the models users look for, and the input data.

Each model the pipeline trains is one registered model with a version per distinct training (the
stage's content key): a rerun that found its stages cached adds no version. A version's files are
the stage's whole model folder (weights, calibration, applicability domain), logged under the
stage run's ``model_package`` artifact path, so ``models:/NAME@champion`` downloads a folder that
``molgnn screen`` / ``molgnn generate`` read like a run folder's. The alias ``champion`` follows the
newest version (move it with ``MlflowClient.set_registered_model_alias`` to pin another).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from molgnn.tracking.mlflow_tracking import Tracker

PACKAGE_PATH = "model_package"    # artifact path of a registered version's folder inside its run
CHAMPION = "champion"
TAG_STAGE_KEY = "molgnn.stage_key"
TAG_PIPELINE_RUN = "molgnn.pipeline_run"
MODELS_URI = "models:/"
# files of a model folder that are records of the training, not part of the model
_NOT_MODEL = {"stage.json", "history.json", "split.csv", "test_predictions.csv", "test_predictions_2d.csv",
              "samples.csv", "training_rejects.csv"}
_NOT_MODEL_SUFFIXES = (".png", ".svg")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    new: bool        # False: the same training was registered before (a cached stage)


def model_names(experiment: str) -> dict[str, str]:
    """Registered-model name of each model kind a pipeline run makes, prefixed by the experiment."""
    return {"screening": f"{experiment}-screening", "ensemble-3d": f"{experiment}-ensemble-3d",
            "generator-vae": f"{experiment}-generator-vae",
            "generator-diffusion": f"{experiment}-generator-diffusion"}


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name not in _NOT_MODEL and not p.name.endswith(_NOT_MODEL_SUFFIXES))


def register_folder(tracker: Tracker, name: str, folder: str | Path, *, run_id: str, stage_key: str,
                    pipeline_run_id: str = "", description: str = "") -> RegisteredVersion:
    """Register ``folder`` (a stage's model folder) as a version of ``name``, once per ``stage_key``.

    The files are logged into ``run_id`` (the stage's MLflow run in this pipeline run); the new
    version gets the ``champion`` alias."""
    client = tracker.client
    folder = Path(folder)
    if client.search_registered_models(f"name = '{name}'"):
        same = client.search_model_versions(f"name = '{name}' and tag.`{TAG_STAGE_KEY}` = '{stage_key}'")
        if same:
            return RegisteredVersion(name, str(max(int(v.version) for v in same)), new=False)
    else:
        client.create_registered_model(name, description=description or None)
    files = _model_files(folder)
    if not files:
        raise FileNotFoundError(f"no model files in {folder} to register as {name}")
    with tempfile.TemporaryDirectory() as tmp:   # only the model's files, through a link (no copy)
        for f in files:
            try:
                os.link(f, Path(tmp) / f.name)
            except OSError:     # another file system
                shutil.copy2(f, Path(tmp) / f.name)
        client.log_artifacts(run_id, tmp, PACKAGE_PATH)
    version = client.create_model_version(name, f"runs:/{run_id}/{PACKAGE_PATH}", run_id=run_id,
                                          tags={TAG_STAGE_KEY: stage_key, TAG_PIPELINE_RUN: pipeline_run_id})
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return RegisteredVersion(name, str(version.version), new=True)


def log_input_data(tracker: Tracker, run_ids: list[str], molecules: Path, md5: str, *, name: str,
                   targets: list[str] | None = None, context: str = "training") -> None:
    """Log the versioned molecules table as an MLflow Dataset (digest: the DVC md5) on each run."""
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    df = pd.read_parquet(molecules)
    cols = [c for c in df.columns if c not in ("atomic_numbers", "positions")]  # nested lists: no schema
    present = [t for t in (targets or []) if t in df.columns]
    # MLflow warns that a local path fits two source types (both local) and that integer columns
    # cannot hold missing values; neither applies to a logged, never-served table
    with warnings.catch_warnings(action="ignore", category=UserWarning):
        dataset = from_pandas(df[cols], source=str(molecules), name=name, digest=md5,
                              targets=present[0] if len(present) == 1 else None)
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
    for run_id in run_ids:
        if run_id:
            tracker.client.log_inputs(run_id, datasets=[entity])


def is_models_uri(value: str | os.PathLike) -> bool:
    return str(value).startswith(MODELS_URI)


def model_version(uri: str, tracking_uri: str):
    """The registered ``ModelVersion`` that ``uri`` names (``models:/NAME@alias``, ``models:/NAME/VERSION``
    or ``models:/NAME/latest``); a clear error listing the registered models when there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rest = uri[len(MODELS_URI):]
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = rest.rpartition("/")
        if not name:
            raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ValueError(f"{uri}: registered model {name!r} has no versions")
            version = str(max(int(v.version) for v in versions))
        return client.get_model_version(name, version)
    except MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        raise ValueError(f"{uri}: not in the registry at {tracking_uri} ({exc.message.splitlines()[0]}); "
                         f"registered models: {', '.join(known) or 'none'}") from None


def source_run(uri: str, tracking_uri: str) -> str:
    """The MLflow run that produced the registered version ``uri`` names (its lineage)."""
    return model_version(uri, tracking_uri).run_id


def download_model(uri: str, tracking_uri: str, cache_dir: Path) -> Path:
    """The folder of the registered version ``uri`` names (``models:/NAME@alias`` or
    ``models:/NAME/VERSION``), downloaded once into ``cache_dir/NAME/VERSION`` (published by rename,
    so a killed download leaves no half folder)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = model_version(uri, tracking_uri)
    name = mv.name
    dest = cache_dir / name / str(mv.version)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{mv.version}-", dir=dest.parent))
    try:
        local = Path(client.download_artifacts(mv.run_id, PACKAGE_PATH, str(staging)))
        try:
            os.replace(local, dest)
        except OSError:
            if not dest.is_dir():   # else a concurrent download published it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
