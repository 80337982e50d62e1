import re

import pytest
import yaml
from typer.testing import CliRunner

from comp.cli import app
from comp.config import Config, load_config, parse_override, valid_keys
from comp.config_files import packaged_configs
from comp.errors import CompError
from comp.training.checkpoint import flatten


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


# ----------------------------------------------------------------------------- where a config comes from

PACKAGED = [
    "default",
    "fashion_mnist",
    "resnet101_twophase",
    "resnet18_cifar_5m",
    "resnet34_finetune",
    "resnet9_scratch",
    "svm_probe",
]


@pytest.fixture
def empty(tmp_path, monkeypatch):
    """A working folder without configs/: only what comp carries."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_without_configs_here_the_packaged_default_is_used(empty):
    assert list(packaged_configs()) == PACKAGED
    assert load_config().to_dict() == Config().to_dict()
    assert load_config(None, ["train.epochs=2"]).train.epochs == 2
    assert not (empty / "configs").exists()


def test_the_users_own_default_wins_over_the_packaged_one(empty):
    (empty / "configs").mkdir()
    (empty / "configs/default.yaml").write_text("train:\n  epochs: 9\n")
    assert load_config().train.epochs == 9
    assert load_config("default").train.epochs == 9


def test_a_name_is_configs_name_yaml_here_else_the_packaged_recipe(empty):
    for name in PACKAGED:
        assert load_config(name).name == name
    (empty / "configs").mkdir()
    (empty / "configs/resnet9_scratch.yaml").write_text("name: mine\n")
    assert load_config("resnet9_scratch").name == "mine"


def test_an_unknown_name_lists_the_packaged_configs(empty):
    with pytest.raises(CompError, match="No config named 'resnet9_scrach'") as err:
        load_config("resnet9_scrach")
    assert all(name in err.value.hint for name in PACKAGED)
    with pytest.raises(CompError, match=r"Config file configs/resnet9_scratch\.yaml not found") as err:
        load_config("configs/resnet9_scratch.yaml")
    assert "resnet9_scratch" in err.value.hint


def test_an_invalid_value_over_a_packaged_config_names_it(empty):
    with pytest.raises(CompError, match=r"Invalid value in comp's packaged svm_probe\.yaml with --set"):
        load_config("svm_probe", ["train.epochs=many"])


# ----------------------------------------------------------------------------- comp init


def init(*args: str):
    return CliRunner().invoke(app, ["init", *args])


def test_init_writes_the_documented_default(empty):
    result = init()
    assert result.exit_code == 0, result.output
    assert "configs/default.yaml" in result.output
    written = (empty / "configs/default.yaml").read_text()
    assert written == packaged_configs()["default"].read_text()
    assert load_config().to_dict() == Config().to_dict()


def test_init_slug_points_a_starter_at_the_competition(empty):
    result = init("cassava-leaf-disease-classification")
    assert result.exit_code == 0, result.output
    path = empty / "configs/cassava-leaf-disease-classification.yaml"
    config = load_config("cassava-leaf-disease-classification")
    assert config.name == config.data.competition == "cassava-leaf-disease-classification"
    assert config.data.root == "data/cassava-leaf-disease-classification"
    changed = {"name", "data.competition", "data.root"}
    flat, default = flatten(config.to_dict()), flatten(Config().to_dict())
    assert {key for key in flat if flat[key] != default[key]} == changed
    text, original = path.read_text().splitlines(), packaged_configs()["default"].read_text().splitlines()
    assert len(text) == len(original)
    for line, before in zip(text, original, strict=True):  # the same lines, each key's comment kept
        assert line.partition("#")[2] == before.partition("#")[2]


def test_init_quotes_a_slug_yaml_would_read_as_a_number(empty):
    assert init("2048").exit_code == 0
    config = load_config("configs/2048.yaml")
    assert (config.name, config.data.competition, config.data.root) == ("2048", "2048", "data/2048")


def test_init_never_writes_over_a_config_without_force(empty):
    (empty / "configs").mkdir()
    (empty / "configs/default.yaml").write_text("train:\n  epochs: 9\n")
    result = init()
    assert result.exit_code == 1
    assert "configs/default.yaml already exists" in result.output and "--force" in result.output
    assert (empty / "configs/default.yaml").read_text() == "train:\n  epochs: 9\n"
    assert init("--force").exit_code == 0
    assert load_config().to_dict() == Config().to_dict()


def test_init_refuses_a_slug_that_is_not_one(empty):
    result = init("../elsewhere")
    assert result.exit_code == 1 and "not a competition slug" in result.output
    assert not list(empty.parent.glob("elsewhere*")) and not (empty / "configs").exists()
