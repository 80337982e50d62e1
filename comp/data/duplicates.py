"""Duplicate images: exact copies (same file bytes) and near copies (a perceptual hash within a distance).

The perceptual hash is the DCT hash (pHash): the image in grey, shrunk to 32x32, its 2-D DCT, and
one bit per coefficient of the lowest 8x8 frequencies, set when it is above their median. Resizing,
re-encoding (JPEG) and small colour changes move few of the 64 bits; different images differ in
about half. Pairs are looked for within the training set and between training and test images (a
test image that copies a training one leaks its label). Duplicates within the training set are
grouped (connected pairs), so that `folds.group_duplicates` can keep each group in one fold.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
import pandas as pd

from comp.data.competition import Competition, read_image
from comp.errors import CompError
from comp.io import sha256_file

HASH_SIDE = 32  # the image is shrunk to this before the DCT
LOW_FREQUENCIES = 8  # an 8x8 block of coefficients: a 64-bit hash
CHUNK = 256  # rows of the distance matrix at a time: 256 x 70,000 images is 140 MB of XORs
PAIR_COLUMNS = ["kind", "where", "distance", "id_a", "id_b", "label_a", "label_b", "conflict", "fold_a", "fold_b"]


def perceptual_hash(path: str) -> np.uint64:
    grey = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) would skew the median
    return np.packbits(bits).view(">u8")[0].astype(np.uint64)


def image_table(competition: Competition) -> pd.DataFrame:
    """Every training and test image: set (train | test), id, label (test: None), path."""
    if competition.train.empty and competition.test.empty:
        raise CompError(f"{competition.root} has no training or test images to compare.")
    train = competition.train.assign(set="train")[["set", "id", "label", "path"]]
    test = competition.test.assign(set="test", label=None)[["set", "id", "label", "path"]]
    return pd.concat([train, test], ignore_index=True)


def hash_images(images: pd.DataFrame) -> pd.DataFrame:
    """The image table with each file's sha256 and perceptual hash."""
    return images.assign(
        sha256=[sha256_file(p) for p in images["path"]],
        phash=np.array([perceptual_hash(p) for p in images["path"]], dtype=np.uint64),
    )


def _near_pairs(hashes: np.ndarray, is_test: np.ndarray, max_distance: int) -> Iterable[tuple[int, int, int]]:
    """(i, j, Hamming distance) for i < j within max_distance, test-test pairs left out."""
    for start in range(0, len(hashes), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(hashes)))
        distance = np.bitwise_count(hashes[rows, None] ^ hashes[None, :])
        close = (distance <= max_distance) & (np.arange(len(hashes))[None, :] > rows[:, None])
        close &= ~(is_test[rows, None] & is_test[None, :])
        for r, j in zip(*np.nonzero(close), strict=True):
            yield int(rows[r]), int(j), int(distance[r, j])


def find_pairs(hashed: pd.DataFrame, max_distance: int, folds: pd.Series | None = None) -> pd.DataFrame:
    """Duplicate pairs (PAIR_COLUMNS), closest first: kind exact | near, where train | train-test.

    conflict: both are training images with different labels. fold_a/fold_b: each training image's
    fold in `folds` (indexed by id), when given: a pair split over two folds leaks between them."""
    is_test = (hashed["set"] == "test").to_numpy()
    sha = hashed["sha256"].to_numpy()
    rows = []
    for i, j, distance in _near_pairs(hashed["phash"].to_numpy(np.uint64), is_test, max_distance):
        a, b = (j, i) if is_test[i] else (i, j)  # a training image comes first
        label_a, label_b = hashed["label"].iat[a], hashed["label"].iat[b]
        rows.append(
            {
                "kind": "exact" if sha[i] == sha[j] else "near",
                "where": "train-test" if is_test[i] or is_test[j] else "train",
                "distance": distance,
                "id_a": hashed["id"].iat[a],
                "id_b": hashed["id"].iat[b],
                "label_a": label_a,
                "label_b": label_b,
                "conflict": not is_test[b] and str(label_a) != str(label_b),
            }
        )
    # dtype object: labels keep their own type (a test image's None must not turn integer labels into floats)
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS[:-2], dtype=object).astype({"distance": int, "conflict": bool})
    if folds is not None:
        pairs["fold_a"] = pairs["id_a"].map(folds).astype("Int64")
        pairs["fold_b"] = pairs["id_b"].map(folds).astype("Int64")
    order = pairs.assign(exact=pairs["kind"] != "exact").sort_values(["exact", "distance", "id_a", "id_b"])
    return order.drop(columns="exact").reset_index(drop=True)


def connected_groups(ids: pd.Series, edges: Iterable[tuple[str, str]], name: str = "duplicate_group") -> pd.Series:
    """Each id's group under the edges (the group's first id in `ids` order; alone: its own id)."""
    position = {image_id: k for k, image_id in enumerate(ids)}
    parent = list(range(len(ids)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in edges:
        low, high = sorted((root(position[a]), root(position[b])))
        parent[high] = low
    firsts = list(ids)
    return pd.Series([firsts[root(k)] for k in range(len(ids))], index=ids.index, name=name)


def training_duplicate_groups(competition: Competition, max_distance: int) -> pd.Series:
    """The duplicate groups of the training images alone (for the fold assignment)."""
    hashed = hash_images(competition.train.assign(set="train")[["set", "id", "label", "path"]])
    pairs = find_pairs(hashed, max_distance)
    return connected_groups(competition.train["id"], pairs[["id_a", "id_b"]].itertuples(index=False))
