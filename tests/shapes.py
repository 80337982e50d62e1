"""Small replicas of real Kaggle competitions' data shapes, built from scikit-learn's digits (upscaled).

Each builder writes the competition's files under a folder, as its Kaggle archive unpacks, and returns
the held-back truth: the test ids in the sample's order with their true class. from_download_to_submission
takes one replica from the fake Kaggle through every command to a validated submission, checks it cell by
cell and scores it on the held-back truth (tests/test_shapes.py and benchmarks/shapes.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_digits

from comp.metrics import score

SIZE = 16  # images are the 8x8 digits upscaled to SIZE x SIZE


@dataclass
class Shape:
    slug: str
    truth: pd.DataFrame  # id (as in the sample), label (the true class, the submission's own type)
    label_type: type  # the type the submission's labels read back as (int or str)


def digits(classes: list[int], per_class: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """per_class images of each digit (SIZE x SIZE uint8 grey), taken from position `offset` of that digit's
    images, interleaved so that no class comes in one block."""
    data = load_digits()
    images, labels = [], []
    for i in range(per_class):
        for digit in classes:
            index = np.flatnonzero(data.target == digit)[offset + i]
            image = np.round(data.images[index] * (255 / 16)).astype(np.uint8)
            images.append(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR))
            labels.append(digit)
    return np.stack(images), np.array(labels)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dcm":
        return write_dicom(path, image.astype(np.uint16) * 16)
    cv2.imwrite(str(path), image)


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """A minimal single-frame MONOCHROME2 DICOM file holding 16-bit pixels, with a window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 16)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.save_as(path, enforce_file_format=True)


def _split(classes, n_train, n_test):
    train_x, train_y = digits(classes, n_train)
    test_x, test_y = digits(classes, n_test, offset=n_train)
    return train_x, train_y, test_x, test_y


def _csv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


# ----------------------------------------------------------------------------- the shapes


def digit_recognizer(root: Path, n_train=30, n_test=6) -> Shape:
    """train.csv label,pixel0..; test.csv pixels only; sample ImageId,Label with ids 1..N in test.csv order."""
    tx, ty, vx, vy = _split(list(range(4)), n_train, n_test)
    pixels = [f"pixel{i}" for i in range(SIZE * SIZE)]
    _csv(
        root / "train.csv",
        pd.concat([pd.DataFrame({"label": ty}), pd.DataFrame(tx.reshape(len(tx), -1), columns=pixels)], axis=1),
    )
    _csv(root / "test.csv", pd.DataFrame(vx.reshape(len(vx), -1), columns=pixels))
    ids = list(range(1, len(vx) + 1))
    _csv(root / "sample_submission.csv", pd.DataFrame({"ImageId": ids, "Label": 0}))
    return Shape("digit-recognizer", pd.DataFrame({"id": ids, "label": vy}), int)


def kannada_mnist(root: Path, n_train=30, n_test=6) -> Shape:
    """As digit-recognizer, but test.csv starts with an id column the sample uses (and Dig-MNIST.csv beside)."""
    tx, ty, vx, vy = _split(list(range(4)), n_train, n_test)
    pixels = [f"pixel{i}" for i in range(SIZE * SIZE)]
    train = pd.concat([pd.DataFrame({"label": ty}), pd.DataFrame(tx.reshape(len(tx), -1), columns=pixels)], axis=1)
    _csv(root / "train.csv", train)
    _csv(root / "Dig-MNIST.csv", train.iloc[:8])
    ids = list(range(len(vx)))
    _csv(
        root / "test.csv",
        pd.concat([pd.DataFrame({"id": ids}), pd.DataFrame(vx.reshape(len(vx), -1), columns=pixels)], axis=1),
    )
    _csv(root / "sample_submission.csv", pd.DataFrame({"id": ids, "label": 5}))
    return Shape("Kannada-MNIST", pd.DataFrame({"id": ids, "label": vy}), int)


def dogs_vs_cats(root: Path, n_train=40, n_test=8) -> Shape:
    """train/cat.0.jpg, train/dog.0.jpg; test/1.jpg ...; sample id,label with label = P(dog)."""
    tx, ty, vx, vy = _split([0, 1], n_train, n_test)
    names = {0: "cat", 1: "dog"}
    counts = {0: 0, 1: 0}
    for image, digit in zip(tx, ty, strict=True):
        _write(root / "train" / f"{names[digit]}.{counts[digit]}.jpg", image)
        counts[digit] += 1
    ids = list(range(1, len(vx) + 1))
    for i, image in zip(ids, vx, strict=True):
        _write(root / "test" / f"{i}.jpg", image)
    _csv(root / "sample_submission.csv", pd.DataFrame({"id": ids, "label": 0.5}))
    return Shape(
        "dogs-vs-cats-redux-kernels-edition", pd.DataFrame({"id": ids, "label": [names[d] for d in vy]}), float
    )


def aerial_cactus(root: Path, n_train=40, n_test=8) -> Shape:
    """train.csv id,has_cactus with ids like <hex>.jpg in train/train/; test/test/; sample id,has_cactus (P(1))."""
    tx, ty, vx, vy = _split([3, 8], n_train, n_test)
    rng = np.random.default_rng(0)
    hexes = [f"{rng.integers(1 << 62):016x}{i:04d}.jpg" for i in range(len(tx) + len(vx))]
    for name, image in zip(hexes, np.concatenate([tx, vx]), strict=True):
        _write(root / ("train/train" if name in hexes[: len(tx)] else "test/test") / name, image)
    _csv(root / "train.csv", pd.DataFrame({"id": hexes[: len(tx)], "has_cactus": (ty == 8).astype(int)}))
    test_ids = hexes[len(tx) :]
    _csv(root / "sample_submission.csv", pd.DataFrame({"id": test_ids, "has_cactus": 0.5}))
    return Shape("aerial-cactus-identification", pd.DataFrame({"id": test_ids, "label": (vy == 8).astype(int)}), float)


SEEDLINGS = {0: "Black-grass", 1: "Common Chickweed", 2: "Loose Silky-bent", 3: "Shepherds Purse"}


def plant_seedlings(root: Path, n_train=30, n_test=5) -> Shape:
    """train/<class name with spaces>/<hash>.png; test/<hash>.png; sample file,species."""
    tx, ty, vx, vy = _split(list(SEEDLINGS), n_train, n_test)
    for i, (image, digit) in enumerate(zip(tx, ty, strict=True)):
        _write(root / "train" / SEEDLINGS[digit] / f"{i:05x}e9.png", image)
    files = [f"{i:04x}f.png" for i in range(len(vx))]
    for name, image in zip(files, vx, strict=True):
        _write(root / "test" / name, image)
    _csv(root / "sample_submission.csv", pd.DataFrame({"file": files, "species": "Black-grass"}))
    return Shape(
        "plant-seedlings-classification", pd.DataFrame({"id": files, "label": [SEEDLINGS[d] for d in vy]}), str
    )


CIFAR = {0: "airplane", 1: "automobile", 2: "bird", 3: "cat"}


def cifar_10(root: Path, n_train=30, n_test=5) -> Shape:
    """trainLabels.csv id,label (ids 1..N, word labels), train/1.png; sampleSubmission.csv id,label."""
    tx, ty, vx, vy = _split(list(CIFAR), n_train, n_test)
    for i, image in enumerate(tx, start=1):
        _write(root / "train" / f"{i}.png", image)
    _csv(root / "trainLabels.csv", pd.DataFrame({"id": range(1, len(tx) + 1), "label": [CIFAR[d] for d in ty]}))
    ids = list(range(1, len(vx) + 1))
    for i, image in zip(ids, vx, strict=True):
        _write(root / "test" / f"{i}.png", image)
    _csv(root / "sampleSubmission.csv", pd.DataFrame({"id": ids, "label": "cat"}))
    return Shape("cifar-10", pd.DataFrame({"id": ids, "label": [CIFAR[d] for d in vy]}), str)


def state_farm(root: Path, n_train=30, n_test=5) -> Shape:
    """driver_imgs_list.csv subject,classname,img; train/c0..c3/img_k.jpg; test/img_t.jpg; sample img,c0..c3."""
    tx, ty, vx, vy = _split([0, 1, 2, 3], n_train, n_test)
    rows = []
    for i, (image, digit) in enumerate(zip(tx, ty, strict=True)):
        _write(root / "train" / f"c{digit}" / f"img_{i}.jpg", image)
        rows.append((f"p{(i // 4) % 6:03d}", f"c{digit}", f"img_{i}.jpg"))
    _csv(root / "driver_imgs_list.csv", pd.DataFrame(rows, columns=["subject", "classname", "img"]))
    ids = [f"img_{1000 + i}.jpg" for i in range(len(vx))]
    for name, image in zip(ids, vx, strict=True):
        _write(root / "test" / name, image)
    _csv(root / "sample_submission.csv", pd.DataFrame({"img": ids, **{f"c{d}": 0.25 for d in range(4)}}))
    return Shape(
        "state-farm-distracted-driver-detection", pd.DataFrame({"id": ids, "label": [f"c{d}" for d in vy]}), float
    )


PATHOLOGY = ["healthy", "multiple_diseases", "rust", "scab"]


def plant_pathology(root: Path, n_train=30, n_test=5) -> Shape:
    """train.csv image_id + one-hot columns; images/Train_k.jpg and images/Test_k.jpg; test.csv image_id."""
    tx, ty, vx, vy = _split([0, 1, 2, 3], n_train, n_test)
    for i, image in enumerate(tx):
        _write(root / "images" / f"Train_{i}.jpg", image)
    for i, image in enumerate(vx):
        _write(root / "images" / f"Test_{i}.jpg", image)
    onehot = {name: (ty == d).astype(int) for d, name in enumerate(PATHOLOGY)}
    _csv(root / "train.csv", pd.DataFrame({"image_id": [f"Train_{i}" for i in range(len(tx))], **onehot}))
    ids = [f"Test_{i}" for i in range(len(vx))]
    _csv(root / "test.csv", pd.DataFrame({"image_id": ids}))
    _csv(root / "sample_submission.csv", pd.DataFrame({"image_id": ids, **{c: 0.25 for c in PATHOLOGY}}))
    return Shape("plant-pathology-2020-fgvc7", pd.DataFrame({"id": ids, "label": [PATHOLOGY[d] for d in vy]}), float)


def aptos(root: Path, n_train=30, n_test=5) -> Shape:
    """train.csv id_code,diagnosis (0..4); train_images/, test_images/; test.csv id_code; sample id_code,diagnosis."""
    tx, ty, vx, vy = _split([0, 1, 2, 3, 4], n_train, n_test)
    codes = [f"{i:012x}" for i in range(len(tx) + len(vx))]
    for code, image in zip(codes[: len(tx)], tx, strict=True):
        _write(root / "train_images" / f"{code}.png", image)
    for code, image in zip(codes[len(tx) :], vx, strict=True):
        _write(root / "test_images" / f"{code}.png", image)
    _csv(root / "train.csv", pd.DataFrame({"id_code": codes[: len(tx)], "diagnosis": ty}))
    ids = codes[len(tx) :]
    _csv(root / "test.csv", pd.DataFrame({"id_code": ids}))
    _csv(root / "sample_submission.csv", pd.DataFrame({"id_code": ids, "diagnosis": 0}))
    return Shape("aptos2019-blindness-detection", pd.DataFrame({"id": ids, "label": vy}), int)


def other_files(root: Path, n_train=30, n_test=6, suffix=".tif") -> Shape:
    """train.csv id,label with TIFF (histopathologic-cancer-detection), 16-bit PNG or DICOM images."""
    tx, ty, vx, vy = _split([0, 1], n_train, n_test)
    deep = suffix == ".png"
    for i, image in enumerate(tx):
        _write(root / "train" / f"t{i}{suffix}", image.astype(np.uint16) * 257 if deep else image)
    for i, image in enumerate(vx):
        _write(root / "test" / f"v{i}{suffix}", image.astype(np.uint16) * 257 if deep else image)
    _csv(root / "train_labels.csv", pd.DataFrame({"id": [f"t{i}" for i in range(len(tx))], "label": ty}))
    ids = [f"v{i}" for i in range(len(vx))]
    _csv(root / "sample_submission.csv", pd.DataFrame({"id": ids, "label": 0}))
    return Shape(f"images-{suffix.strip('.')}", pd.DataFrame({"id": ids, "label": vy}), int)


# ----------------------------------------------------------------------------- the task shapes (test_tasks too)

TAGS = {  # digit -> its tags: every digit has two to four, and the tags recombine
    d: sorted(
        ["even" if d % 2 == 0 else "odd", "small" if d < 5 else "large"]
        + (["round"] if d in (0, 6, 8, 9) else [])
        + (["prime"] if d in (2, 3, 5, 7) else [])
    )
    for d in range(10)
}


def digit_images(n_train: int, n_test: int, seed: int = 0):
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[: n_train + n_test]
    images = (digits.images[order] * 255 / 16).astype(np.uint8)
    return images[:n_train], digits.target[order[:n_train]], images[n_train:], digits.target[order[n_train:]]


def write_images(folder: Path, names: list[str], images: np.ndarray, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, images, strict=True):
        file = folder / (name if name.endswith(suffix) else f"{name}{suffix}")
        cv2.imwrite(str(file), cv2.resize(image, (16, 16), interpolation=cv2.INTER_NEAREST))


def write_planet(root: Path, n_train: int = 320, n_test: int = 80) -> pd.DataFrame:
    """train_v2.csv (image_name,tags), train-jpg/, test-jpg/, sample_submission_v2.csv; returns the test truth."""
    train_x, train_y, test_x, test_y = digit_images(n_train, n_test)
    train_ids, test_ids = [f"train_{i}" for i in range(n_train)], [f"test_{i}" for i in range(n_test)]
    write_images(root / "train-jpg", train_ids, train_x)
    write_images(root / "test-jpg", test_ids, test_x)
    tags = [" ".join(TAGS[d]) for d in train_y]
    pd.DataFrame({"image_name": train_ids, "tags": tags}).to_csv(root / "train_v2.csv", index=False)
    pd.DataFrame({"image_name": test_ids, "tags": "even small"}).to_csv(root / "sample_submission_v2.csv", index=False)
    return pd.DataFrame({"image_name": test_ids, "tags": [" ".join(TAGS[d]) for d in test_y]})


def write_aptos(root: Path, n_train: int = 320, n_test: int = 80) -> pd.DataFrame:
    """train.csv (id_code,diagnosis 0..4), train_images/, test_images/, sample_submission.csv."""
    train_x, train_y, test_x, test_y = digit_images(n_train, n_test, seed=1)
    train_ids, test_ids = [f"a{i:04x}" for i in range(n_train)], [f"b{i:04x}" for i in range(n_test)]
    write_images(root / "train_images", train_ids, train_x)
    write_images(root / "test_images", test_ids, test_x)
    pd.DataFrame({"id_code": train_ids, "diagnosis": train_y // 2}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id_code": test_ids, "diagnosis": 0}).to_csv(root / "sample_submission.csv", index=False)
    return pd.DataFrame({"id_code": test_ids, "diagnosis": test_y // 2})


def write_humpback(root: Path, n_train: int = 320, n_test: int = 80) -> pd.DataFrame:
    """train.csv (Image,Id), train/, test/, sample_submission.csv with five labels a row."""
    train_x, train_y, test_x, test_y = digit_images(n_train, n_test, seed=2)
    train_ids, test_ids = [f"{i:05d}.jpg" for i in range(n_train)], [f"{i:05d}t.jpg" for i in range(n_test)]
    write_images(root / "train", train_ids, train_x, ".jpg")  # ids name their files, extension included
    write_images(root / "test", test_ids, test_x, ".jpg")
    pd.DataFrame({"Image": train_ids, "Id": [f"w_{d}" for d in train_y]}).to_csv(root / "train.csv", index=False)
    sample = "new_whale w_1 w_2 w_3 w_4"
    pd.DataFrame({"Image": test_ids, "Id": sample}).to_csv(root / "sample_submission.csv", index=False)
    return pd.DataFrame({"Image": test_ids, "Id": [f"w_{d}" for d in test_y]})


def planet(root: Path) -> Shape:
    """planet-understanding-the-amazon-from-space: train_v2.csv image_name,tags (space-separated); sample tags."""
    truth = write_planet(root, n_train=192, n_test=16)
    return Shape("planet-understanding-the-amazon-from-space", truth.set_axis(["id", "label"], axis=1), str)


def humpback(root: Path) -> Shape:
    """humpback-whale-identification: train.csv Image,Id; sample Image,Id with five labels a row, best first."""
    truth = write_humpback(root, n_train=80, n_test=8)
    return Shape("humpback-whale-identification", truth.set_axis(["id", "label"], axis=1), str)


SHAPES = {
    "digit-recognizer": digit_recognizer,
    "Kannada-MNIST": kannada_mnist,
    "dogs-vs-cats-redux-kernels-edition": dogs_vs_cats,
    "aerial-cactus-identification": aerial_cactus,
    "plant-seedlings-classification": plant_seedlings,
    "cifar-10": cifar_10,
    "state-farm-distracted-driver-detection": state_farm,
    "plant-pathology-2020-fgvc7": plant_pathology,
    "aptos2019-blindness-detection": aptos,
    "planet-understanding-the-amazon-from-space": planet,
    "humpback-whale-identification": humpback,
    "images-tif": lambda root: other_files(root, suffix=".tif"),
    "images-png": lambda root: other_files(root, suffix=".png"),
    "images-dcm": lambda root: other_files(root, suffix=".dcm"),
}


def archive(folder: Path) -> bytes:
    """The folder as Kaggle serves it: one zip (train/ and test/ folders as inner zips, like dogs-vs-cats)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.writestr(path.relative_to(folder).as_posix(), path.read_bytes())
    return buffer.getvalue()


# ----------------------------------------------------------------------------- a replica through the commands

# A tiny model and run: 2 folds, 6 epochs, 16 px; every shape goes through the same commands. (At 2 epochs and
# lr 0.01 the OOF accuracy of the same 4-digit replica swung from 0.40 to 0.97 with train.seed; here 0.98 to 1.)
TINY = [
    "model.name=resnet18_cifar",
    "model.kwargs={widths: [16, 32, 64, 128]}",
    "train.epochs=6",
    "aug.phase1=none",
    "aug.phase2=none",
    "train.batch_size=8",
    "train.lr=0.003",
    "folds.k=2",
    "predict.tta=[identity, scale]",  # two views averaged (per tag, multi-label); a mirrored digit is another digit
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


def held_back_scores(submission: pd.DataFrame, shape: Shape, tree: dict, classes: list, cv: dict) -> tuple:
    """The run's own metric (cv.json's, with its parameters) on the held-back truth: of the submission, and of a
    uniform guess (every class equally likely), which a run that learned anything beats."""
    names = [str(c) for c in classes]
    truth = shape.truth["label"].astype(str)
    if cv["task"] == "multilabel":
        targets = np.array([[n in cell.split() for n in names] for cell in truth], dtype=int)
    else:
        targets = np.array([names.index(t) for t in truth])
    params = cv.get("metric_params", {})
    uniform = np.full((len(truth), len(names)), 1 / len(names))
    submitted = submitted_scores(submission, tree, classes)
    return score(cv["metric"], targets, submitted, **params), score(cv["metric"], targets, uniform, **params)


def check_cells(submission: pd.DataFrame, sample: pd.DataFrame, shape: Shape, fmt: str, classes) -> None:
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


def comp_command(*args: str) -> str:
    """`comp ARGS` in this process, from the working directory; its output, or AssertionError when it fails."""
    from typer.testing import CliRunner

    from comp.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@dataclass
class Run:
    """One replica taken through the commands: the written config, what `comp download` printed, cv.json,
    the classes, and the submission's score on the held-back truth (cv.json's metric)."""

    tree: dict
    printed: str
    cv: dict
    classes: list
    held_back: float
    uniform: float  # a uniform guess's held-back score

    def row(self, slug: str) -> list[str]:
        """shape | layout | task | metric | submission format | image size | folds.group_column | CV | held-back
        | a uniform guess's held-back score"""
        params = ", ".join(f"{k}={v:g}" for k, v in (self.cv.get("metric_params") or {}).items())
        metric = f"{self.cv['metric']}" + (f" ({params})" if params else "")
        data, fmt = self.tree["data"], self.tree["submission"]["format"]
        group = self.tree.get("folds", {}).get("group_column") or "-"
        scores = [f"{self.cv['oof']:.4f}", f"{self.held_back:.4f}", f"{self.uniform:.4f}"]
        return [slug, data["layout"], self.cv["task"], metric, fmt, str(data["image_size"]), group, *scores]


def check_groups(project: Path, tree: dict, cv: dict) -> None:
    """With the suggested folds.group_column, each group's rows all sit in one fold of the run's fold file."""
    column = tree.get("folds", {}).get("group_column")
    if column is None:
        return
    data = tree["data"]
    table = pd.read_csv(project / data["root"] / data["train_csv"], dtype=str)
    folds = pd.read_csv(project / cv["fold_file"], dtype=str).set_index("id")["fold"]
    per_group = table.assign(fold=table[data["id_column"]].map(folds)).groupby(column)["fold"].nunique()
    assert per_group.max() == 1 and len(per_group) > 1, per_group


def from_download_to_submission(slug: str, source: Path, project: Path, fake, download) -> Run:
    """The replica `slug` written to `source` and served by the fake Kaggle; then, from the project folder (the
    working directory), `download(slug)` and, on the config it wrote, unchanged but for the TINY run: folds,
    train --fold all, predict --tta, ensemble, validate. The submission is checked cell by cell."""
    shape = SHAPES[slug](source)
    fake.archives[slug] = archive(source)
    code, printed = download(slug)
    config = f"configs/{slug}.yaml"
    assert code == 0 and f"Wrote {config}" in printed, printed
    tree = yaml.safe_load((project / config).read_text())
    overrides = [arg for key in TINY for arg in ("--set", key)]
    for command in (["folds"], ["train", "--fold", "all"], ["predict", "--tta"], ["ensemble"]):
        comp_command(*command, "-c", config, *overrides)
    path = project / "submissions" / f"{slug}.csv"
    comp_command("validate", str(path), "-c", config)
    sample = pd.read_csv(project / tree["data"]["root"] / tree["data"]["sample_submission"], dtype=str)
    submission = pd.read_csv(path)  # values read back with their types, as Kaggle reads them
    classes = json.loads((project / "runs" / slug / "classes.json").read_text())
    check_cells(submission, sample, shape, tree["submission"]["format"], classes)
    cv = json.loads((project / "runs" / slug / "cv.json").read_text())
    check_groups(project, tree, cv)
    return Run(tree, printed, cv, classes, *held_back_scores(submission, shape, tree, classes, cv))
