import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from molgnn.config import (ConfigError, DiffusionConfig, FinetuneConfig, Params, VAEConfig, apply_overrides,
                           check_runnable, dump_params, from_dict, load_params, parse_override)

REPO = Path(__file__).resolve().parents[1]


def _error(raw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    return info.value


def test_repo_params_load_and_hash_is_stable():
    p = load_params(REPO / "params.yaml")
    assert p.finetune.targets
    assert p.digest() == load_params(REPO / "params.yaml").digest()
    assert "finetune.epochs" in p.flat()


def test_digest_changes_with_any_knob():
    assert from_dict({"finetune": {"epochs": 1}}).digest() != from_dict({"finetune": {"epochs": 2}}).digest()
    assert from_dict({"finetune": {"weight_decay": 0.0}}).digest() != from_dict({}).digest()


def test_dataclass_defaults_match_the_shipped_params_yaml():
    """A knob missing from a user's params.yaml behaves as in the shipped one."""
    assert from_dict({}).to_dict() == load_params(REPO / "params.yaml").to_dict()


def test_every_knob_of_the_typed_config_is_in_params_yaml():
    """params.yaml lists (and so documents) every knob; nothing is only a Python default."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "aggregation" else {prefix + k}
        return out

    # design.objectives is a dict of user-chosen names (null in the file: filled from the other params)
    flat = {"design.objectives" if k.startswith("design.objectives.") else k for k in from_dict({}).flat()}
    assert keys(shipped) == flat


def test_contract_names_are_kept():
    flat = from_dict({}).flat()
    for name in ["seed", "data.sources", "data.limit", "pretrain.epochs", "finetune.epochs",
                 "finetune.ensemble_size", "finetune.targets", "generate.vae.epochs",
                 "generate.diffusion.epochs", "generate.n_samples"]:
        assert name in flat


# --- the bad configurations of issue 11 ---------------------------------------------------------------

def test_exponent_written_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("finetune:\n  lr: 5e-4\npretrain:\n  lr: 1e-3\ngenerate:\n  vae:\n    lr: 2e-4\n")
    assert yaml.safe_load(path.read_text())["finetune"]["lr"] == "5e-4"   # YAML 1.1's quirk
    p = load_params(path)
    assert (p.finetune.lr, p.pretrain.lr, p.generate.vae.lr) == (5e-4, 1e-3, 2e-4)
    assert all(isinstance(v, float) for v in (p.finetune.lr, p.pretrain.lr, p.generate.vae.lr))


def test_a_lone_string_where_a_list_belongs_is_a_one_element_list():
    p = from_dict({"finetune": {"targets": "homo"}, "data": {"sources": "qm9-sample", "target_columns": "homo"},
                   "generate": {"models": "vae"}, "screen": {"rank_by": "homo"}})
    assert p.finetune.targets == ["homo"]
    assert p.data.sources == ["qm9-sample"]
    assert p.data.target_columns == ["homo"]
    assert p.generate.models == ["vae"]


def test_device_must_be_auto_cpu_cuda_or_cuda_n():
    for ok in ["auto", "cpu", "cuda", "cuda:1"]:
        assert from_dict({"device": ok}).device == ok
    msg = str(_error({"device": "gpu"}))
    assert "device = 'gpu'" in msg and "auto, cpu, cuda or cuda:N" in msg


def test_rank_by_must_be_a_finetuned_target():
    msg = str(_error({"screen": {"rank_by": "nonexistent"}}))
    assert "screen.rank_by = 'nonexistent'" in msg and "finetune.targets ['gap']" in msg


def test_unknown_keys_are_named_with_a_suggestion():
    msg = str(_error({"finetune": {"epoch": 3}}))
    assert "finetune.epoch" in msg and "unknown key" in msg and "did you mean finetune.epochs?" in msg
    msg = str(_error({"finetun": {}}))
    assert "finetun: unknown key" in msg and "did you mean finetune?" in msg


@pytest.mark.parametrize("raw, key, value, expected", [
    ({"finetune": {"epochs": 2.5}}, "finetune.epochs", "2.5", "an integer"),
    ({"finetune": {"epochs": "3"}}, "finetune.epochs", "'3'", "an integer"),
    ({"finetune": {"lr": "fast"}}, "finetune.lr", "'fast'", "a number"),
    ({"finetune": {"lr": True}}, "finetune.lr", "True", "a number"),
    ({"finetune": {"lr": -1e-3}}, "finetune.lr", "-0.001", "greater than 0"),
    ({"finetune": {"batch_size": 0}}, "finetune.batch_size", "0", "greater than 0"),
    ({"pretrain": {"enabled": "false"}}, "pretrain.enabled", "'false'", "true or false"),
    ({"pretrain": {"mask_rate": 1.0}}, "pretrain.mask_rate", "1.0", "less than 1"),
    ({"finetune": {"init": "warm"}}, "finetune.init", "'warm'", "'pretrained' or 'scratch'"),
    ({"finetune": {"split": "time"}}, "finetune.split", "'time'", "'random' or 'scaffold'"),
    ({"finetune": {"scheduler": "step"}}, "finetune.scheduler", "'step'", "'plateau', 'cosine' or 'cosine-time'"),
    ({"finetune": {"fractions": [0.5, 0.5]}}, "finetune.fractions", "[0.5, 0.5]", "summing to 1"),
    ({"finetune": {"targets": []}}, "finetune.targets", "[]", "at least one target"),
    ({"pretrain": {"lr_schedule": "step"}}, "pretrain.lr_schedule", "'step'", "'constant', 'cosine' or"),
    ({"generate": {"models": ["gan"]}}, "generate.models[0]", "'gan'", "'vae' or 'diffusion'"),
    ({"generate": {"guidance": {"property": "gap"}}}, "generate.guidance.property", "'gap'", "'qed'"),
    ({"generate": {"diffusion": {"n_heads": 5}}}, "generate.diffusion.hidden_dim", "64", "multiple of n_heads"),
    ({"generate": {"vae": {"ema_decay": 1.5}}}, "generate.vae.ema_decay", "1.5", "less than 1"),
    ({"featurize": {"featurizer": "morgan"}}, "featurize.featurizer", "'morgan'", "'atom-bond-v1'"),
    ({"featurize": {"conformers": {"method": "omega"}}}, "featurize.conformers.method", "'omega'", "etkdgv3-mmff"),
    ({"data": {"sources": ["a.csv", "a.csv"]}}, "data.sources", "['a.csv', 'a.csv']", "each source once"),
    ({"data": [1, 2]}, "data", "[1, 2]", "a mapping of sources"),
    ({"seed": -1}, "seed", "-1", "greater than or equal to 0"),
    ({"tracking": {"experiment": 2024}}, "tracking.experiment", "2024", "a string"),
])
def test_each_error_names_key_value_and_expected_form(raw, key, value, expected):
    msg = str(_error(raw))
    assert f"{key} = {value}: expected" in msg
    assert expected in msg


@pytest.mark.parametrize("raw, key", [
    ({"pretrain": {"enabled": False}}, "finetune.init = 'pretrained'"),
    ({"finetune": {"scheduler": "cosine-time"}}, "finetune.scheduler = 'cosine-time'"),
    ({"finetune": {"warmup_steps": 10}}, "finetune.warmup_steps = 10"),
    ({"finetune": {"cuda_graphs": True, "amp": "fp16"}}, "finetune.amp = 'fp16'"),
    ({"finetune": {"aggregation": {"U0": "sum"}}}, "finetune.aggregation"),
    ({"device": "cpu", "finetune": {"cuda_graphs": True}}, "finetune.cuda_graphs = True"),
    ({"pretrain": {"lr_schedule": "cosine-time"}}, "pretrain.lr_schedule = 'cosine-time'"),
    ({"generate": {"models": ["vae"], "guidance": {"enabled": True}}}, "generate.guidance.enabled = True"),
    ({"generate": {"guidance": {"low": 0.9, "high": 0.5}}}, "generate.guidance.low = 0.9"),
    ({"data": {"target_columns": ["homo"]}, "finetune": {"targets": ["gap"]}}, "finetune.targets = ['gap']"),
])
def test_cross_field_checks(raw, key):
    assert key in str(_error(raw))


def test_all_problems_are_reported_at_once_one_line_each():
    err = _error({"device": "gpu", "finetune": {"epochs": 2.5, "lr": "x"}, "data": {"sources": []},
                  "generate": {"models": ["gan"]}, "nope": 1})
    assert len(err.problems) == 6
    assert all("\n" not in line for line in err.problems)
    assert str(err).count("\n") == 6


def test_empty_sections_and_files_mean_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("generate:\nfinetune:\n")
    assert load_params(path).to_dict() == from_dict({}).to_dict()
    path.write_text("")
    assert load_params(path).to_dict() == from_dict({}).to_dict()


def test_missing_broken_or_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_params(bad)


def test_sections_still_behave_as_dataclasses():
    cfg = FinetuneConfig(targets=["gap"], epochs=3)
    assert dataclasses.asdict(cfg)["epochs"] == 3
    assert dataclasses.replace(cfg, epochs=4).epochs == 4
    with pytest.raises(ValueError, match="fractions"):
        FinetuneConfig(fractions=[0.5, 0.5])
    assert isinstance(from_dict({}), Params)


def test_train_options_carry_every_training_knob_to_the_train_calls():
    import inspect

    from molgnn.train.finetune import finetune
    from molgnn.train.pretrain import pretrain

    ft = from_dict({}).finetune
    assert set(ft.train_options()) <= set(inspect.signature(finetune).parameters)
    assert set(ft.train_options()) == set(FinetuneConfig.TRAIN_OPTIONS)
    pt = from_dict({}).pretrain.train_options()
    assert set(pt) <= set(inspect.signature(pretrain).parameters)
    # the defaults are the train functions' own (results do not change), but for the knobs the
    # pipeline turns on that finetune() cannot default to (it also takes datasets without SMILES)
    for name, value in ft.train_options().items():
        default = inspect.signature(finetune).parameters[name].default
        if name in FinetuneConfig.PIPELINE_DEFAULTS:
            assert default is None and value is not None, name
        else:
            assert default == value, name
    for name in ("weight_decay", "grad_clip", "amp", "max_seconds", "cosine_lr"):
        assert inspect.signature(pretrain).parameters[name].default == pt[name], name


def test_generator_configs_pass_every_field_to_training(monkeypatch):
    import molgnn.generate.training as training

    seen = {}
    monkeypatch.setattr(training, "train_generator", lambda kind, smiles, **kw: seen.update(kw))
    cfg = from_dict({"generate": {"vae": {"ema_decay": 0.99, "time_budget_s": 5, "beta": 0.1}}}).generate.vae
    training.train_generator_from_config("vae", ["C"], cfg, seed=0)
    assert seen["ema_decay"] == 0.99 and seen["max_seconds"] == 5.0 and seen["beta"] == 0.1
    assert "time_budget_s" not in seen
    training.train_generator_from_config("diffusion", ["C"], DiffusionConfig(n_heads=2, hidden_dim=8), seed=0,
                                         max_seconds=1.0)
    assert seen["n_heads"] == 2 and seen["max_seconds"] == 1.0   # explicit overrides win
    assert isinstance(VAEConfig(), type(cfg))


# --- dump and overrides -------------------------------------------------------------------------------

def test_dump_params_reads_back_equal(tmp_path):
    p = from_dict({"finetune": {"targets": ["gap", "homo"], "aggregation": {"homo": "sum"}, "lr": "1e-4"},
                   "data": {"limit": 10}})
    text = dump_params(p)
    assert "targets: [gap, homo]" in text
    path = tmp_path / "effective.yaml"
    path.write_text(text)
    assert load_params(path) == p


def test_parse_override_types_values_as_yaml():
    assert parse_override("finetune.lr=5e-4") == ("finetune.lr", "5e-4")   # a number once validated
    assert parse_override("finetune.targets=[gap, homo]") == ("finetune.targets", ["gap", "homo"])
    assert parse_override("pretrain.enabled=false") == ("pretrain.enabled", False)
    assert parse_override("data.limit=") == ("data.limit", None)
    assert parse_override("data.sources=a=b.csv") == ("data.sources", "a=b.csv")
    for bad in ["finetune.lr", "=3", "finetune..lr=3", "finetune.lr=[1"]:
        with pytest.raises(ConfigError, match="--set"):
            parse_override(bad)


def test_overrides_apply_over_the_file_and_are_validated_like_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 1\nfinetune:\n  epochs: 8\n  targets: [gap]\n")
    p = load_params(path, ["finetune.epochs=2", "finetune.targets=homo", "screen.rank_by=homo", "seed=3",
                           "finetune.lr=1e-4", "generate.vae.epochs=1", "finetune.aggregation.homo=sum"])
    assert (p.finetune.epochs, p.finetune.targets, p.screen.rank_by, p.seed) == (2, ["homo"], "homo", 3)
    assert p.finetune.lr == 1e-4 and p.generate.vae.epochs == 1 and p.finetune.aggregation == {"homo": "sum"}
    assert load_params(path).finetune.epochs == 8     # the file is untouched

    with pytest.raises(ConfigError) as info:
        load_params(path, ["finetune.epochs=2.5"])
    assert "finetune.epochs (from --set) = 2.5: expected an integer" in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key finetune\.epoch; did you mean finetune\.epochs\?"):
        load_params(path, ["finetune.epoch=3"])
    with pytest.raises(ConfigError, match="unknown key nosection"):
        load_params(path, ["nosection.x=3"])
    with pytest.raises(ConfigError, match="is a section"):
        load_params(path, ["finetune=3"])
    with pytest.raises(ConfigError, match="not a mapping"):
        load_params(path, ["seed.x=1"])
    with pytest.raises(ConfigError, match="screen.rank_by"):
        load_params(path, ["finetune.targets=homo"])   # rank_by gap is no longer fine-tuned


def test_apply_overrides_does_not_modify_its_input():
    raw = {"finetune": {"epochs": 8}}
    out, keys = apply_overrides(raw, ["finetune.epochs=1", "generate.vae.epochs=2"])
    assert raw == {"finetune": {"epochs": 8}}
    assert out == {"finetune": {"epochs": 1}, "generate": {"vae": {"epochs": 2}}}
    assert keys == {"finetune.epochs", "generate.vae.epochs"}


# --- what depends on the machine ------------------------------------------------------------------------

def test_check_runnable_device(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    check_runnable(from_dict({"device": "auto"}), tmp_path)
    check_runnable(from_dict({"device": "cpu"}), tmp_path)
    with pytest.raises(ConfigError, match="device = 'cuda': .*no CUDA device"):
        check_runnable(from_dict({"device": "cuda"}), tmp_path)
    with pytest.raises(ConfigError, match="finetune.cuda_graphs"):
        check_runnable(from_dict({"finetune": {"cuda_graphs": True}}), tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_runnable(from_dict({"device": "cuda:1"}), tmp_path)
    with pytest.raises(ConfigError, match=r"device = 'cuda:2'.*2 CUDA devices"):
        check_runnable(from_dict({"device": "cuda:2"}), tmp_path)


def test_check_runnable_sources(tmp_path):
    (tmp_path / "mine.csv").write_text("smiles,gap\nC,1.0\n")
    check_runnable(from_dict({"device": "cpu", "data": {"sources": ["qm9-sample", "mine.csv",
                                                                    "https://example.org/x.csv"]}}), tmp_path)
    with pytest.raises(ConfigError) as info:
        check_runnable(from_dict({"device": "cpu", "data": {"sources": ["qm9-smaple", "other.csv"]}}), tmp_path)
    assert len(info.value.problems) == 2
    assert "data.sources[0] = 'qm9-smaple'" in str(info.value) and "did you mean qm9-sample?" in str(info.value)
    assert "data.sources[1] = 'other.csv'" in str(info.value)
    with pytest.raises(ConfigError, match=r"finetune.targets = \['gap'\]: expected targets that data.sources provide"):
        check_runnable(from_dict({"device": "cpu", "data": {"sources": ["moses"]}}), tmp_path)


def test_check_runnable_pretraining_start(tmp_path):
    from molgnn.data.shipped_encoders import shipped_encoders

    assert "druglike-v1" in shipped_encoders()
    assert from_dict({}).pretrain.init_from == "druglike-v1"   # the default recipe starts from it
    check_runnable(from_dict({"device": "cpu"}), tmp_path)
    check_runnable(from_dict({"device": "cpu", "model": {"n_atom_basis": 8}, "pretrain": {"init_from": None}}),
                   tmp_path)
    check_runnable(from_dict({"device": "cpu", "model": {"n_atom_basis": 8}, "pretrain": {"enabled": False},
                              "finetune": {"init": "scratch"}}), tmp_path)
    with pytest.raises(ConfigError, match=r"pretrain.init_from = 'druglike-v1': it was pretrained with model .*"
                                          r"'n_atom_basis': 32.*set pretrain.init_from: null"):
        check_runnable(from_dict({"device": "cpu", "model": {"n_atom_basis": 8}}), tmp_path)
    with pytest.raises(ConfigError, match=r"pretrain.init_from = 'druglike-v9': no shipped encoder .*druglike-v1"):
        check_runnable(from_dict({"device": "cpu", "pretrain": {"init_from": "druglike-v9"}}), tmp_path)
    with pytest.raises(ConfigError, match=r"pretrain.init_from = 'enc/mine.pt': pretraining checkpoint .* not found"):
        check_runnable(from_dict({"device": "cpu", "pretrain": {"init_from": "enc/mine.pt"}}), tmp_path)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"not a readable pretraining checkpoint"):
        check_runnable(from_dict({"device": "cpu", "pretrain": {"init_from": "junk.pt"}}), tmp_path)


# --- the CLI -------------------------------------------------------------------------------------------

def test_cli_run_rejects_bad_params_with_exit_2_before_prefect(tmp_path, capsys):
    from molgnn.cli import main

    (tmp_path / "params.yaml").write_text("finetune:\n  lr: 5e-4x\n  targets: gap\nscreen:\n  rank_by: gap\n")
    start = time.perf_counter()
    assert main(["run", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "finetune.lr = '5e-4x': expected a number" in err
    assert main(["run", "--params", str(tmp_path / "params.yaml"), "--set", "finetune.lr=1e-3",
                 "--set", "device=gpu"]) == 2
    assert "device (from --set) = 'gpu'" in capsys.readouterr().err
    assert main(["run", "--params", str(tmp_path / "params.yaml"), "--set", "finetune.lr=1e-3",
                 "--set", "data.sources=nope.csv"]) == 2
    assert "data.sources[0] = 'nope.csv'" in capsys.readouterr().err
    assert time.perf_counter() - start < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]   # no mlruns/, runs/, data/


def test_cli_run_does_not_import_prefect_for_a_bad_config(tmp_path):
    (tmp_path / "params.yaml").write_text("device: gpu\n")
    code = ("import sys; from molgnn.cli import main; "
            f"rc = main(['run', '--params', {str(tmp_path / 'params.yaml')!r}]); "
            "print(rc, 'prefect' in sys.modules, 'flows.pipeline' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr
    assert "device = 'gpu': expected auto, cpu, cuda or cuda:N" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_guidance_properties_are_the_registry_names():
    from molgnn.chem.properties import PROPERTIES
    from molgnn.config import GUIDANCE_PROPERTIES

    assert set(GUIDANCE_PROPERTIES) == set(PROPERTIES)


def test_task_types_are_typed_and_their_keys_are_targets():
    p = from_dict({"finetune": {"targets": ["toxic", "logS"], "task_types": {"toxic": "classification"},
                                "class_weighting": "balanced"}, "screen": {"rank_by": "toxic"}})
    assert p.finetune.task_types == {"toxic": "classification"} and p.finetune.class_weighting == "balanced"
    assert from_dict({}).finetune.task_types is None and from_dict({}).finetune.class_weighting == "none"
    assert "finetune.task_types = {'tox': 'classification'}: expected keys among the targets" in str(
        _error({"finetune": {"targets": ["toxic"], "task_types": {"tox": "classification"}},
                "screen": {"rank_by": "toxic"}}))
    assert "finetune.task_types.gap = 'binary': expected one of 'auto', 'regression' or 'classification'" in str(
        _error({"finetune": {"task_types": {"gap": "binary"}}}))
    assert "finetune.class_weighting = 'weighted': expected one of 'none' or 'balanced'" in str(
        _error({"finetune": {"class_weighting": "weighted"}}))
