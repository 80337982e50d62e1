"""data.decode: device — the images decoded once (data.cache on or disk) go through torchvision's decoder on the
training device, JPEGs in batches. Here the device is the CPU: the same path as on CUDA but for the decoder
(tests/test_cuda.py compares nvJPEG's pixels)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import write_csv_competition

from comp.augment import fit_size
from comp.config import load_config
from comp.data import dataset, images
from comp.data.competition import load_competition
from comp.data.dataset import decoded_in_memory
from comp.data.decoded import ROWS, open_decoded
from comp.data.folds import write_folds
from comp.data.images import read_image, read_images
from comp.errors import CompError
from comp.training.loaders import create_loaders

CPU = torch.device("cpu")
# torchvision's decoder on the CPU against OpenCV's: identical on every image here (largest difference 0 levels);
# 1 leaves room for another build's rounding. Identical pixels cannot tell a silent fallback to OpenCV: the
# `opened` fixture does.
CPU_MAX_LEVELS = 1
DEPRECATED = "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(DEPRECATED)  # torchvision 0.29 deprecates decode_jpeg for TorchCodec


def smooth_image(seed: int, height: int, width: int, grey: bool = False) -> np.ndarray:
    """Coarse noise upscaled: gradients within JPEG's 8x8 blocks, as in a photo, not white noise."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6) if grey else (6, 6, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def write_jpegs(folder, n: int = 7) -> list[str]:
    """n JPEGs at quality 90, each of its own size, every third grey."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = str(folder / f"{i}.jpg")
        cv2.imwrite(path, smooth_image(i, 40 + 6 * i, 56 - 2 * i, grey=i % 3 == 2), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def max_difference(image: np.ndarray, reference: np.ndarray) -> int:
    assert image.shape == reference.shape and image.dtype == reference.dtype == np.uint8
    return int(np.abs(image.astype(np.int16) - reference).max())


@pytest.fixture
def mixed(tmp_path) -> list[str]:
    """Seven JPEGs (two grey) and, fourth, a PNG; every image of its own size."""
    paths = write_jpegs(tmp_path / "images")
    png = str(tmp_path / "images" / "p.png")
    cv2.imwrite(png, smooth_image(99, 30, 20))
    return [*paths[:3], png, *paths[3:]]


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The files read_images hands to OpenCV's read_image, in order."""
    paths: list[str] = []
    monkeypatch.setattr(images, "read_image", lambda path: paths.append(path) or read_image(path))
    return paths


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMP_CACHE", str(tmp_path / "cache"))


def test_jpegs_decode_in_one_batch_like_read_image_and_the_png_through_read_image(mixed, opened):
    batch = read_images(mixed, CPU)
    assert opened == [mixed[3]]  # the JPEGs went through torchvision's decoder
    assert all(
        max_difference(image, read_image(path)) <= CPU_MAX_LEVELS for image, path in zip(batch, mixed, strict=True)
    )
    grey = batch[2]
    assert grey.shape[2] == 3 and np.array_equal(grey[..., 0], grey[..., 2])  # a grey JPEG as RGB, as read_image


def test_a_batch_the_decoder_rejects_is_read_file_by_file(mixed, opened, tmp_path):
    disguised = tmp_path / "images" / "png_inside.jpg"  # torchvision refuses a PNG named .jpg, OpenCV reads it
    cv2.imwrite(str(tmp_path / "p.png"), smooth_image(5, 24, 24))
    (tmp_path / "p.png").rename(disguised)
    batch = [mixed[0], str(disguised), mixed[1]]
    decoded_batch = read_images(batch, CPU)
    assert opened == batch
    assert all(np.array_equal(image, read_image(path)) for image, path in zip(decoded_batch, batch, strict=True))


def test_a_corrupt_jpeg_raises_the_error_read_image_raises(mixed, tmp_path):
    corrupt = str(tmp_path / "images" / "corrupt.jpg")
    with open(corrupt, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 a JPEG's first bytes, then none of the rest" * 4)
    with pytest.raises(CompError) as expected:
        read_image(corrupt)
    with pytest.raises(CompError) as raised:
        read_images([*mixed, corrupt], CPU)
    assert str(raised.value) == str(expected.value) and corrupt in str(raised.value)


def test_the_memory_cache_decodes_in_batches_in_order(mixed, monkeypatch):
    monkeypatch.setattr(images, "DEVICE_DECODE_BATCH", 3)  # 8 files: batches of 3, 3 and 2
    in_memory = decoded_in_memory(mixed, CPU)
    assert list(in_memory) == mixed
    for path, image in in_memory.items():
        assert max_difference(image, read_image(path)) <= CPU_MAX_LEVELS  # every size differs: the order holds


def test_the_memory_cache_keeps_images_for_their_own_decoder_only(mixed, monkeypatch):
    calls = []
    decode_all = dataset.decode_all
    monkeypatch.setattr(
        dataset, "decode_all", lambda paths, device: calls.append((len(paths), device)) or decode_all(paths, device)
    )
    decoded_in_memory(mixed)
    decoded_in_memory(mixed, CPU)
    decoded_in_memory(mixed, CPU)
    decoded_in_memory(mixed)
    assert calls == [(8, None), (8, CPU), (0, CPU), (8, None)]


def test_the_disk_cache_keys_its_array_by_the_decoder(mixed, cache, monkeypatch, tmp_path):
    monkeypatch.setattr(images, "DEVICE_DECODE_BATCH", 3)
    opencv = open_decoded(mixed, 16)
    on_device = open_decoded(mixed, 16, CPU)
    assert on_device.decoded == 8 and on_device.file != opencv.file  # no row taken from OpenCV's array
    assert json.loads((on_device.file.parent / ROWS).read_text())["decoder"] == "torchvision-cpu"
    for path in mixed:
        expected = fit_size(read_images([path], CPU)[0], 16)
        assert np.array_equal(on_device.array[on_device.rows[os.path.abspath(path)]], expected)

    again = open_decoded(mixed, 16, CPU)
    assert again.decoded == 0 and again.file == on_device.file
    assert open_decoded(mixed, 16).file == opencv.file  # OpenCV's array stays OpenCV's
    new = str(tmp_path / "images" / "new.jpg")
    cv2.imwrite(new, smooth_image(42, 32, 32))
    assert open_decoded([*mixed, new], 16, CPU).decoded == 1  # the rest copied from the same decoder's array


def test_training_decodes_on_its_own_device(project, tiny_config, cache):
    write_csv_competition(project / "data/csvs")
    config = tiny_config("data.cache=disk", "data.decode=device", "train.device=cpu", competition="csvs")
    competition = load_competition(config.data)
    _, folds, _ = write_folds(config, competition)
    train, _ = create_loaders(config, competition, folds, 0)
    array = train.dataset.images.decoded
    assert json.loads((array.file.parent / ROWS).read_text())["decoder"] == "torchvision-cpu"


def test_data_decode_takes_cpu_or_device(project):
    assert load_config("configs/default.yaml").data.decode == "cpu"
    with pytest.raises(CompError, match=r"data\.decode"):
        load_config("configs/default.yaml", ["data.decode=gpu"])
