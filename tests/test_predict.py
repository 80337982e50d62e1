"""comp predict: OOF and test with the same views, alignment by id, auto TTA, streaming, folders, bad input.

The runs here are built directly (random-weight checkpoints, as `comp train` lays them out) so the
tests exercise prediction alone; tests/test_pipeline.py trains for real.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from comp.augment import ModelInput, fit_size
from comp.cli import app
from comp.config import load_config, save_config
from comp.data.competition import load_competition, read_image, save_classes
from comp.data.folds import write_folds
from comp.errors import CompError
from comp.models.factory import create_model
from comp.predict import predict
from comp.runs import TableWriter, read_predictions, run_dir
from comp.tta import AUTO_CANDIDATES

runner = CliRunner()
FAST = [*TINY_RUN, *on_competition("shapes")]


def write_fold(config, fold: int, classes: list, seed: int) -> None:
    """A finished fold as `comp train` leaves it: best.safetensors with its class list, and summary.json."""
    torch.manual_seed(seed)
    model = create_model(config.model, len(classes))
    folder = run_dir(config.name) / f"fold{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "best.safetensors"), metadata={"classes": json.dumps(classes), "epoch": "1"})
    (folder / "summary.json").write_text("{}")


def make_run(project, overrides=(), folds=(0, 1), n_classes: int = 3):
    """A competition of `n_classes` classes (6 test images x0..x5) and a run whose `folds` are trained."""
    write_csv_competition(project / "data/shapes", n_classes=n_classes, per_class=6)
    config = load_config("configs/default.yaml", [*FAST, *overrides])
    competition = load_competition(config.data)
    write_folds(config, competition)
    save_classes(competition.classes, run_dir(config.name) / "classes.json")
    save_config(config, run_dir(config.name) / "config.yaml")
    for k in folds:
        write_fold(config, k, competition.classes, seed=k)
    return config


def cli(*args):
    return runner.invoke(app, [*args, *sets(*FAST)])


def run_files(config) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir(config.name))): p.read_bytes() for p in run_dir(config.name).rglob("*") if p.is_file()
    }


# ----------------------------------------------------------------------------- views


def test_oof_and_test_rows_of_the_same_image_use_the_same_views(project):
    config = make_run(project, ["predict.tta=[identity, hflip]"])
    root = project / "data/shapes"
    shutil.copy(root / "train/img_1_0.png", root / "test/copy.png")
    sample = pd.read_csv(root / "sample_submission.csv")
    sample = pd.concat([sample, pd.DataFrame({"id": ["copy"], "label": [0]})])
    sample.to_csv(root / "sample_submission.csv", index=False)
    competition = load_competition(config.data)
    fold = int(pd.read_csv(config.fold_file).set_index("id").loc["img_1_0", "fold"])

    result = predict(config, competition, tta=True)
    oof, _ = read_predictions(run_dir(config.name) / f"fold{fold}/oof.parquet")
    test, _ = read_predictions(run_dir(config.name) / f"fold{fold}/test.parquet")
    np.testing.assert_allclose(oof.loc["img_1_0"], test.loc["copy"], rtol=1e-6)
    assert result.views == ["identity", "hflip"]
    for name in ("oof.parquet", "test.parquet", f"fold{fold}/oof.parquet", f"fold{fold}/test.parquet"):
        assert json.loads(pq.read_schema(run_dir(config.name) / name).metadata[b"views"]) == ["identity", "hflip"]
    assert json.loads((run_dir(config.name) / "cv.json").read_text())["views"] == ["identity", "hflip"]

    predict(config, competition, tta=False)  # the views matter here: identity alone gives other numbers
    identity, _ = read_predictions(run_dir(config.name) / f"fold{fold}/oof.parquet")
    assert np.abs(identity.loc["img_1_0"].to_numpy() - oof.loc["img_1_0"].to_numpy()).max() > 1e-4


def test_test_predictions_follow_the_sample_submissions_order(project):
    config = make_run(project)
    predict(config, load_competition(config.data))
    before, _ = read_predictions(run_dir(config.name) / "test.parquet")
    path = project / "data/shapes/sample_submission.csv"
    shuffled = pd.read_csv(path).sample(frac=1, random_state=3)
    assert list(shuffled["id"]) != list(before.index)
    shuffled.to_csv(path, index=False)

    predict(config, load_competition(config.data))
    after = pd.read_parquet(run_dir(config.name) / "test.parquet")
    assert list(after["id"]) == list(shuffled["id"])
    pd.testing.assert_frame_equal(after.set_index("id").loc[before.index], before)


def test_auto_chooses_views_on_oof_rows_and_records_the_choice(project):
    config = make_run(project)  # predict.tta: auto is the default
    result = predict(config, load_competition(config.data), tta=True)
    cv = json.loads((run_dir(config.name) / "cv.json").read_text())
    record = cv["tta_auto"]
    assert set(record["alone"]) == set(AUTO_CANDIDATES) and len(record["steps"]) == len(AUTO_CANDIDATES)
    assert cv["views"] == record["views"] == result.views == [s["view"] for s in record["steps"] if s["kept"]]
    assert cv["oof"] == pytest.approx(record["score"]) and cv["oof"] >= max(record["alone"].values())
    assert json.loads(pq.read_schema(run_dir(config.name) / "fold1/test.parquet").metadata[b"views"]) == result.views


def test_the_configured_metric_is_the_cv_score(project):
    config = make_run(project, ["predict.metric=log_loss"])
    result = predict(config, load_competition(config.data))
    cv = json.loads((run_dir(config.name) / "cv.json").read_text())
    oof = pd.read_parquet(run_dir(config.name) / "oof.parquet").set_index("id")
    labels = pd.read_csv(project / "data/shapes/train.csv").set_index("id")["label"]
    expected = -np.mean([np.log(oof.loc[i, str(labels[i])]) for i in oof.index])
    assert cv["metric"] == result.metric == "log_loss"
    assert cv["oof"] == pytest.approx(expected) and cv["oof"] == pytest.approx(cv["log_loss"])
    assert set(cv["folds"]) == {"0", "1"} and sorted(oof.index) == sorted(labels.index)


@pytest.mark.parametrize("channels_last", [False, True])  # the memory format changes speed, not predictions
def test_predictions_come_from_best_safetensors_with_the_runs_own_model(project, channels_last):
    config = make_run(project, folds=(0,))
    # amp off: on a CPU with native bf16 (AVX512-BF16, AMX) train.amp predicts under bf16 autocast, which
    # rounds differently from the fp32 forward pass this test compares with.
    changed = load_config(
        "configs/default.yaml",
        [*FAST, "model.name=resnet9", "data.image_size=24", f"train.channels_last={channels_last}", "train.amp=false"],
    )
    result = predict(changed, load_competition(changed.data))
    folds = pd.read_csv(config.fold_file)
    assert result.missing_folds == [1]
    assert sorted(pd.read_parquet(run_dir(config.name) / "oof.parquet")["id"]) == sorted(
        folds.loc[folds["fold"] == 0, "id"]
    )

    model = create_model(config.model, 3).eval()  # resnet18_cifar at 16 px, as the run was trained
    model.load_state_dict(load_file(str(run_dir(config.name) / "fold0/best.safetensors")))
    image = read_image(project / "data/shapes/test/x0.png")
    batch = ModelInput.of(model, torch.device("cpu"))(torch.from_numpy(fit_size(image, 16))[None])
    with torch.no_grad():
        expected = model(batch).softmax(1)[0].numpy()
    test, _ = read_predictions(run_dir(config.name) / "fold0/test.parquet")
    np.testing.assert_allclose(test.loc["x0"].to_numpy(), expected, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- streaming


def test_table_writer_writes_row_groups_as_batches_come(tmp_path, monkeypatch):
    monkeypatch.setattr(TableWriter, "ROWS_PER_GROUP", 4)
    rng = np.random.default_rng(0)
    batches = [
        (["a", "b", "c"], rng.random((3, 2))),
        (["d", "e", "f"], rng.random((3, 2))),
        (["g"], rng.random((1, 2))),
    ]
    with TableWriter(tmp_path / "t.parquet", [10, "x"], ["identity"], "multiclass") as writer:
        for ids, probs in batches:
            writer.append(ids, probs)
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 2
    table, classes = read_predictions(tmp_path / "t.parquet")
    assert classes == [10, "x"] and list(table.columns) == ["10", "x"]
    assert list(table.index) == list("abcdefg")
    np.testing.assert_array_equal(table.to_numpy(), np.concatenate([p for _, p in batches]))


# ----------------------------------------------------------------------------- any folder


def test_predict_images_writes_labels_and_fold_mean_probabilities(project):
    config = make_run(project)
    predict(config, load_competition(config.data))
    result = cli("predict", "--images", "data/shapes/test")
    assert result.exit_code == 0, result.output
    path = run_dir(config.name) / "predictions/test.csv"
    assert str(path) in result.output.replace("\n", "")
    table = pd.read_csv(path)
    assert list(table.columns) == ["id", "label", "0", "1", "2"]
    assert list(table["id"]) == [f"x{i}.png" for i in range(6)]
    probs = table[["0", "1", "2"]].to_numpy()
    assert list(table["label"]) == list(probs.argmax(1))
    test, _ = read_predictions(run_dir(config.name) / "test.parquet")
    np.testing.assert_allclose(probs, test.loc[[f"x{i}" for i in range(6)]].to_numpy(), rtol=1e-6)


def test_predict_images_with_auto_uses_the_views_chosen_on_oof(project):
    config = make_run(project)
    refused = cli("predict", "--images", "data/shapes/test", "--tta")
    assert refused.exit_code == 1 and "comp predict --tta" in refused.output
    chosen = predict(config, load_competition(config.data), tta=True).views
    assert cli("predict", "--images", "data/shapes/test", "--tta").exit_code == 0
    assert f"views {', '.join(chosen)}" in cli("predict", "--images", "data/shapes/test", "--tta").output


# ----------------------------------------------------------------------------- bad input: clear errors, nothing written


def test_a_run_without_trained_folds_is_refused(project):
    config = make_run(project, folds=())
    with pytest.raises(CompError, match="no trained folds") as err:
        predict(config, load_competition(config.data))
    assert "comp train" in err.value.hint
    assert not (run_dir(config.name) / "oof.parquet").exists()


def test_a_fold_trained_on_other_classes_is_refused_before_anything_is_written(project):
    config = make_run(project)
    write_fold(config, 1, [0, 1, 2, 3], seed=1)
    with pytest.raises(CompError, match=r"fold1/best.safetensors was made for classes that disagree.*not in the data"):
        predict(config, load_competition(config.data))
    assert sorted(p.name for p in run_dir(config.name).iterdir()) == ["classes.json", "config.yaml", "fold0", "fold1"]
    assert not list(run_dir(config.name).rglob("*.parquet"))


def test_a_fold_file_changed_since_training_is_refused(project):
    config = make_run(project)
    (run_dir(config.name) / "fold1/run.json").write_text(json.dumps({"fold_file_sha256": "0" * 64}))
    with pytest.raises(CompError, match="changed since fold 1"):
        predict(config, load_competition(config.data))
    assert not list(run_dir(config.name).rglob("*.parquet"))


def test_a_failure_midway_leaves_the_previous_predictions_untouched(project):
    config = make_run(project, ["train.num_workers=1"])  # the error comes from a DataLoader worker
    predict(config, load_competition(config.data))
    before = run_files(config)
    (project / "data/shapes/test/x3.png").write_bytes(b"not a png")  # found by the OOF pass, read in the test pass
    with pytest.raises(CompError, match=r"^Cannot read image .*x3.png") as err:
        predict(config, load_competition(config.data), tta=True)
    assert "Traceback" not in str(err.value)
    assert run_files(config) == before


def test_missing_test_images_are_listed_and_nothing_is_written(project):
    config = make_run(project)
    for name in ("x1", "x4"):
        (project / f"data/shapes/test/{name}.png").unlink()
    result = cli("predict")
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "2 test image(s)" in message and "x1, x4" in message
    assert not list(run_dir(config.name).rglob("*.parquet"))


def test_unknown_view_and_empty_folder_are_clear_errors(project):
    config = make_run(project)
    result = cli("predict", "--tta", "--set", "predict.tta=[identity, hflp]")
    assert result.exit_code == 1 and "Did you mean hflip?" in result.output and "Traceback" not in result.output
    (project / "empty").mkdir()
    result = cli("predict", "--images", "empty")
    assert result.exit_code == 1 and "No images in" in result.output
    assert not list(run_dir(config.name).rglob("*.parquet")) and not (run_dir(config.name) / "predictions").exists()
