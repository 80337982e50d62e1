"""Models: comp's registered architectures, the optional head, local weights, size limits, pretrained."""

from pathlib import Path

import pytest
import timm
import torch
from conftest import on_competition, sets, write_folders_competition
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from typer.testing import CliRunner

from comp.cli import app
from comp.config import ModelConfig
from comp.errors import CompError
from comp.models.architectures import HeadedModel
from comp.models.factory import count_parameters, create_model, normalization, split_parameters

SMALL = {"widths": [8, 16, 32, 64]}  # comp's architectures at a width that keeps the tests quick


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("resnet9", {}, 6_573_130),
        ("resnet9_tiny", {}, 412_954),  # resnet9 at widths 16, 32, 64, 128
        ("resnet18_cifar", {"widths": [64, 128, 256, 512]}, 11_173_962),
        ("resnet18_cifar", {"widths": [42, 84, 168, 336]}, 4_815_940),
    ],
)
def test_registered_models_have_the_published_parameter_counts(name, kwargs, expected):
    model = timm.create_model(name, num_classes=10, **kwargs)  # found through timm's own registry
    assert count_parameters(model) == (expected, expected)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet9", "resnet18_cifar"])
def test_registered_models_follow_timms_classifier_interface(name):
    model = timm.create_model(name, num_classes=10, drop_rate=0.2, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert torch.equal(model.forward_head(features), model(x))
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    model.reset_classifier(4)
    assert model.get_classifier().out_features == 4 and model(x).shape == (2, 4)
    stages = timm.create_model(name, features_only=True, **SMALL)(x)
    assert [f.shape[1] for f in stages] == [8, 16, 32, 64]


def test_resnet9_keeps_the_last_row_and_column_of_odd_sized_maps():
    """28 px: 28 -> 14 -> 7 -> 4, where pools rounding down would leave 3x3 and drop the bottom and right."""
    model = timm.create_model("resnet9_tiny", num_classes=10).eval()
    assert model.forward_features(torch.randn(1, 3, 28, 28)).shape[2:] == (4, 4)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[2:] == (4, 4)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "resnet9"])
def test_any_timm_model_builds_with_the_class_count(name):
    model = create_model(ModelConfig(name=name), num_classes=7).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(CompError, match="Unknown model.name 'resnet_9'.*resnet9"):
        create_model(ModelConfig(name="resnet_9"), 10)


def test_bad_model_kwargs_are_a_config_error():
    with pytest.raises(CompError, match="model.kwargs.*widths"):
        create_model(ModelConfig(name="resnet18_cifar", kwargs={"widths": [64, 128]}), 10)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("resnet18", {}), ("mobilenetv3_small_050", {}), ("vit_tiny_patch16_224", {"img_size": 32})],
)
def test_head_is_dropout_linear_relu_bn_dropout_linear_on_any_backbone(name, kwargs):
    model = create_model(ModelConfig(name=name, kwargs=kwargs, head={"hidden": 48, "dropout": 0.3}), 5)
    assert isinstance(model, HeadedModel)
    layers = list(model.head)
    assert [type(m) for m in layers] == [
        torch.nn.Dropout,
        torch.nn.Linear,
        torch.nn.ReLU,
        torch.nn.BatchNorm1d,
        torch.nn.Dropout,
        torch.nn.Linear,
    ]
    assert layers[0].p == layers[4].p == 0.3
    assert layers[1].out_features == 48 and layers[5].in_features == 48 and layers[5].out_features == 5
    assert model.get_classifier() is layers[5]
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert normalization(model) == normalization(timm.create_model(name))


def test_head_and_backbone_parameters_split_the_model():
    plain = create_model(ModelConfig(name="resnet9"), 10)
    assert {id(p) for p in split_parameters(plain)[0]} == {id(plain.fc.weight), id(plain.fc.bias)}
    headed = create_model(ModelConfig(name="resnet9", head={"hidden": 32}), 10)
    head, backbone = split_parameters(headed)
    assert {id(p) for p in head} == {id(p) for p in headed.head.parameters()}
    assert {id(p) for p in head} | {id(p) for p in backbone} == {id(p) for p in headed.parameters()}
    assert not {id(p) for p in head} & {id(p) for p in backbone}


def test_max_params_refuses_a_model_over_the_limit():
    with pytest.raises(CompError, match=r"6,573,130 parameters.*model.max_params = 6,000,000"):
        create_model(ModelConfig(name="resnet9", max_params=6_000_000), 10)
    assert count_parameters(create_model(ModelConfig(name="resnet9", max_params=6_573_130), 10))[0] == 6_573_130


def test_max_params_refusal_reaches_the_cli_as_a_clean_error(project):
    write_folders_competition(project / "data/tiny", n_classes=3, per_class=4, n_test=3)
    tiny = [*on_competition("tiny"), "folds.k=2"]
    runner = CliRunner()
    assert runner.invoke(app, ["folds", *sets(*tiny)]).exit_code == 0
    too_big = sets(*tiny, "model.name=resnet9", "model.max_params=1000", "train.batch_size=2")
    result = runner.invoke(app, ["train", "--fold", "0", *too_big])
    assert result.exit_code == 1
    expected = count_parameters(timm.create_model("resnet9", num_classes=3))[0]
    assert f"{expected:,} parameters" in result.output and "1,000" in result.output
    assert "Traceback" not in result.output
    assert not list(project.glob("runs/tiny/fold0/*"))


# ----------------------------------------------------------------------------- local weights


@pytest.fixture
def trained_resnet9():
    torch.manual_seed(0)
    model = timm.create_model("resnet9", num_classes=10, **SMALL)
    with torch.no_grad():  # move BN statistics off their defaults so a failed load would show
        model(torch.randn(8, 3, 32, 32))
    return model.eval()


def _save(model: torch.nn.Module, path: Path) -> str:
    if path.suffix == ".safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("filename", ["weights.safetensors", "weights.pt"])
def test_local_weights_file_loads_and_gives_identical_outputs(tmp_path, trained_resnet9, filename):
    weights = _save(trained_resnet9, tmp_path / filename)
    model = create_model(ModelConfig(name="resnet9", kwargs=SMALL, weights=weights), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), trained_resnet9(x))


def test_nested_training_checkpoint_loads(tmp_path, trained_resnet9):
    path = tmp_path / "last.pt"
    torch.save({"model": trained_resnet9.state_dict(), "epoch": 3}, path)
    model = create_model(ModelConfig(name="resnet9", kwargs=SMALL, weights=str(path)), 10).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), trained_resnet9(x))


@pytest.mark.parametrize("filename", ["weights.safetensors", "weights.pt"])
def test_other_class_count_reinitialises_only_the_classifier(tmp_path, trained_resnet9, filename):
    weights = _save(trained_resnet9, tmp_path / filename)
    model = create_model(ModelConfig(name="resnet9", kwargs=SMALL, weights=weights), 4).eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model.forward_features(x), trained_resnet9.forward_features(x))
    assert model(x).shape == (3, 4)
    untouched = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, trained_resnet9.state_dict()[k]) for k, v in untouched.items())


def test_backbone_weights_load_under_a_new_head(tmp_path, trained_resnet9):
    weights = _save(trained_resnet9, tmp_path / "w.safetensors")
    model = create_model(ModelConfig(name="resnet9", kwargs=SMALL, weights=weights, head={"hidden": 16}), 3).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.forward_features(x), trained_resnet9.forward_features(x))


def test_weights_of_a_headed_model_round_trip(tmp_path):
    cfg = ModelConfig(name="resnet9", kwargs=SMALL, head={"hidden": 16, "dropout": 0.1})
    source = create_model(cfg, 3).eval()
    weights = _save(source, tmp_path / "headed.safetensors")
    model = create_model(cfg.model_copy(update={"weights": weights}), 3).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), source(x))


def test_weights_of_another_architecture_are_refused(tmp_path, trained_resnet9):
    weights = _save(trained_resnet9, tmp_path / "w.pt")
    with pytest.raises(CompError, match="does not fit model"):
        create_model(ModelConfig(name="resnet18_cifar", kwargs=SMALL, weights=weights), 10)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(CompError, match="model.weights file .*nope.pt not found"):
        create_model(ModelConfig(name="resnet9", weights=str(tmp_path / "nope.pt")), 10)


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_pickle_with_code_in_it_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": _Payload(marker)}, path)
    with pytest.raises(CompError, match="Refusing to load model.weights .*evil.pt.*pickled Python objects"):
        create_model(ModelConfig(name="resnet9", weights=str(path)), 10)
    assert not marker.exists()


# ----------------------------------------------------------------------------- pretrained weights


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """No network at all (huggingface_hub offline mode) and an empty private cache."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_pretrained_without_internet_or_cache_says_to_use_model_weights(offline_hub):
    with pytest.raises(CompError, match="pretrained weights for model 'mobilenetv3_small_050'.*model.weights"):
        create_model(ModelConfig(name="mobilenetv3_small_050", pretrained=True), 10)


def test_pretrained_weights_come_from_the_local_cache_offline(offline_hub):
    source = timm.create_model("mobilenetv3_small_050").eval()
    repo = offline_hub / "models--timm--mobilenetv3_small_050.lamb_in1k"  # huggingface_hub's cache layout
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(source.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    model = create_model(ModelConfig(name="mobilenetv3_small_050", pretrained=True), 1000).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), source(x))


def test_local_weights_win_over_a_download(offline_hub, tmp_path):
    source = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    weights = _save(source, tmp_path / "mobilenet.safetensors")
    model = create_model(ModelConfig(name="mobilenetv3_small_050", pretrained=True, weights=weights), 10).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), source(x))


def test_pretrained_for_a_model_without_published_weights_is_refused():
    with pytest.raises(CompError, match="no pretrained weights for model.name 'resnet9'"):
        create_model(ModelConfig(name="resnet9", pretrained=True), 10)
