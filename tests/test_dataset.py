"""The training dataset's in-memory cache: same images as from disk, and when `auto` turns it on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from comp.config import DataConfig, load_config
from comp.data import dataset
from comp.data.competition import read_image
from comp.data.dataset import ImageDataset, available_memory, cache_mode, decoded_in_memory, loader_options


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (12 + i, 10, 3), dtype=np.uint8))  # sizes differ
        paths.append(str(path))
    return paths


def test_cached_dataset_gives_the_same_items_in_the_same_order_as_reading_from_disk(pngs):
    cached = ImageDataset(pngs, list(range(7)), 8, decoded_in_memory(pngs))
    from_disk = ImageDataset(pngs, list(range(7)), 8)
    assert [image.shape for image in cached.images] == [read_image(p).shape for p in pngs]
    for i in range(len(pngs)):
        (a, label_a), (b, label_b) = cached[i], from_disk[i]
        assert a.shape == (8, 8, 3) and torch.equal(a, b) and label_a == label_b == i


def test_cache_on_and_off_are_obeyed_whatever_the_size():
    assert cache_mode(DataConfig(cache="on"), 10**9) == "memory"
    assert cache_mode(DataConfig(cache="off"), 1) == "off"


def test_auto_caches_what_fits_in_a_quarter_of_the_available_memory(pngs, monkeypatch):
    per_image = read_image(pngs[0]).nbytes  # 12 x 10 x 3
    monkeypatch.setattr(dataset, "available_memory", lambda: 4 * 100 * per_image)
    auto = DataConfig(cache="auto", image_size=8)
    assert cache_mode(auto, 99, pngs[0]) == "memory"
    assert cache_mode(auto, 101, pngs[0]) != "memory"


def test_auto_sizes_decoded_images_by_a_sample_not_by_image_size(tmp_path, monkeypatch):
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), np.zeros((512, 512, 3), np.uint8))
    monkeypatch.setattr(dataset, "available_memory", lambda: 4 * 1000 * 3 * 64 * 64)
    auto = DataConfig(cache="auto", image_size=32)
    assert cache_mode(auto, 999) == "memory"  # estimated at 64 x 64 pixels
    assert cache_mode(auto, 999, large) != "memory"  # 512 x 512 pixels each


def test_available_memory_is_known_here():
    assert available_memory() > 0


@pytest.mark.parametrize("written, read", [("off", "off"), ("on", "on"), ("auto", "auto"), ("disk", "disk")])
def test_yaml_on_and_off_read_as_the_cache_setting(project, written, read):
    config = load_config(overrides=[f"data.cache={written}"])  # YAML reads a bare on/off as a boolean
    assert config.data.cache == read


class OpenCVThreads(Dataset):
    """Each item: the number of threads OpenCV would use where the item is made."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return cv2.getNumThreads()


def test_loader_workers_run_opencv_on_one_thread_each():
    before = cv2.getNumThreads()
    cv2.setNumThreads(4)  # a many-core machine's pool, which forked workers would inherit
    try:
        options = loader_options(load_config(overrides=["train.num_workers=2"]).train, torch.device("cpu"))
        assert list(DataLoader(OpenCVThreads(), batch_size=None, **options)) == [1, 1]
        assert cv2.getNumThreads() == 4  # the main process keeps its pool: with no workers it augments there
    finally:
        cv2.setNumThreads(before)
