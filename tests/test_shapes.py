"""Every common Kaggle image-competition shape: surveyed, loaded, and (slow) taken from the fake Kaggle
through download -> folds -> train -> predict -> ensemble -> validate, the submission checked cell by cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapes
import yaml

from comp.config import build_config
from comp.data.competition import load_competition
from comp.data.survey import survey_competition
from comp.errors import CompError
from comp.metrics import is_better

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
    "planet-understanding-the-amazon-from-space": (
        {"layout": "csv", "train_csv": "train_v2.csv", "id_column": "image_name", "label_column": "tags",
         "train_dir": "train-jpg", "test_dir": "test-jpg", "sample_submission": "sample_submission_v2.csv"},
        sorted({t for tags in shapes.TAGS.values() for t in tags}), {"format": "tags"},
    ),
    "humpback-whale-identification": (
        {"layout": "csv", "id_column": "Image", "label_column": "Id", "train_dir": "train", "test_dir": "test",
         "image_suffix": ".jpg"},
        [f"w_{d}" for d in range(10)], {"format": "top_k"},
    ),
    "images-tif": ({"layout": "csv", "image_suffix": ".tif"}, [0, 1], {"format": "label"}),
    "images-png": ({"layout": "csv", "image_suffix": ".png"}, [0, 1], {"format": "label"}),
    "images-dcm": ({"layout": "csv", "image_suffix": ".dcm"}, [0, 1], {"format": "label"}),
}  # fmt: skip

# shape -> the task and the predict keys (metric, metric_params) the written config holds
TASKS = {
    "digit-recognizer": ("multiclass", None),
    "Kannada-MNIST": ("multiclass", None),
    "dogs-vs-cats-redux-kernels-edition": ("binary", {"metric": "roc_auc"}),
    "aerial-cactus-identification": ("binary", {"metric": "roc_auc"}),
    "plant-seedlings-classification": ("multiclass", None),
    "cifar-10": ("multiclass", None),
    "state-farm-distracted-driver-detection": ("multiclass", {"metric": "log_loss"}),
    "plant-pathology-2020-fgvc7": ("multiclass", {"metric": "mean_column_auc"}),
    "aptos2019-blindness-detection": ("ordinal", {"metric": "quadratic_weighted_kappa"}),  # 'diagnosis': a grade
    "planet-understanding-the-amazon-from-space": ("multilabel", {"metric": "f_beta", "metric_params": {"beta": 2}}),
    "humpback-whale-identification": ("multiclass", {"metric": "map_at_k", "metric_params": {"k": 5}}),
    "images-tif": ("binary", None),
    "images-png": ("binary", None),
    "images-dcm": ("binary", None),
}
# Integer labels 0..G-1 (G >= 3) in a column not named like a grade: the config offers data.task: ordinal in a
# comment (digit labels are integers too).
GRADES = {"digit-recognizer", "Kannada-MNIST"}


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
        assert (tree["data"]["task"], tree.get("predict")) == TASKS[slug], slug
        build_config(tree)  # the guessed task, metric and format load together
    state_farm = (tmp_path / "configs/state-farm-distracted-driver-detection.yaml").read_text()
    assert "group_column: subject  # rows sharing a 'subject' stay in one fold" in state_farm
    planet = (tmp_path / "configs/planet-understanding-the-amazon-from-space.yaml").read_text()
    assert "metric: f_beta  # metric: mean F2 over the rows (planet's metric), the usual choice" in planet
    assert (
        "change predict.metric" in planet and "task: multilabel  # task multilabel: labels: space-separated" in planet
    )
    aptos = (tmp_path / "configs/aptos2019-blindness-detection.yaml").read_text()
    assert "\n  task: ordinal  # task ordinal: integer grades 0..4 in column 'diagnosis'" in aptos
    assert "set data.task: multiclass (and predict.metric: accuracy) if they are unordered" in aptos
    assert "metric: quadratic_weighted_kappa  # metric: quadratic weighted kappa" in aptos
    digits = (tmp_path / "configs/digit-recognizer.yaml").read_text()
    assert "\n  task: multiclass  # task multiclass: integer labels 0..3" in digits
    assert "set data.task: ordinal and predict.metric: quadratic_weighted_kappa" in digits
    assert "\n  # task: ordinal  # ordered grades" in digits
    humpback = (tmp_path / "configs/humpback-whale-identification.yaml").read_text()
    assert "metric: map_at_k  # metric: MAP@5: the sample's rows hold 5 labels" in humpback
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


READ_TEST_SET = """\
import json, sys
from comp.config import build_config
from comp.data.competition import load_test_set
test, _ = load_test_set(build_config({"data": json.loads(sys.argv[1])}).data)
print(json.dumps(list(test["path"])))
"""


def test_pixel_rows_of_a_read_only_competition_are_decoded_into_comps_cache(tmp_path):
    """Kaggle's /kaggle/input is read-only: the test rows are decoded into comp's cache instead."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    from comp.kernel.sandbox import namespace_command, namespaces_work

    root = tmp_path / "digit-recognizer"
    shapes.digit_recognizer(root)
    data = survey_competition(root).config("digit-recognizer")
    shutil.rmtree(root / ".pixels")  # the survey's decoding, done while the folder was writable
    command = [sys.executable, "-c", READ_TEST_SET, json.dumps(data)]
    env = {**os.environ, "COMP_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    if namespaces_work():  # read-only as on Kaggle: a read-only mount, which binds root too
        command = namespace_command(command, [(root, root)])
    elif os.geteuid() != 0:
        root.chmod(0o555)
    else:
        pytest.skip("root without namespaces writes anywhere: no read-only folder to test with")
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        root.chmod(0o755)
    assert done.returncode == 0, done.stderr
    paths = [Path(p) for p in json.loads(done.stdout)]
    assert not (root / ".pixels").exists()
    table = pd.read_csv(root / "test.csv")
    assert len(paths) == len(table) and all(p.is_relative_to(tmp_path / "cache" / "pixels") for p in paths)
    for row, path in enumerate(paths):
        image = shapes.cv2.imread(str(path), shapes.cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(image.reshape(-1), table.iloc[row].to_numpy()), path


# ----------------------------------------------------------------------------- end to end, through the fake Kaggle


@pytest.fixture
def fake_kaggle(project, tmp_path_factory):
    """The fake Kaggle server, and `comp download SLUG` in a fresh process (the real kaggle client) talking to it."""
    from fake_kaggle import FakeKaggle, run_comp

    home = tmp_path_factory.mktemp("home")
    with FakeKaggle() as fake:
        yield fake, lambda slug: run_comp(fake, home, "download", slug)
    assert fake.stray == [], "a request was meant for the real Kaggle"


@pytest.mark.slow
@pytest.mark.parametrize("slug", list(EXPECTED))
def test_each_shape_from_download_to_a_valid_submission(project, tmp_path, slug, fake_kaggle, capsys):
    fake, download = fake_kaggle
    run = shapes.from_download_to_submission(slug, tmp_path / "source", project, fake, download)
    assert "(data.image_size)" in run.printed, run.printed
    assert {k: run.tree["data"].get(k) for k in EXPECTED[slug][0]} == EXPECTED[slug][0]
    assert (run.tree["data"]["task"], run.tree.get("predict")) == TASKS[slug]
    printed = " ".join(run.printed.split())
    assert f"detected: task {TASKS[slug][0]}" in printed and "(data.task)" in printed  # printed like the others
    offered = "# task: ordinal" in (project / f"configs/{slug}.yaml").read_text()
    assert offered == (slug in GRADES)
    assert run.cv["metric"] == (run.tree.get("predict", {}).get("metric") or "accuracy")
    assert is_better(run.cv["metric"], run.held_back, run.uniform), run.row(slug)  # the submission learned
    with capsys.disabled():  # the figures of the issue's closing table (benchmarks/shapes.py prints them all)
        print("\n" + " | ".join(run.row(slug)))


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
    keys = {"root": str(tmp_path), "layout": "csv", "id_column": "image_id", "label_columns": shapes.PATHOLOGY}
    keys |= {"train_dir": "images", "test_dir": "images", "image_suffix": ".jpg", "task": "multilabel"}  # as hinted
    competition = load_competition(build_config({"data": keys}).data)
    assert competition.task == "multilabel" and competition.classes == shapes.PATHOLOGY
    assert competition.train["label"][3] == " ".join(hot)  # the row's tags: its columns holding 1
    assert competition.train["label"][0] == shapes.PATHOLOGY[0]


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
    with pytest.raises(CompError, match=r"pip install 'comp\[dicom\]'") as err:  # the survey says so too
        survey_competition(tmp_path)
    assert "Reading DICOM images (" in str(err.value) and ".dcm) needs pydicom" in str(err.value)


def test_colour_pixel_tables_are_read_channels_last(tmp_path):
    from comp.data.images import read_image
    from comp.data.pixels import cached_images, pixel_shape

    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3) * 5
    table = pd.DataFrame(rgb.reshape(1, -1).astype(str), columns=[f"p{i}" for i in range(48)])
    (tmp_path / "t.csv").write_text("x")
    assert pixel_shape(48, tmp_path / "t.csv") == (4, 3) and pixel_shape(784, tmp_path / "t.csv") == (28, 1)
    [path] = cached_images(tmp_path, tmp_path / "t.csv", table, list(table.columns))
    assert np.array_equal(read_image(path), rgb[0])  # r, g, b of each pixel in turn
