"""data.cache: disk — images decoded once into a shared array on disk, noticed when they change."""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import write_csv_competition

from comp.augment import fit_size
from comp.config import DataConfig
from comp.data import dataset, decoded, images
from comp.data.competition import load_competition, read_image
from comp.data.dataset import ImageDataset, cache_mode
from comp.data.decoded import open_decoded
from comp.data.folds import write_folds
from comp.training.loaders import create_loaders

HOUR_AGO_NS = time.time_ns() - 3600 * 10**9


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("COMP_CACHE", str(folder))
    return folder


def write_png(path, seed: int, shape=(12, 10, 3), mtime_ns: int = HOUR_AGO_NS) -> str:
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))
    os.utime(path, ns=(mtime_ns, mtime_ns))  # settled long ago: its hash is kept in the index
    return str(path)


@pytest.fixture
def pngs(tmp_path):
    (tmp_path / "images").mkdir()
    return [write_png(tmp_path / "images" / f"{i}.png", i, (12 + i, 10 + 2 * i, 3)) for i in range(7)]  # sizes differ


def test_disk_cache_gives_the_pixels_of_decoding_and_resizing(pngs, cache):
    images = open_decoded(pngs, 8)
    assert images.decoded == 7 and images.file.is_relative_to(cache)
    cached = ImageDataset(pngs[::-1], list(range(7)), 8, decoded=images)  # rows found by path, in any order
    for i, path in enumerate(pngs[::-1]):
        image, label = cached[i]
        assert label == i and np.array_equal(image.numpy(), fit_size(read_image(path), 8))
    assert cached.image(0).flags.writeable  # transforms get an array of their own, not the read-only map


def three_folds(project, tiny_config, cache: str):
    """A csv competition with a 3-fold file, and its config with data.cache=`cache`."""
    write_csv_competition(project / "data/csvs")
    config = tiny_config(f"data.cache={cache}", "folds.k=3", competition="csvs")
    competition = load_competition(config.data)
    _, folds, _ = write_folds(config, competition)
    return config, competition, folds


def test_every_fold_and_a_later_process_open_the_array_decoded_once(project, tiny_config, cache):
    config, competition, folds = three_folds(project, tiny_config, "disk")
    arrays = []
    for fold in range(3):
        train, val = create_loaders(config, competition, folds, fold)
        assert train.dataset.images.decoded is val.dataset.decoded
        arrays.append(val.dataset.decoded)
    assert [a.decoded for a in arrays] == [32, 0, 0]  # 32 training images, decoded by the first fold alone
    assert len({a.file for a in arrays}) == 1
    assert open_decoded(competition.train["path"], 16).decoded == 0  # a later run: nothing kept in this process
    assert len(list((cache / "decoded").glob("*/16px-*"))) == 1


def test_parallel_processes_decode_the_images_once_between_them(pngs, cache):
    results = []
    threads = [threading.Thread(target=lambda: results.append(open_decoded(pngs, 8))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.decoded for r in results) == [0, 7] and results[0].file == results[1].file


def test_unchanged_files_are_not_read_again_to_hash_them(pngs, cache, monkeypatch):
    open_decoded(pngs, 8)
    hashed = []
    monkeypatch.setattr(decoded, "sha256_file", lambda path: hashed.append(path))
    assert open_decoded(pngs, 8).decoded == 0 and hashed == []


def test_a_changed_and_an_added_image_are_noticed_and_only_they_are_decoded(pngs, cache, tmp_path):
    first = open_decoded(pngs, 8)
    write_png(pngs[3], seed=99, shape=(12 + 3, 10 + 6, 3), mtime_ns=HOUR_AGO_NS + 10**9)  # other pixels, same shape
    changed = open_decoded(pngs, 8)
    assert changed.decoded == 1 and changed.file != first.file
    added = [*pngs, write_png(tmp_path / "images" / "new.png", seed=7)]
    grown = open_decoded(added, 8)
    assert grown.decoded == 1
    rows = ImageDataset(added, list(range(8)), 8, decoded=grown)
    for i, path in enumerate(added):
        assert np.array_equal(rows.image(i), fit_size(read_image(path), 8))
    assert not np.array_equal(rows.image(3), first.array[first.rows[os.path.abspath(pngs[3])]])


def test_an_interrupted_build_leaves_no_array_that_is_used_later(pngs, cache, monkeypatch):
    calls = []

    def fail_on_the_fifth(path):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return read_image(path)

    monkeypatch.setattr(images, "read_image", fail_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        open_decoded(pngs, 8)
    assert [p.name for p in (cache / "decoded").glob("*/*") if p.is_dir()] == []  # nor a half-written folder

    monkeypatch.setattr(images, "read_image", read_image)
    built = open_decoded(pngs, 8)
    assert built.decoded == 7
    assert all(np.array_equal(built.array[built.rows[os.path.abspath(p)]], fit_size(read_image(p), 8)) for p in pngs)


def test_a_build_killed_before_its_rename_is_cleared_by_the_next(pngs, cache):
    group = open_decoded(pngs, 8).file.parents[1]
    leftover = group / ".8px-0123.abcd"
    leftover.mkdir()
    open_decoded(pngs[:3], 8)  # another set of images: a build
    assert not leftover.exists()


def test_auto_caches_on_disk_what_does_not_fit_in_memory(pngs, monkeypatch, cache):
    per_image = read_image(pngs[0]).nbytes
    monkeypatch.setattr(dataset, "available_memory", lambda: 4 * 100 * per_image)
    auto = DataConfig(cache="auto", image_size=8)
    assert cache_mode(auto, 99, pngs[0]) == "memory"
    assert cache_mode(auto, 101, pngs[0]) == "disk"
    monkeypatch.setattr(dataset, "fits_on_disk", lambda n_bytes: False)
    assert cache_mode(auto, 101, pngs[0]) == "off"  # as before there was a disk cache
    assert cache_mode(DataConfig(cache="disk"), 1) == "disk"


def test_the_folds_of_one_process_decode_into_memory_once(project, tiny_config, monkeypatch):
    config, competition, folds = three_folds(project, tiny_config, "on")
    decoded = []
    monkeypatch.setattr(images, "read_image", lambda path: decoded.append(path) or read_image(path))
    for fold in range(3):
        create_loaders(config, competition, folds, fold)
    assert sorted(decoded) == sorted(competition.train["path"])  # every image once, for all three folds

    changed = competition.train["path"].iloc[0]
    write_png(changed, seed=99, mtime_ns=HOUR_AGO_NS + 10**9)
    decoded.clear()
    train, val = create_loaders(config, competition, folds, 0)
    assert decoded == [changed]  # a changed image is decoded again, the others kept
    rows = train.dataset.images.images + val.dataset.images
    assert any(np.array_equal(image, read_image(changed)) for image in rows)
