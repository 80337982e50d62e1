import re

import pytest
import yaml

from comp.config import Config, load_config, parse_override, valid_keys
from comp.errors import CompError


def test_default_yaml_equals_builtin_defaults_and_documents_every_key(project):
    text = (project / "configs/default.yaml").read_text()
    assert load_config("configs/default.yaml").to_dict() == Config().to_dict()
    documented = set()
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = re.match(r"^( *)([a-z_0-9]+):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        stack = [(i, k) for i, k in stack if i < indent]
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        documented.add(dotted)
        is_section = line.rstrip().endswith(":")
        assert is_section or re.search(r"# \(.+\) \S", line), f"undocumented key line: {line!r}"
    leaves = {k for k in valid_keys() if not any(other.startswith(k + ".") for other in valid_keys())}
    assert leaves <= documented


def test_typo_in_override_suggests_the_closest_key(project):
    with pytest.raises(CompError, match=r"train\.epoch'.*Did you mean train\.epochs\?"):
        load_config("configs/default.yaml", ["train.epoch=3"])


def test_typo_in_file_names_the_file_and_suggestion(project):
    (project / "configs/mine.yaml").write_text("model:\n  nmae: resnet9\n")
    with pytest.raises(CompError) as err:
        load_config("configs/mine.yaml")
    assert "configs/mine.yaml" in err.value.message and "model.name" in err.value.message


def test_overrides_are_yaml_typed_and_merge_over_the_file(project):
    (project / "configs/mine.yaml").write_text("train:\n  epochs: 4\n  lr: 0.01\n")
    config = load_config("configs/mine.yaml", ["train.epochs=7", "predict.tta=[identity,vflip]"])
    assert config.train.epochs == 7 and config.train.lr == 0.01
    assert config.predict.tta == ["identity", "vflip"]
    assert config.data.root == "data/demo"  # untouched keys keep their defaults


def test_invalid_value_names_key_and_value(project):
    with pytest.raises(CompError, match=r"train\.epochs = 'many'"):
        load_config("configs/default.yaml", ["train.epochs=many"])


def test_bad_override_syntax_and_missing_file(project):
    with pytest.raises(CompError, match="key=value"):
        parse_override("train.epochs")
    with pytest.raises(CompError, match="nope.yaml not found"):
        load_config("configs/nope.yaml")


def test_resolved_config_round_trips(project, tmp_path):
    from comp.config import save_config

    config = load_config("configs/default.yaml", ["name=exp1", "model.kwargs={drop_path_rate: 0.1}"])
    save_config(config, tmp_path / "saved.yaml")
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text()) == config.to_dict()
    assert load_config(tmp_path / "saved.yaml").to_dict() == config.to_dict()
