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
from comp.metrics import score

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
    "aptos2019-blindness-detection": ("multiclass", None),  # ordinal offered in a comment
    "planet-understanding-the-amazon-from-space": ("multilabel", {"metric": "f_beta", "metric_params": {"beta": 2}}),
    "humpback-whale-identification": ("multiclass", {"metric": "map_at_k", "metric_params": {"k": 5}}),
    "images-tif": ("binary", None),
    "images-png": ("binary", None),
    "images-dcm": ("binary", None),
}
# Integer labels 0..G-1 (G >= 3): the config offers data.task: ordinal in a comment (digits are integers too).
GRADES = {"digit-recognizer", "Kannada-MNIST", "aptos2019-blindness-detection"}
# The edit the aptos config's comment offers (its grades are ordered; the competition scores kappa).
ORDINAL = ["data.task=ordinal", "predict.metric=quadratic_weighted_kappa"]


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
    assert "set data.task: ordinal and predict.metric: quadratic_weighted_kappa" in aptos
    assert (
        "\n  task: multiclass  # task multiclass: integer labels 0..4" in aptos
        and "\n  # task: ordinal  # ordered grades" in aptos
    )
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


def submitted_scores(submission: pd.DataFrame, tree: dict, classes: list) -> np.ndarray:
    """The submission read back as a rows x classes table the metrics score: its probabilities; a label, its
    tags as 1s; a top-k list as descending ranks."""
    names = [str(c) for c in classes]
    cells = submission.iloc[:, 1:]
    fmt = tree["submission"]["format"]
    if fmt == "probabilities":
        return cells[names].to_numpy(dtype=float)
    if fmt == "binary":
        p = cells.iloc[:, 0].to_numpy(dtype=float)
        positive = names.index(str(tree["submission"]["positive_class"]))
        return np.stack([1 - p, p] if positive == 1 else [p, 1 - p], axis=1)
    table = np.zeros((len(submission), len(names)))
    for row, cell in enumerate(cells.iloc[:, 0].astype(str)):
        for rank, label in enumerate(cell.split() if fmt != "label" else [cell]):
            table[row, names.index(label)] = 1.0 if fmt in ("label", "tags") else len(names) - rank
    return table


def held_back_score(submission: pd.DataFrame, shape: shapes.Shape, tree: dict, classes: list, cv: dict) -> float:
    """The run's own metric (cv.json's, with its parameters) on the held-back truth, from the submission."""
    names = [str(c) for c in classes]
    truth = shape.truth["label"].astype(str)
    if cv["task"] == "multilabel":
        targets = np.array([[n in cell.split() for n in names] for cell in truth], dtype=int)
    else:
        targets = np.array([names.index(t) for t in truth])
    return score(cv["metric"], targets, submitted_scores(submission, tree, classes), **cv.get("metric_params", {}))


def check_cells(submission: pd.DataFrame, sample: pd.DataFrame, shape: shapes.Shape, fmt: str, classes) -> None:
    """Exact ids, order and columns of the sample; the label type and vocabulary; probabilities that add up."""
    assert list(submission.columns) == list(sample.columns)
    assert list(submission.iloc[:, 0].astype(str)) == list(sample.iloc[:, 0].astype(str))
    assert list(submission.iloc[:, 0].astype(str)) == [str(i) for i in shape.truth["id"]]
    values = submission.iloc[:, 1:]
    if fmt == "label":
        assert values.iloc[:, 0].map(type).eq(shape.label_type).all(), values.iloc[:, 0].map(type).unique()
        assert set(values.iloc[:, 0]) <= set(classes)
    elif fmt in ("tags", "top_k"):
        k = len(str(sample.iloc[0, 1]).split())
        for cell in values.iloc[:, 0].astype(str):
            labels = cell.split()
            assert set(labels) <= set(map(str, classes)) and len(labels) == len(set(labels)), cell
            assert labels == sorted(labels, key=[str(c) for c in classes].index) if fmt == "tags" else len(labels) == k
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
    assert (tree["data"]["task"], tree.get("predict")) == TASKS[slug]
    printed = " ".join(output.split())
    assert f"detected: task {TASKS[slug][0]}" in printed and "(data.task)" in printed  # printed like the others
    offered = "# task: ordinal" in (project / config).read_text()
    assert offered == (slug in GRADES)

    runner = CliRunner()
    edits = ORDINAL if slug == "aptos2019-blindness-detection" else []  # the edit its comment offers
    overrides = [arg for key in [*TINY, *edits] for arg in ("--set", key)]
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
    assert cv["metric"] == (
        tree.get("predict", {}).get("metric") or ("quadratic_weighted_kappa" if edits else "accuracy")
    )
    held_back = held_back_score(submission, shape, tree, classes, cv)
    with capsys.disabled():  # the figures of the issue's closing table
        detected = f"{tree['data']['layout']} | {cv['task']} | {cv['metric']} {cv.get('metric_params') or ''} | {fmt}"
        print(f"\nSHAPE {slug} | {detected} | CV {cv['oof']:.4f} | held-back {held_back:.4f}")


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
