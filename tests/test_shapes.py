"""Every common Kaggle image-competition shape: surveyed, loaded, and (slow) taken from the fake Kaggle
through download -> folds -> train -> predict -> ensemble -> validate, the submission checked cell by cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapes
import yaml

from comp.config import build_config
from comp.data.competition import load_competition
from comp.data.survey import survey_competition
from comp.errors import CompError

# shape -> what the survey must detect: the data keys, the classes, the first test id and the submission keys
EXPECTED = {
    "digit-recognizer": (
        {"layout": "pixels", "train_csv": "train.csv", "id_column": None, "label_column": "label",
         "test_csv": "test.csv", "test_id_column": None, "sample_submission": "sample_submission.csv"},
        [0, 1, 2, 3], {"format": "label"},
    ),
    "Kannada-MNIST": (
        {"layout": "pixels", "train_csv": "train.csv", "test_csv": "test.csv", "test_id_column": "id"},
        [0, 1, 2, 3], {"format": "label"},
    ),
    "dogs-vs-cats-redux-kernels-edition": (
        {"layout": "filenames", "train_dir": "train", "test_dir": "test", "image_suffix": ".jpg"},
        ["cat", "dog"], {"format": "binary", "positive_class": "dog"},
    ),
    "aerial-cactus-identification": (
        {"layout": "csv", "train_dir": "train/train", "test_dir": "test/test", "id_column": "id",
         "label_column": "has_cactus"},
        [0, 1], {"format": "binary", "positive_class": 1},
    ),
    "plant-seedlings-classification": (
        {"layout": "folders", "train_dir": "train", "test_dir": "test"},
        list(shapes.SEEDLINGS.values()), {"format": "label"},
    ),
    "cifar-10": (
        {"layout": "csv", "train_csv": "trainLabels.csv", "sample_submission": "sampleSubmission.csv"},
        sorted(shapes.CIFAR.values()), {"format": "label"},
    ),
    "state-farm-distracted-driver-detection": (
        {"layout": "csv", "train_csv": "driver_imgs_list.csv", "id_column": "img", "label_column": "classname",
         "train_dir": "train", "test_dir": "test"},
        ["c0", "c1", "c2", "c3"], {"format": "probabilities"},
    ),
    "plant-pathology-2020-fgvc7": (
        {"layout": "csv", "id_column": "image_id", "label_columns": shapes.PATHOLOGY, "train_dir": "images",
         "test_dir": "images", "test_csv": "test.csv"},
        shapes.PATHOLOGY, {"format": "probabilities"},
    ),
    "aptos2019-blindness-detection": (
        {"layout": "csv", "id_column": "id_code", "label_column": "diagnosis", "train_dir": "train_images",
         "test_dir": "test_images", "test_csv": "test.csv", "test_id_column": "id_code"},
        [0, 1, 2, 3, 4], {"format": "label"},
    ),
    "images-tif": ({"layout": "csv", "image_suffix": ".tif"}, [0, 1], {"format": "label"}),
    "images-png": ({"layout": "csv", "image_suffix": ".png"}, [0, 1], {"format": "label"}),
    "images-dcm": ({"layout": "csv", "image_suffix": ".dcm"}, [0, 1], {"format": "label"}),
}  # fmt: skip


@pytest.mark.parametrize("slug", list(EXPECTED))
def test_survey_detects_each_shape_and_the_loader_reads_it(tmp_path, slug):
    shape = shapes.SHAPES[slug](tmp_path / slug)
    survey = survey_competition(tmp_path / slug)
    keys, classes, _ = EXPECTED[slug]
    assert {k: survey.data.get(k) for k in keys} == keys
    competition = load_competition(build_config({"data": survey.config(slug)}).data)
    assert competition.classes == classes
    assert list(competition.test["id"]) == [str(i) for i in shape.truth["id"]]
    assert survey.suggested_image_size == shapes.SIZE
    image = shapes.cv2.imread(competition.train["path"].iloc[0], shapes.cv2.IMREAD_UNCHANGED)
    assert image is None or image.size > 0


def test_written_config_holds_the_submission_format_and_the_group_column(tmp_path):
    from comp.kaggle.competition_config import write_competition_config

    for slug in EXPECTED:
        shapes.SHAPES[slug](tmp_path / slug)
        written = write_competition_config(survey_competition(tmp_path / slug), slug, tmp_path / "configs")
        tree = yaml.safe_load(written.path.read_text())
        assert tree["submission"] == EXPECTED[slug][2], slug
        assert tree["data"]["image_size"] == shapes.SIZE
        assert ("folds" in tree) == (slug == "state-farm-distracted-driver-detection"), slug
    state_farm = (tmp_path / "configs/state-farm-distracted-driver-detection.yaml").read_text()
    assert "group_column: subject  # rows sharing a 'subject' stay in one fold" in state_farm
    again = write_competition_config(survey_competition(tmp_path / "cifar-10"), "cifar-10", tmp_path / "configs")
    assert not again.written  # never over an existing file


def test_pixel_rows_decode_to_the_same_images_once(tmp_path):
    shapes.digit_recognizer(tmp_path)
    survey = survey_competition(tmp_path)
    competition = survey.competition
    first = tmp_path / ".pixels" / "train" / "1.png"
    assert competition.train["path"].iloc[0] == str(first)
    table = pd.read_csv(tmp_path / "train.csv")
    pixels = shapes.cv2.imread(str(first), shapes.cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(pixels.reshape(-1), table.iloc[0, 1:].to_numpy())
    stamp = first.stat().st_mtime_ns
    load_competition(build_config({"data": survey.config("d")}).data)
    assert first.stat().st_mtime_ns == stamp  # decoded once, reused


# ----------------------------------------------------------------------------- end to end, through the fake Kaggle

# A tiny model and run: 2 folds, 2 epochs, 16 px; every shape goes through the same commands.
TINY = [
    "model.name=resnet18_cifar",
    "model.kwargs={widths: [16, 32, 64, 128]}",
    "train.epochs=2",
    "aug.phase1=none",
    "aug.phase2=none",
    "train.batch_size=8",
    "train.lr=0.01",
    "folds.k=2",
    "predict.tta=[identity]",
]


def held_back_score(submission: pd.DataFrame, shape: shapes.Shape, fmt: str) -> float:
    """Accuracy against the held-back truth: the label, the larger probability, or the binary column at 0.5."""
    truth = shape.truth["label"].astype(str).to_numpy()
    values = submission.iloc[:, 1:]
    if fmt == "probabilities":
        predicted = values.columns[values.to_numpy(dtype=float).argmax(axis=1)].astype(str)
    elif fmt == "binary":
        positive = values.iloc[:, 0].astype(float).to_numpy() >= 0.5
        classes = sorted(set(truth), key=lambda c: (len(c), c))  # cat < dog; 0 < 1
        predicted = np.where(positive, classes[-1], classes[0])
    else:
        predicted = values.iloc[:, 0].astype(str).to_numpy()
    return float((np.asarray(predicted) == truth).mean())


def check_cells(submission: pd.DataFrame, sample: pd.DataFrame, shape: shapes.Shape, fmt: str, classes) -> None:
    """Exact ids, order and columns of the sample; the label type and vocabulary; probabilities that add up."""
    assert list(submission.columns) == list(sample.columns)
    assert list(submission.iloc[:, 0].astype(str)) == list(sample.iloc[:, 0].astype(str))
    assert list(submission.iloc[:, 0].astype(str)) == [str(i) for i in shape.truth["id"]]
    values = submission.iloc[:, 1:]
    if fmt == "label":
        assert values.iloc[:, 0].map(type).eq(shape.label_type).all(), values.iloc[:, 0].map(type).unique()
        assert set(values.iloc[:, 0]) <= set(classes)
    else:
        probs = values.to_numpy(dtype=float)
        assert ((probs >= 0) & (probs <= 1)).all()
        if fmt == "probabilities":
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.fixture
def fake_kaggle(project, tmp_path_factory):
    """The fake Kaggle server, and `comp ARGS` in a fresh process (the real kaggle client) talking to it."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    from fake_kaggle import FakeKaggle

    home = tmp_path_factory.mktemp("home")
    with FakeKaggle() as fake:

        def run_comp(*args: str) -> tuple[int, str]:
            env = fake.env(home) | {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
            }
            done = subprocess.run(
                [sys.executable, "-m", "comp", *args], env=env, capture_output=True, text=True, timeout=120
            )
            return done.returncode, done.stdout + done.stderr

        yield fake, run_comp
    assert fake.stray == [], "a request was meant for the real Kaggle"


@pytest.mark.slow
@pytest.mark.parametrize("slug", list(EXPECTED))
def test_each_shape_from_download_to_a_valid_submission(project, tmp_path, slug, fake_kaggle, capsys):
    import json

    from typer.testing import CliRunner

    from comp.cli import app

    shape = shapes.SHAPES[slug](tmp_path / "source")
    fake, run_comp = fake_kaggle
    fake.archives[slug] = shapes.archive(tmp_path / "source")
    code, output = run_comp("download", slug)
    assert code == 0 and f"Wrote configs/{slug}.yaml" in output and "(data.image_size)" in output, output
    config = f"configs/{slug}.yaml"
    tree = yaml.safe_load((project / config).read_text())
    assert {k: tree["data"].get(k) for k in EXPECTED[slug][0]} == EXPECTED[slug][0]

    runner = CliRunner()
    overrides = [arg for key in TINY for arg in ("--set", key)]
    for command in (["folds"], ["train", "--fold", "all"], ["predict", "--tta"], ["ensemble"]):
        result = runner.invoke(app, [*command, "-c", config, *overrides])
        assert result.exit_code == 0, result.output + repr(result.exception)
    path = project / "submissions" / f"{slug}.csv"
    result = runner.invoke(app, ["validate", str(path), "-c", config])
    assert result.exit_code == 0, result.output

    fmt = tree["submission"]["format"]
    sample = pd.read_csv(project / tree["data"]["root"] / tree["data"]["sample_submission"], dtype=str)
    submission = pd.read_csv(path)  # values read back with their types, as Kaggle reads them
    classes = json.loads((project / "runs" / slug / "classes.json").read_text())
    check_cells(submission, sample, shape, fmt, classes)
    cv = json.loads((project / "runs" / slug / "cv.json").read_text())
    score = held_back_score(submission, shape, fmt)
    with capsys.disabled():  # the figures of the issue's closing table
        layout = tree["data"]["layout"]
        print(f"\nSHAPE {slug} | {layout} | CV {cv['metric']} {cv['oof']:.4f} | held-back accuracy {score:.4f}")


# ----------------------------------------------------------------------------- bad input: file, row, key and fix


def _error(folder) -> str:
    with pytest.raises(CompError) as err:
        survey_competition(folder)
    return str(err.value)


def test_a_pixel_table_whose_width_is_not_a_square(tmp_path):
    shapes.digit_recognizer(tmp_path)
    table = pd.read_csv(tmp_path / "train.csv")
    table.drop(columns=["pixel255"]).to_csv(tmp_path / "train.csv", index=False)
    message = _error(tmp_path)
    assert "train.csv, line 1: 255 pixel columns are not a square image" in message


@pytest.mark.parametrize("hot", [[], ["healthy", "rust"]])
def test_a_one_hot_row_without_exactly_one_1_looks_multilabel(tmp_path, hot):
    shapes.plant_pathology(tmp_path)
    table = pd.read_csv(tmp_path / "train.csv")
    table.loc[3, shapes.PATHOLOGY] = [int(c in hot) for c in shapes.PATHOLOGY]
    table.to_csv(tmp_path / "train.csv", index=False)
    message = _error(tmp_path)
    what = "no 1" if not hot else "2 1s (healthy, rust)"
    assert f"train.csv, line 5 (id 'Train_3'): {what} among the one-hot label columns" in message
    assert "look multi-label: set data.task: multilabel" in message


def test_a_file_name_that_does_not_split_into_a_label(tmp_path):
    shapes.dogs_vs_cats(tmp_path)
    (tmp_path / "train" / "cat.3.jpg").rename(tmp_path / "train" / "cat3.jpg")
    message = _error(tmp_path)
    assert "File name 'cat3.jpg' in" in message and "does not split into a label with data.label_pattern" in message


def test_a_test_csv_that_disagrees_with_the_sample_submission(tmp_path):
    shapes.aptos(tmp_path)
    table = pd.read_csv(tmp_path / "test.csv", dtype=str)
    table.loc[2, "id_code"] = "0000deadbeef"
    table.to_csv(tmp_path / "test.csv", index=False)
    message = _error(tmp_path)
    third = pd.read_csv(tmp_path / "sample_submission.csv", dtype=str)["id_code"][2]
    assert f"disagree: id '{third}' (sample_submission.csv, line 4) is not in test.csv" in message


def test_pixel_rows_and_sample_ids_that_do_not_pair_up(tmp_path):
    shapes.digit_recognizer(tmp_path)
    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    sample.iloc[:-1].to_csv(tmp_path / "sample_submission.csv", index=False)
    message = _error(tmp_path)
    assert "disagree: 23 ids vs 24 pixel rows" in message and "data.test_id_column" in message


def test_a_train_row_with_an_empty_label_is_named(tmp_path):
    shapes.aptos(tmp_path)
    table = pd.read_csv(tmp_path / "train.csv", dtype=str)
    table.loc[6, "diagnosis"] = ""
    table.to_csv(tmp_path / "train.csv", index=False)
    message = _error(tmp_path)
    assert f"train.csv, line 8 (id '{table['id_code'][6]}'): the label is empty." in message


def test_dicom_without_pydicom_names_the_extra(tmp_path, monkeypatch):
    import builtins

    from comp.data.images import read_image

    shapes.other_files(tmp_path, n_train=2, n_test=1, suffix=".dcm")
    image = read_image(tmp_path / "train" / "t0.dcm")
    assert image.shape == (shapes.SIZE, shapes.SIZE, 3) and image.dtype == np.uint8 and image.max() > 0
    real_import = builtins.__import__

    def no_pydicom(name, *args, **kwargs):
        if name == "pydicom":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with pytest.raises(CompError, match=r"pip install 'comp\[dicom\]'"):
        read_image(tmp_path / "train" / "t0.dcm")


def test_colour_pixel_tables_are_read_channels_last(tmp_path):
    from comp.data.images import read_image
    from comp.data.pixels import cached_images, pixel_shape

    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3) * 5
    table = pd.DataFrame(rgb.reshape(1, -1).astype(str), columns=[f"p{i}" for i in range(48)])
    (tmp_path / "t.csv").write_text("x")
    assert pixel_shape(48, tmp_path / "t.csv") == (4, 3) and pixel_shape(784, tmp_path / "t.csv") == (28, 1)
    [path] = cached_images(tmp_path, tmp_path / "t.csv", table, list(table.columns))
    assert np.array_equal(read_image(path), rgb[0])  # r, g, b of each pixel in turn
