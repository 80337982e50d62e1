"""comp probe: features + a grid-searched classifier per fold, written as a run that comp ensemble blends.

The source runs here hold random-weight checkpoints laid out as `comp train` leaves them (each fold
its own seed), so the tests exercise the probe alone; the pattern images stay easy to tell apart
from such features.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from safetensors import safe_open
from typer.testing import CliRunner

import comp.probe
from comp.augment import ModelInput, fit_size
from comp.cli import app
from comp.config import load_config, save_config
from comp.data.competition import load_competition, read_image, save_classes
from comp.data.folds import write_folds
from comp.models.factory import create_model
from comp.runs import run_dir
from comp.training.checkpoint import save_weights

runner = CliRunner()
FAST = [
    *TINY_RUN,
    *on_competition("shapes"),
    "probe.cv=2",
    "probe.grid={C: [0.1, 10], kernel: [linear, rbf]}",
    # fp32 features like fold_features below: on a CPU with native bf16 (AVX512-BF16, AMX) train.amp
    # would featurise under bf16 autocast.
    "train.amp=false",
]


def cli(command, *args):
    """`comp COMMAND` on the tiny competition; later --set options in `args` win over FAST's."""
    return runner.invoke(app, [command, *sets(*FAST), *args])


@pytest.fixture
def source(project):
    """A 3-class competition and a run 'shapes' whose two folds are finished (random weights, seed = fold)."""
    write_csv_competition(project / "data/shapes", n_classes=3, per_class=8)
    config = load_config("configs/default.yaml", FAST)
    competition = load_competition(config.data)
    write_folds(config, competition)
    save_classes(competition.classes, run_dir(config.name) / "classes.json")
    save_config(config, run_dir(config.name) / "config.yaml")
    for k in (0, 1):
        torch.manual_seed(k)
        folder = run_dir(config.name) / f"fold{k}"
        save_weights(create_model(config.model, 3).state_dict(), folder / "best.safetensors", competition.classes, 1)
        (folder / "summary.json").write_text("{}")
    return config, competition


def fold_features(config, fold: int, image_path: str) -> np.ndarray:
    """What fold `fold`'s own model makes of one image: its pooled pre-logits features."""
    model = create_model(config.model, 3)
    with safe_open(str(run_dir(config.name) / f"fold{fold}/best.safetensors"), framework="pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    image = torch.from_numpy(fit_size(read_image(image_path), 16))
    batch = ModelInput.of(model, torch.device("cpu"))(image[None])
    with torch.no_grad():
        return model.eval().forward_head(model.forward_features(batch), pre_logits=True)[0].numpy()


def test_probe_from_run_is_a_run_that_ensemble_blends(source):
    config, competition = source
    assert cli("predict").exit_code == 0
    result = cli("probe", "--from-run", "shapes", "--name", "svm")
    assert result.exit_code == 0, result.output
    run = run_dir(config.name).parent / "svm"

    cv = json.loads((run / "cv.json").read_text())
    trained_cv = json.loads((run_dir(config.name) / "cv.json").read_text())
    assert cv["metric"] == "accuracy" and set(cv["folds"]) == {"0", "1"} and cv["oof"] >= 0.8
    assert cv["fold_file_sha256"] == trained_cv["fold_file_sha256"]
    assert json.loads((run / "classes.json").read_text()) == [0, 1, 2]
    folds = pd.read_csv(config.fold_file, dtype=str)
    for k in (0, 1):
        oof = pd.read_parquet(run / f"fold{k}/oof.parquet")
        assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == str(k), "id"])  # only its held-out rows
        assert set(json.loads((run / f"fold{k}/probe.json").read_text())["best_params"]) == {"C", "kernel"}
    oof, test = pd.read_parquet(run / "oof.parquet"), pd.read_parquet(run / "test.parquet")
    assert sorted(oof["id"]) == sorted(competition.train["id"]) and list(test["id"]) == list(competition.test["id"])
    assert list(oof.columns) == ["id", "0", "1", "2"]
    assert np.allclose(oof.iloc[:, 1:].sum(axis=1), 1) and np.allclose(test.iloc[:, 1:].sum(axis=1), 1)

    # Each fold is featurised by its own weights: fold k's model never trained on fold k's held-out rows.
    first = competition.train.iloc[0]
    for k in (0, 1):
        with safe_open(str(run / f"features/fold{k}.safetensors"), framework="np") as f:
            cached = f.get_tensor("train")
        assert cached.shape == (len(competition.train), 64)
        assert np.allclose(cached[0], fold_features(config, k, first["path"]), atol=1e-4)
    assert not np.allclose(fold_features(config, 0, first["path"]), fold_features(config, 1, first["path"]))

    blended = cli("ensemble", "shapes", "svm", "--name", "blend")
    assert blended.exit_code == 0, blended.output
    assert (run_dir(config.name).parent / "blend/oof.parquet").exists() and (
        run_dir(config.name).parent / "blend/cv.json"
    ).exists()


def test_cached_features_are_reused_and_a_new_grid_needs_force(source, monkeypatch):
    assert cli("probe", "--from-run", "shapes", "--name", "svm").exit_code == 0
    again = cli(
        "probe",
        "--from-run",
        "shapes",
        "--name",
        "svm",
        "--set",
        "probe.classifier=logistic",
        "--set",
        "probe.grid={C: [1]}",
    )
    assert again.exit_code == 1 and "--force" in again.output

    def no_featurising(*args, **kwargs):
        raise AssertionError("features were computed again")

    monkeypatch.setattr(comp.probe, "extract_features", no_featurising)
    result = cli(
        "probe",
        "--from-run",
        "shapes",
        "--name",
        "svm",
        "--force",
        "--set",
        "probe.classifier=logistic",
        "--set",
        "probe.grid={C: [1]}",
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((run_dir(source[0].name).parent / "svm/cv.json").read_text())["probe"]["classifier"] == "logistic"


def test_configured_weights_featurise_every_fold(source):
    config, _ = source
    weights = run_dir(config.name) / "fold0/best.safetensors"  # a local weights file, as on Kaggle
    result = cli(
        "probe",
        "--name",
        "local",
        "--set",
        f"model.weights={weights}",
        "--set",
        "probe.classifier=logistic",
        "--set",
        "probe.grid={C: [0.1, 1]}",
    )
    assert result.exit_code == 0, result.output
    run = run_dir(config.name).parent / "local"
    assert [p.name for p in (run / "features").iterdir()] == ["backbone.safetensors"]  # one backbone for all folds
    assert json.loads((run / "cv.json").read_text())["oof"] >= 0.8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "p"], "model.pretrained: false"),  # random features are refused
        (["--from-run", "shapes"], "--name"),  # would write into the run it reads
        (["--from-run", "shapes", "--name", "p", "--set", "probe.grid={C: [1], kernal: [rbf]}"], "kernal"),
        (["--from-run", "nothing", "--name", "p"], "no trained folds"),
    ],
)
def test_mistakes_are_one_paragraph_errors(source, args, message):
    result = cli("probe", *args)
    assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (run_dir(source[0].name).parent / "p/cv.json").exists()
