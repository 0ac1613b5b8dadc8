"""Typed view of ``params.yaml``.

Every stage takes one of these dataclasses, never a raw dict, so a misspelt knob fails when the file
is loaded, not halfway through a run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """params.yaml is malformed or names an unknown knob."""


@dataclass
class DataConfig:
    sources: list[str] = field(default_factory=lambda: ["qm9-sample"])
    smiles_column: str | None = None
    target_columns: list[str] | None = None
    max_heavy_atoms: int = 50
    limit: int | None = None
    out_dir: str = "data/molecules"


@dataclass
class ConformerConfig:
    method: str = "etkdgv3-mmff"
    timeout_s: float = 10.0
    max_iterations: int = 200


@dataclass
class FeaturizeConfig:
    featurizer: str = "atom-bond-v1"
    conformers: ConformerConfig = field(default_factory=ConformerConfig)
    workers: int | None = None
    out_dir: str = "data/features"


@dataclass
class ModelConfig:
    n_atom_basis: int = 32
    n_interactions: int = 3
    n_rbf: int = 20
    cutoff: float = 5.0


@dataclass
class PretrainConfig:
    enabled: bool = True
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-4
    noise_std: float = 0.05
    mask_rate: float = 0.15
    denoise_weight: float = 1.0
    mask_weight: float = 1.0
    max_molecules: int | None = None
    lr_schedule: str = "constant"  # or "cosine": decay to 1 % over the epochs (benchmarks/README.md, pretraining)
    eht_weight: float = 1.0  # > 0: also predict extended-Hueckel HOMO/LUMO/gap of each structure (molgnn.chem.eht;
                             # benchmarks/README.md: it took the 1,000-label gain from 16.5 to 26.3 %); 0: off

    def __post_init__(self) -> None:
        if not self.eht_weight >= 0:
            raise ConfigError(f"pretrain.eht_weight must be >= 0, got {self.eht_weight!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"pretrain.lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}")


@dataclass
class FinetuneConfig:
    targets: list[str] = field(default_factory=lambda: ["gap"])
    init: str = "pretrained"
    split: str = "scaffold"
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    epochs: int = 8
    batch_size: int = 32
    lr: float = 5e-4
    ensemble_size: int = 3
    patience: int = 10
    encoder_lr_scale: float = 2.0  # lr multiplier of a *pretrained* encoder (the head trains at lr); benchmarks/README.md

    def __post_init__(self) -> None:
        if not self.encoder_lr_scale > 0:
            raise ConfigError(f"finetune.encoder_lr_scale must be positive, not {self.encoder_lr_scale}")
        if self.init not in ("pretrained", "scratch"):
            raise ConfigError(f"finetune.init must be 'pretrained' or 'scratch', not {self.init!r}")
        if self.split not in ("random", "scaffold"):
            raise ConfigError(f"finetune.split must be 'random' or 'scaffold', not {self.split!r}")
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ConfigError(f"finetune.fractions must be three numbers summing to 1, not {self.fractions}")
        if self.ensemble_size < 1:
            raise ConfigError("finetune.ensemble_size must be at least 1")


@dataclass
class VAEConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    latent_dim: int = 32
    hidden_dim: int = 128


@dataclass
class DiffusionConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-4
    timesteps: int = 100
    hidden_dim: int = 64
    n_layers: int = 3


@dataclass
class GuidanceConfig:
    """Regressor guidance of the diffusion sampler toward ``low <= property <= high`` (None = open)."""

    enabled: bool = False
    property: str = "qed"
    low: float | None = 0.55
    high: float | None = None
    scale: float = 3.0
    edge_scale: float | None = None   # the bonds' own strength (None: scale); 0 keeps validity best
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-4
    t_exponent: float = 3.0
    hidden_dim: int = 64
    n_layers: int = 2

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ConfigError("generate.guidance: give low and/or high")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ConfigError(f"generate.guidance: low {self.low} > high {self.high}")
        if not self.scale >= 0:
            raise ConfigError(f"generate.guidance.scale must be >= 0, got {self.scale}")
        if self.edge_scale is not None and not self.edge_scale >= 0:
            raise ConfigError(f"generate.guidance.edge_scale must be >= 0 or null, got {self.edge_scale}")


@dataclass
class GenerateConfig:
    models: list[str] = field(default_factory=lambda: ["vae", "diffusion"])
    max_heavy_atoms: int = 9
    vae: VAEConfig = field(default_factory=VAEConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    n_samples: int = 200
    out_dir: str = "runs/generated"

    def __post_init__(self) -> None:
        unknown = set(self.models) - {"vae", "diffusion"}
        if unknown:
            raise ConfigError(f"generate.models: unknown model(s) {sorted(unknown)}; use vae, diffusion")


@dataclass
class FilterConfig:
    require_unique: bool = True
    require_novel: bool = True
    reject_pains: bool = True
    min_qed: float = 0.0
    max_sa: float = 10.0
    max_lipinski_violations: int = 1


@dataclass
class ScreenConfig:
    rank_by: str = "gap"
    descending: bool = True
    out: str = "runs/screen/candidates.csv"


@dataclass
class TrackingConfig:
    mlflow_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "molgnn"


@dataclass
class Params:
    seed: int = 0
    device: str = "auto"             # auto (CUDA when present) | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    featurize: FeaturizeConfig = field(default_factory=FeaturizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Stable hash of every knob: tags each run so equal settings are findable."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Dotted keys, for logging as MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'params'} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where or 'params'}: {sorted(unknown)}")
    kwargs = {}
    for name, value in raw.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'params'}: {exc}") from exc


def from_dict(raw: dict[str, Any] | None) -> Params:
    return _build(Params, raw or {}, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return from_dict(raw)
