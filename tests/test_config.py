from pathlib import Path

import pytest

from molgnn.config import ConfigError, from_dict, load_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_load_and_hash_is_stable():
    p = load_params(REPO / "params.yaml")
    assert p.finetune.targets
    assert p.digest() == load_params(REPO / "params.yaml").digest()
    assert "finetune.epochs" in p.flat()


def test_digest_changes_with_any_knob():
    assert from_dict({"finetune": {"epochs": 1}}).digest() != from_dict({"finetune": {"epochs": 2}}).digest()


@pytest.mark.parametrize("raw, message", [
    ({"finetun": {}}, "unknown key"),
    ({"finetune": {"epoch": 3}}, "unknown key(s) in finetune"),
    ({"finetune": {"init": "warm"}}, "finetune.init"),
    ({"finetune": {"fractions": [0.5, 0.5]}}, "fractions"),
    ({"generate": {"models": ["gan"]}}, "unknown model"),
    ({"data": [1, 2]}, "must be a mapping"),
])
def test_bad_params_fail_with_a_clear_message(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(raw)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_dataclass_defaults_match_the_shipped_params_yaml():
    """A knob missing from a user's params.yaml behaves as in the shipped one."""
    assert from_dict({}).to_dict() == load_params(REPO / "params.yaml").to_dict()
