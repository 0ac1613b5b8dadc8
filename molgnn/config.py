"""Typed view of ``params.yaml``.

Every stage takes one of these dataclasses, never a raw dict. They are pydantic dataclasses: the
whole file is typed and range-checked when it is loaded, before any work starts, and every problem
is reported at once, one line each, naming the dotted key, the value and the form expected.
``dataclasses.asdict`` and attribute access work as on plain dataclasses.

YAML quirks handled: ``5e-4`` (a string to YAML 1.1) is the float 5e-4 wherever a number belongs;
a lone string where a list of strings belongs (``targets: gap``) is a one-element list; integers,
booleans and strings are strict (``2.5`` is not an epoch count, the string ``"false"`` is not a
boolean). An empty section (``generate:``) means its defaults.

What depends on the machine or the file system (is there a CUDA device, do the sources exist) is
checked separately by :func:`check_runnable`, which ``molgnn run`` calls before starting Prefect.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass


class ConfigError(ValueError):
    """params.yaml (or a ``--set`` override) is malformed, names an unknown knob or cannot run here.

    ``problems`` holds one line per problem (``key = value: expected ...``)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class _Invalid(ValueError):
    """Raised by a section's own checks (fields that depend on each other): ``(field, value, expected)``
    triples; the loader turns them into dotted-key lines."""

    def __init__(self, problems: list[tuple[str, Any, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k} = {_show(v)}: {e}" for k, v, e in problems))


def _check(problems: list[tuple[str, Any, str]]) -> None:
    if problems:
        raise _Invalid(problems)


# --- field types ------------------------------------------------------------------------------------

def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; a number written so is still a number."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value            # not a number: the float check reports it
    return value


def _one_as_list(value: Any) -> Any:
    """``targets: gap`` is ``[gap]`` (list('gap') would be ['g', 'a', 'p'])."""
    return [value] if isinstance(value, str) else value


def _none_as_empty(value: Any) -> Any:
    """An empty section (``generate:`` with nothing under it) means its defaults."""
    return {} if value is None else value


def _part(cls: type) -> Any:
    """A section inside another: ``None`` (an empty YAML section) means its defaults."""
    return Annotated[cls, BeforeValidator(_none_as_empty)]


def _listed_once(what: str):
    """A check of a list of ``what``: not empty, no entry twice."""
    def check(values: list[Any]) -> list[Any]:
        if not values:
            raise ValueError(f"at least one {what}")
        if _repeated(values):
            raise ValueError(f"each {what} once ({_repeated(values)} repeated)")
        return values
    return AfterValidator(check)


def _device(value: str) -> str:
    if not DEVICE_PATTERN.fullmatch(value):
        raise ValueError("auto, cpu, cuda or cuda:N")
    return value


def _split_fractions(values: list[float]) -> list[float]:
    if len(values) != 3 or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError("three fractions (train, validation, test) summing to 1")
    if not (values[0] > 0 and values[1] > 0):
        raise ValueError("positive train and validation fractions (early stopping needs validation)")
    return values


Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Gt(0)]
NonNegInt = Annotated[int, Strict(), Ge(0)]
Float = Annotated[float, Strict(), BeforeValidator(_yaml_float)]
PosFloat = Annotated[float, Strict(), Gt(0), BeforeValidator(_yaml_float)]
NonNegFloat = Annotated[float, Strict(), Ge(0), BeforeValidator(_yaml_float)]
Fraction = Annotated[float, Strict(), Ge(0), Le(1), BeforeValidator(_yaml_float)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
StrList = Annotated[list[Str], BeforeValidator(_one_as_list)]
Amp = Literal["bf16", "fp16"]


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
SCHEDULERS = ("plateau", "cosine", "cosine-time")                 # molgnn.train.finetune.SCHEDULERS
# What guidance can steer: the names of molgnn.chem.properties.PROPERTIES (a test keeps them equal; not
# imported here, since config must load without RDKit, as on the GPU machines).
GUIDANCE_PROPERTIES = ("qed", "sa", "logp", "mol_weight", "heavy_atoms")

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _section(cls: type) -> type:
    """A pydantic dataclass of params.yaml; built in Python (``FinetuneConfig(lr=...)``,
    ``dataclasses.replace``) it raises ConfigError too, its lines naming the class's fields."""
    cls = dataclass(config=_STRICT)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            lines = _problem_lines(exc, set(), cls)
            raise ConfigError(f"{cls.__name__}: " + "; ".join(lines), lines) from None

    cls.__init__ = __init__
    return cls


def _repeated(values: list[Any]) -> list[Any]:
    return sorted({v for v in values if values.count(v) > 1})


# --- sections ---------------------------------------------------------------------------------------

@_section
class DataConfig:
    sources: Annotated[StrList, _listed_once("source")] = field(default_factory=lambda: ["qm9-sample"])
    smiles_column: Str | None = None
    target_columns: Annotated[StrList, _listed_once("column")] | None = None
    max_heavy_atoms: PosInt = 50
    limit: PosInt | None = None
    out_dir: Str = "data/molecules"


@_section
class ConformerConfig:
    method: Literal["etkdgv3-mmff"] = "etkdgv3-mmff"
    timeout_s: PosFloat = 10.0
    max_iterations: NonNegInt = 200


@_section
class FeaturizeConfig:
    featurizer: Literal["atom-bond-v1"] = "atom-bond-v1"
    conformers: _part(ConformerConfig) = field(default_factory=ConformerConfig)
    workers: PosInt | None = None
    out_dir: Str = "data/features"


@_section
class ModelConfig:
    n_atom_basis: PosInt = 32
    n_interactions: PosInt = 3
    n_rbf: PosInt = 20
    cutoff: PosFloat = 5.0


@_section
class PretrainConfig:
    enabled: Bool = True
    epochs: PosInt = 2
    batch_size: PosInt = 32
    lr: PosFloat = 5e-4
    noise_std: NonNegFloat = 0.05
    mask_rate: Annotated[float, Strict(), Ge(0), Lt(1), BeforeValidator(_yaml_float)] = 0.15
    denoise_weight: NonNegFloat = 1.0
    mask_weight: NonNegFloat = 1.0
    max_molecules: PosInt | None = None
    # constant | cosine (decay to 1 % over the epochs) | cosine-time (to 1 % over time_budget_s);
    # benchmarks/README.md, pretraining
    lr_schedule: Literal["constant", "cosine", "cosine-time"] = "constant"
    eht_weight: NonNegFloat = 1.0  # > 0: also predict extended-Hueckel HOMO/LUMO/gap of each structure (molgnn.chem.eht;
                                   # benchmarks/README.md: it took the 1,000-label gain from 16.5 to 26.3 %); 0: off
    weight_decay: NonNegFloat = 0.0                 # AdamW
    grad_clip: PosFloat | None = 10.0               # gradient-norm clip; None: off
    amp: Amp | None = None                          # autocast of the forward pass; None: float32
    time_budget_s: PosFloat | None = None           # stop at the first epoch end past this; None: epochs only
    # where pretraining starts: a shipped encoder's name (molgnn.data.shipped_encoders), a pretraining
    # checkpoint's path, or None (random weights); the run then pretrains `epochs` more on its own structures
    init_from: Annotated[str, Strict(), MinLen(1)] | None = "druglike-v1"

    def train_options(self) -> dict[str, Any]:
        """The keyword arguments of ``molgnn.train.pretrain.pretrain`` that this config decides."""
        return {"weight_decay": self.weight_decay, "grad_clip": self.grad_clip, "amp": self.amp,
                "max_seconds": self.time_budget_s, "cosine_lr": self.lr_schedule == "cosine-time"}

    def __post_init__(self) -> None:
        problems = []
        if self.lr_schedule == "cosine-time" and self.time_budget_s is None:
            problems.append(("lr_schedule", self.lr_schedule, "a time_budget_s for the cosine to run over"))
        if self.denoise_weight == self.mask_weight == self.eht_weight == 0:
            problems.append(("denoise_weight", self.denoise_weight,
                             "a positive weight on at least one objective (denoise, mask, eht)"))
        _check(problems)


@_section
class FinetuneConfig:
    targets: Annotated[StrList, _listed_once("target")] = field(default_factory=lambda: ["gap"])
    init: Literal["pretrained", "scratch"] = "pretrained"
    split: Literal["random", "scaffold"] = "scaffold"
    fractions: Annotated[list[Fraction], AfterValidator(_split_fractions)] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    epochs: PosInt = 50   # an upper bound: early stopping (patience) ends most runs sooner
    batch_size: PosInt = 32
    lr: PosFloat = 5e-4
    ensemble_size: PosInt = 3
    patience: PosInt = 10
    encoder_lr_scale: PosFloat = 2.0  # lr multiplier of a *pretrained* encoder (the head trains at lr); benchmarks/README.md
    # What molgnn.train.finetune.finetune() takes besides the config; defaults are its own.
    scheduler: Literal["plateau", "cosine", "cosine-time"] = "plateau"
    lr_patience: PosInt | None = None                # plateau: epochs before halving the lr; None: patience // 2
    weight_decay: NonNegFloat = 1e-2                 # AdamW
    grad_clip: PosFloat | None = 10.0                # gradient-norm clip; None: off
    warmup_steps: NonNegInt = 0                      # cosine-time only: linear warm-up steps
    min_lr_ratio: Fraction = 0.0                     # cosine-time only: the lr ends at lr * this
    time_budget_s: PosFloat | None = None            # training wall-clock budget per member; None: epochs only
    warmup_outside_budget: Bool = False              # compile / graph-capture warm-up not counted in time_budget_s
    amp: Amp | None = None                           # autocast of the training forward pass; None: float32
    compile_model: Bool = False                      # torch.compile the training forward pass
    cuda_graphs: Bool = False                        # capture each padded batch shape's step as a CUDA graph
    eval_every: PosInt = 1                           # validate (and select the best epoch) every N epochs
    atom_refs: Bool = True                           # per-element references for sum-aggregated targets
    aggregation: dict[Str, Literal["sum", "mean"]] | None = None  # per target; None: each target's default
    head_hidden: PosInt | None = None                # property head width; None: the encoder's
    head_layers: PosInt = 2
    # per target: auto (binary classification when every label is 0 or 1, else regression) | regression |
    # classification; None: auto for every target
    task_types: dict[Str, Literal["auto", "regression", "classification"]] | None = None
    # per-atom 2D features (hybridization, aromaticity, charge, H count, ring, ...) beside the element in
    # the 3D encoder's input; None: the element alone
    atom_features: Literal["atom-bond-v1"] | None = "atom-bond-v1"
    class_weighting: Literal["none", "balanced"] = "none"  # classification loss: balanced weighs classes n / (2 n_c)

    TRAIN_OPTIONS: ClassVar[tuple[str, ...]] = (
        "scheduler", "lr_patience", "weight_decay", "grad_clip", "warmup_steps", "min_lr_ratio", "time_budget_s",
        "warmup_outside_budget", "amp", "compile_model", "cuda_graphs", "eval_every", "atom_refs", "aggregation", "head_hidden", "head_layers",
        "atom_features")
    # knobs whose default here differs from finetune()'s own: the function also trains on packed QM9
    # (npz, no SMILES), where per-atom 2D features cannot be made, so it defaults to the element alone
    PIPELINE_DEFAULTS: ClassVar[tuple[str, ...]] = ("atom_features",)

    def train_options(self) -> dict[str, Any]:
        """The keyword arguments of ``molgnn.train.finetune.finetune`` that this config decides
        (each field of TRAIN_OPTIONS under its own name)."""
        return {name: getattr(self, name) for name in self.TRAIN_OPTIONS}

    def __post_init__(self) -> None:
        problems = []
        if self.scheduler == "cosine-time" and self.time_budget_s is None:
            problems.append(("scheduler", self.scheduler, "a time_budget_s for the cosine to run over"))
        if self.warmup_steps and self.scheduler != "cosine-time":
            problems.append(("warmup_steps", self.warmup_steps, "0 unless scheduler is cosine-time"))
        if self.cuda_graphs and self.amp == "fp16":
            problems.append(("amp", self.amp, "bf16 or null with cuda_graphs (fp16's scaler syncs with the host)"))
        unknown = sorted(set(self.aggregation or {}) - set(self.targets))
        if unknown:
            problems.append(("aggregation", self.aggregation, f"keys among the targets {self.targets} "
                                                              f"({unknown} are not)"))
        unknown = sorted(set(self.task_types or {}) - set(self.targets))
        if unknown:
            problems.append(("task_types", self.task_types, f"keys among the targets {self.targets} "
                                                            f"({unknown} are not)"))
        _check(problems)


@_section
class FastTierConfig:
    """The 2D screening tier, trained right after fine-tuning (molgnn.stages.fast_tier): GINE members on
    the fine-tuning split, on the labels alone and distilled from the 3D ensemble; the better on
    validation is kept and ``molgnn screen`` uses it by default."""

    enabled: Bool = True
    members: PosInt = 3                              # ensemble size (the spread picks the uncertain molecules)
    epochs: PosInt = 25
    teacher_weight: Fraction = 0.5                   # distilled targets: w * 3D prediction + (1 - w) * label; 0: labels only
    hidden: PosInt = 64
    layers: PosInt = 3
    batch_size: PosInt = 64
    lr: PosFloat = 2e-3


@_section
class GeneratorTrainingConfig:
    """What both generators share: molgnn.generate.training.train_generator_on_graphs' options."""

    epochs: PosInt = 20
    batch_size: PosInt = 64
    lr: PosFloat = 1e-3
    grad_clip: PosFloat | None = 1.0                 # gradient-norm clip; None: off
    weight_decay: NonNegFloat = 0.01                 # AdamW
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: NonNegInt = 0                      # linear warm-up steps
    min_lr_ratio: Fraction = 0.05                    # cosine: the lr ends at lr * this
    ema_decay: Annotated[float, Strict(), Gt(0), Lt(1), BeforeValidator(_yaml_float)] | None = None
    bf16: Bool = False                               # bfloat16 autocast of the network
    time_budget_s: PosFloat | None = None            # training-time budget; None: epochs only
    # fine-tune this generator on the run's molecules instead of training from nothing: a shipped
    # generator's name or a checkpoint path (a .pt file or a shard folder; its architecture wins)
    init_from: Annotated[str, Strict(), MinLen(1)] | None = None


@_section
class VAEConfig(GeneratorTrainingConfig):
    latent_dim: PosInt = 32
    hidden_dim: PosInt = 128
    n_layers: PosInt = 3
    beta: NonNegFloat = 0.3                          # KL weight
    edge_weight: NonNegFloat = 1.0                   # bond reconstruction weight


@_section
class DiffusionConfig(GeneratorTrainingConfig):
    lr: PosFloat = 5e-4
    timesteps: PosInt = 100
    hidden_dim: PosInt = 64
    n_layers: PosInt = 3
    n_heads: PosInt = 4
    lambda_edge: NonNegFloat = 5.0                   # bond loss weight

    def __post_init__(self) -> None:
        if self.hidden_dim % self.n_heads:
            raise _Invalid([("hidden_dim", self.hidden_dim, f"a multiple of n_heads ({self.n_heads})")])


def _range_problems(low: float | None, high: float | None, what: str = "") -> list[tuple[str, Any, str]]:
    """A range [low, high] needs at least one bound, and low <= high (guidance and design targets)."""
    if low is None and high is None:
        return [("low", None, f"a number in low and/or high{what}")]
    if low is not None and high is not None and low > high:
        return [("low", low, f"at most high ({high})")]
    return []


@_section
class GuidanceConfig:
    """Regressor guidance of the diffusion sampler toward ``low <= property <= high`` (None = open)."""

    enabled: Bool = False
    property: Literal["qed", "logp", "sa", "mol_weight"] = "qed"
    low: Float | None = 0.55
    high: Float | None = None
    scale: NonNegFloat = 3.0
    node_scale: NonNegFloat | None = None   # the atoms' own strength (None: scale)
    edge_scale: NonNegFloat | None = None   # the bonds' own strength (None: scale); 0 keeps validity best
    epochs: PosInt = 8
    batch_size: PosInt = 128
    lr: PosFloat = 3e-4
    t_exponent: PosFloat = 3.0
    hidden_dim: PosInt = 64
    n_layers: PosInt = 2

    def __post_init__(self) -> None:
        _check(_range_problems(self.low, self.high, " (the target range)"))


@_section
class GenerateConfig:
    models: Annotated[list[Literal["vae", "diffusion"]], BeforeValidator(_one_as_list), _listed_once("model")] = field(
        default_factory=lambda: ["vae", "diffusion"])
    max_heavy_atoms: PosInt = 9
    vae: _part(VAEConfig) = field(default_factory=VAEConfig)
    diffusion: _part(DiffusionConfig) = field(default_factory=DiffusionConfig)
    guidance: _part(GuidanceConfig) = field(default_factory=GuidanceConfig)
    n_samples: PosInt = 200
    sample_batch_size: PosInt = 512        # graphs drawn per batch (the draws depend on it)

    def __post_init__(self) -> None:
        problems = []
        if self.guidance.enabled and "diffusion" not in self.models:
            problems.append(("guidance.enabled", True, "false unless diffusion is in generate.models"))
        _check(problems)


@_section
class FilterConfig:
    require_unique: Bool = True
    require_novel: Bool = True
    reject_pains: Bool = True
    min_qed: Fraction = 0.0
    max_sa: Annotated[float, Strict(), Ge(1), Le(10), BeforeValidator(_yaml_float)] = 10.0
    max_lipinski_violations: Annotated[int, Strict(), Ge(0), Le(4)] = 1


@_section
class ScreenConfig:
    rank_by: Str = "gap"
    descending: Bool = True
    rank_out_of_domain_last: Bool = True   # never rank a molecule outside the training domain above one inside
    tier: Literal["auto", "3d", "2d"] = "auto"   # auto: two-tier when the model has a 2D tier, else 3D
    top_k: NonNegInt = 50                  # two-tier: the best 2D molecules re-predicted by the 3D ensemble
    uncertain_k: NonNegInt = 50            # two-tier: and the most uncertain (2D spread) others
    dask_address: Str | None = None        # `molgnn screen --dask`: an existing Dask scheduler; None: a LocalCluster
    chunk_rows: PosInt = 5_000             # `molgnn screen --dask`: input rows per chunk (one Prefect task each)


DESIGN_OBJECTIVES = {"qed", "sa", "novelty", "uncertainty"}   # besides the predicted targets


@_section
class TargetRange:
    """A design objective to bring into ``[low, high]`` (one side may be open): its distance to the range is minimized."""

    low: Float | None = None
    high: Float | None = None

    def __post_init__(self) -> None:
        _check(_range_problems(self.low, self.high))


def _objective(value: Any) -> Any:
    """A design objective's direction: "max", "min", or a target range {low, high} (a TargetRange)."""
    if isinstance(value, str):
        if value not in ("max", "min"):
            raise ValueError(f"max, min or a target range {{low: .., high: ..}}, not {value!r}")
        return value
    if isinstance(value, TargetRange):
        return value
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high"}
        if unknown:
            raise ValueError(f"a target range has only low and high, not {sorted(unknown)}")
        try:
            return TargetRange(**value)
        except ConfigError as exc:
            raise ValueError("; ".join(exc.problems) or str(exc)) from None
    raise ValueError(f"max, min or a target range {{low: .., high: ..}}, not {value!r}")


Objective = Annotated[Any, BeforeValidator(_objective)]


@_section
class DesignConfig:
    """``molgnn design``: rounds of generate -> filter -> screen -> Pareto selection -> generator fine-tuning."""

    rounds: PosInt = 2
    # auto (diffusion when generate.models has it, else its first) | vae | diffusion: this run's trained
    # generator (the pipeline's cached stage) | models:/NAME/VERSION | a shipped generator | a checkpoint path
    generator: Annotated[str, Strict(), MinLen(1)] = "auto"
    n_samples: PosInt = 256                 # draws per round
    # name -> max | min | {low, high} (a target range); a name is one of finetune.targets (its predicted mean),
    # qed, sa, novelty (1 - nearest Tanimoto similarity to the training molecules) or uncertainty (the
    # predicted targets' ensemble spread). None: screen.rank_by the way the screen ranks it, qed max,
    # sa min, novelty max, uncertainty min (filled in when the params are loaded)
    objectives: dict[Str, Objective] | None = None
    select: PosInt = 16                     # molecules selected per round (Pareto fronts in order)
    max_similarity: Fraction = 0.7          # diversity: no two selected molecules closer (Tanimoto) than this
    in_domain_only: Bool = True             # select only molecules inside the property model's domain
    finetune_generator: Bool = True         # fine-tune the generator on the selected molecules between rounds
    finetune_epochs: PosInt = 4
    finetune_lr: PosFloat = 1e-4
    finetune_batch_size: PosInt = 64
    replay: NonNegInt = 256                 # training molecules mixed into each fine-tuning (keeps validity)


@_section
class TrackingConfig:
    mlflow_uri: Annotated[str, Strict(), MinLen(1)] = "sqlite:///mlruns/mlflow.db"
    artifact_root: Annotated[str, Strict(), MinLen(1)] = "mlruns/artifacts"
    experiment: Annotated[str, Strict(), MinLen(1)] = "molgnn"


@_section
class Params:
    seed: NonNegInt = 0
    device: Annotated[str, Strict(), AfterValidator(_device)] = "auto"   # auto (CUDA when present) | cpu | cuda | cuda:N
    data: _part(DataConfig) = field(default_factory=DataConfig)
    featurize: _part(FeaturizeConfig) = field(default_factory=FeaturizeConfig)
    model: _part(ModelConfig) = field(default_factory=ModelConfig)
    pretrain: _part(PretrainConfig) = field(default_factory=PretrainConfig)
    finetune: _part(FinetuneConfig) = field(default_factory=FinetuneConfig)
    fast_tier: _part(FastTierConfig) = field(default_factory=FastTierConfig)
    generate: _part(GenerateConfig) = field(default_factory=GenerateConfig)
    filter: _part(FilterConfig) = field(default_factory=FilterConfig)
    screen: _part(ScreenConfig) = field(default_factory=ScreenConfig)
    design: _part(DesignConfig) = field(default_factory=DesignConfig)
    tracking: _part(TrackingConfig) = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        problems = []
        targets = self.finetune.targets
        if self.screen.rank_by not in targets:
            problems.append(("screen.rank_by", self.screen.rank_by, f"one of finetune.targets {targets}"))
        if self.finetune.init == "pretrained" and not self.pretrain.enabled:
            problems.append(("finetune.init", "pretrained",
                             "scratch when pretrain.enabled is false (or enable pretraining)"))
        columns = self.data.target_columns
        if columns is not None and set(targets) - set(columns):
            problems.append(("finetune.targets", targets,
                             f"columns that data.target_columns keeps ({columns})"))
        if self.screen.tier == "2d" and not self.fast_tier.enabled:
            problems.append(("screen.tier", "2d", "auto or 3d when fast_tier.enabled is false (no 2D tier is trained)"))
        # design defaults follow the rest of the params, so a config that never designs is never refused for them
        if self.design.objectives is None:
            self.design.objectives = {self.screen.rank_by: "max" if self.screen.descending else "min", "qed": "max",
                                      "sa": "min", "novelty": "max", "uncertainty": "min"}
        if self.design.generator == "auto":
            models = self.generate.models
            self.design.generator = "diffusion" if "diffusion" in models or not models else models[0]
        design_names = set(targets) | DESIGN_OBJECTIVES
        for name in self.design.objectives:
            if name not in design_names:
                problems.append((f"design.objectives.{name}", self.design.objectives[name],
                                 f"an objective named after one of finetune.targets {targets} or {sorted(DESIGN_OBJECTIVES)}"))
        if not self.design.objectives:
            problems.append(("design.objectives", {}, "at least one objective"))
        gen = self.design.generator
        if gen in ("vae", "diffusion") and gen not in self.generate.models:
            problems.append(("design.generator", gen, f"auto or one of generate.models {self.generate.models}, "
                             "models:/NAME/VERSION or a generator checkpoint path"))
        if self.finetune.cuda_graphs and self.device == "cpu":
            problems.append(("finetune.cuda_graphs", True, "false on device cpu (CUDA graphs need a GPU)"))
        _check(problems)

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
            if isinstance(value, dict) and (value or not prefix):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


# --- loading ----------------------------------------------------------------------------------------

_PARAMS = TypeAdapter(Params)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _section_at(loc: tuple[Any, ...], root: type) -> Any:
    """The dataclass (a default instance) that holds the field at ``loc`` under ``root``, or None."""
    node: Any = root()
    for part in loc[:-1]:
        if not isinstance(part, str) or not dataclasses.is_dataclass(getattr(node, part, None)):
            return None
        node = getattr(node, part)
    return node


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _expected(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    plain = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number (e.g. 5.0e-4)",
             "float_parsing": "a number (e.g. 5.0e-4)", "bool_type": "true or false",
             "string_type": "a string (quote it)", "list_type": "a list", "dict_type": "a mapping",
             "finite_number": "a finite number"}
    if kind in plain:
        return plain[kind]
    if kind == "literal_error":
        return "one of " + err["ctx"]["expected"]
    return msg.removeprefix("Input should be ").removeprefix("Value error, ")


def _problem_lines(exc: ValidationError, overridden: set[str], root: type) -> list[str]:
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Invalid):          # a section's own cross-field checks
            for name, value, expected in cause.problems:
                lines.append(_line(_dotted(loc + tuple(name.split("."))), value, expected, overridden))
            continue
        key = _dotted(loc) or "params"
        if err["type"] == "unexpected_keyword_argument":
            section = _section_at(loc, root)
            known = [f.name for f in dataclasses.fields(section)] if section is not None else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {_dotted(loc[:-1] + (close[0],))}? " if close else ""
            where = _dotted(loc[:-1]) or ("the top level" if root is Params else root.__name__)
            lines.append(_line(key, err["input"], f"a known key: {hint}({where} has: {', '.join(known)})",
                               overridden, unknown=True))
        elif err["type"] == "dataclass_type":
            section = _section_at(loc + ("_",), root)
            known = [f.name for f in dataclasses.fields(section)] if section is not None else []
            lines.append(_line(key, err["input"], f"a mapping of {', '.join(known)}", overridden))
        else:
            lines.append(_line(key, err["input"], _expected(err), overridden))
    return lines


def _line(key: str, value: Any, expected: str, overridden: set[str], unknown: bool = False) -> str:
    origin = " (from --set)" if key in overridden else ""
    if unknown:
        return f"{key}{origin}: unknown key (value {_show(value)}); expected {expected}"
    return f"{key}{origin} = {_show(value)}: expected {expected}"


def from_dict(raw: dict[str, Any] | None, *, source: str = "params", overridden: set[str] | None = None) -> Params:
    """Validate a parsed params mapping; every problem in one :class:`ConfigError`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, finetune, ...), got {_show(raw)}")
    try:
        return _PARAMS.validate_python(raw)
    except ValidationError as exc:
        lines = _problem_lines(exc, overridden or set(), Params)
    head = f"{source}: {len(lines)} invalid parameter{'s' if len(lines) > 1 else ''}"
    raise ConfigError(f"{head}: {lines[0]}" if len(lines) == 1 else head + ":\n  " + "\n  ".join(lines), lines)


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_0-9][A-Za-z0-9_-]*)*")


def parse_override(text: str) -> tuple[str, Any]:
    """``"finetune.lr=5e-4"`` -> ``("finetune.lr", 5e-4)``: a dotted key and a YAML-typed value
    (an empty value is null)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. finetune.epochs=4")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.problem})") from exc


def apply_overrides(raw: dict[str, Any] | None, overrides: list[str] | None) -> tuple[dict[str, Any], set[str]]:
    """``raw`` (not modified) with each ``KEY=VALUE`` set at its dotted key; also the keys set.

    A key must name a knob of :class:`Params` (an unknown one is an error naming it); a whole
    section cannot be replaced. The values are validated with the rest by :func:`from_dict`."""
    out = copy.deepcopy(raw) if raw else {}
    if not isinstance(out, dict):
        return out, set()   # from_dict reports the malformed file
    keys: set[str] = set()
    for text in overrides or []:
        key, value = parse_override(text)
        parts = key.split(".")
        node: Any = Params()
        for depth, part in enumerate(parts):
            if dataclasses.is_dataclass(node):
                known = [f.name for f in dataclasses.fields(node)]
                if part not in known:
                    close = difflib.get_close_matches(part, known, n=1)
                    hint = f"; did you mean {'.'.join(parts[:depth] + [close[0]])}?" if close else ""
                    where = ".".join(parts[:depth]) or "the top level"
                    raise ConfigError(f"--set {key}: unknown key {'.'.join(parts[:depth + 1])}{hint} "
                                      f"({where} has: {', '.join(known)})")
                node = getattr(node, part)
            else:
                node = None     # inside a mapping knob (finetune.aggregation.gap): its keys are free
        if dataclasses.is_dataclass(node):
            raise ConfigError(f"--set {key}: {key} is a section; set its keys one by one ({key}.KEY=VALUE)")
        target = out
        for depth, part in enumerate(parts[:-1]):
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth + 1])} is {_show(child)} in the file, "
                                  f"not a mapping")
            target = child
        target[parts[-1]] = value
        keys.add(key)
    return out, keys


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read, override (``KEY=VALUE`` strings, as ``molgnn run --set``) and validate a params file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, finetune, ...), got {_show(raw)}")
    raw, overridden = apply_overrides(raw, overrides)
    return from_dict(raw, source=str(path), overridden=overridden)


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists on one line (as params.yaml writes them)."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def dump_params(params: Params) -> str:
    """The effective parameters as YAML text that :func:`load_params` reads back to equal params."""
    return yaml.dump(params.to_dict(), Dumper=_Dumper, sort_keys=False, width=100)


# --- what depends on this machine and this folder ----------------------------------------------------

def check_runnable(params: Params, root: str | Path) -> None:
    """What :func:`from_dict` cannot know: the device exists here, and each data source is a named
    source, a URL or a file under ``root`` (relative paths resolve there). Raises one ConfigError
    listing every problem. ``molgnn run`` calls it before Prefect starts, the flow again."""
    problems = (_device_problems(params) + _source_problems(params, Path(root)) + _encoder_problems(params, Path(root))
                + _generator_problems(params, Path(root)))
    if problems:
        raise ConfigError("cannot run here: " + problems[0] if len(problems) == 1
                          else "cannot run here:\n  " + "\n  ".join(problems), problems)


def _generator_problems(params: Params, root: Path) -> list[str]:
    """Each generate.<model>.init_from names a shipped generator or an existing checkpoint."""
    from molgnn.data.shipped_generators import GeneratorNotFoundError, resolve_generator

    problems = []
    for kind in params.generate.models:
        value = getattr(params.generate, kind).init_from
        if value:
            try:
                resolve_generator(value, root)
            except GeneratorNotFoundError as exc:
                problems.append(f"generate.{kind}.init_from: {exc}")
    return problems


def _device_problems(params: Params) -> list[str]:
    want = params.device
    if want == "cpu" or (want == "auto" and not params.finetune.cuda_graphs):
        return []
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if want == "auto":    # with cuda_graphs on
        return [] if n else ["finetune.cuda_graphs = True: expected false, device auto found no CUDA device here"]
    index = int(want.partition(":")[2] or 0)
    if index >= n:
        found = f"{n} CUDA device{'s' if n != 1 else ''} (cuda:0 .. cuda:{n - 1})" if n else "no CUDA device"
        return [f"device = {want!r}: expected auto or cpu, or a CUDA device this machine has; it has {found}"]
    return []


def _encoder_problems(params: Params, root: Path) -> list[str]:
    """The encoder ``pretrain.init_from`` names exists, is intact and fits ``model``."""
    value = params.pretrain.init_from
    if not params.pretrain.enabled or value is None:
        return []
    from molgnn.data.shipped_encoders import encoder_card, is_path_like, resolve_encoder

    key = f"pretrain.init_from = {value!r}"
    try:
        path = resolve_encoder(value, root)
    except (FileNotFoundError, ValueError) as exc:
        return [f"{key}: {exc}; or null to pretrain from random weights"]
    if is_path_like(value):
        import torch

        try:
            trained_with = torch.load(path, map_location="cpu", weights_only=True)["config"]["model"]
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
            return [f"{key}: not a readable pretraining checkpoint ({type(exc).__name__}: {exc})"]
    else:
        trained_with = encoder_card(value)["model"]
    wanted = dataclasses.asdict(params.model)
    if {k: trained_with.get(k) for k in wanted} != wanted:
        return [f"{key}: it was pretrained with model {trained_with}, this run's model is {wanted}; use that "
                "model, or set pretrain.init_from: null to pretrain this one from random weights"]
    return []


def _source_problems(params: Params, root: Path) -> list[str]:
    from molgnn.data.readers import is_url
    from molgnn.data.sources import list_sources, named_source, units_for

    problems = []
    names = sorted(list_sources())
    for k, source in enumerate(params.data.sources):
        if named_source(source) is not None or is_url(source):
            continue
        path = Path(source) if Path(source).is_absolute() else root / source
        if not path.is_file():
            close = difflib.get_close_matches(source, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"data.sources[{k}] = {source!r}: expected a named source ({', '.join(names)}), "
                            f"a URL or an existing file; {path} does not exist{hint}")
    named = [named_source(s) for s in params.data.sources]
    if not problems and all(n is not None for n in named):
        # every source is named: the targets they provide are known before reading a row
        available = sorted({t for s in params.data.sources for t in units_for(s)})
        missing = [t for t in params.finetune.targets if t not in available]
        if missing:
            problems.append(f"finetune.targets = {params.finetune.targets!r}: expected targets that data.sources "
                            f"provide ({', '.join(available) or 'none'}); {missing} are not among them")
    return problems
