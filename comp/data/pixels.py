"""Pixel tables (digit-recognizer, Kannada-MNIST): one image per CSV row, decoded once into PNG files.

The rows are written as PNGs under <data.root>/.pixels/<table>/<row>.png (row = the CSV row, from 1)
the first time the table is read, and again only when the table's size or modification time
changes (.pixels/<table>/source.json). Where data.root cannot be written (a Kaggle notebook's
/kaggle/input is read-only) they go to <cache_home()>/pixels/<hash of the table's path>/<table>/
instead. Files, not memory: everything downstream (the dataset and
its in-memory cache, prediction streaming, the report's image grids, the parallel fold processes)
reads images by path, so decoded rows fit every path unchanged, and the decoding happens once for
all processes instead of once per process. 70,000 MNIST rows take about 60 MB of PNGs.

Columns: every column but the id and label columns is a pixel, in row-major order; their number
is a square (grey) or three times a square (RGB, channels last: r, g, b of each pixel in turn).
Values run 0..255, or 0..1 when no value exceeds 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from comp.config import DataConfig
from comp.data.decoded import cache_home
from comp.data.layouts import (
    FIRST_LINE,
    check_no_empty_label,
    check_same_test_ids,
    label_rows,
    listed_id_column,
    read_csv_text,
    require_column,
)
from comp.errors import CompError

CACHE = ".pixels"


def pixel_shape(n_columns: int, path: Path) -> tuple[int, int]:
    """(side, channels) of a row of n pixel values: side^2 grey or 3 x side^2 RGB."""
    for channels in (1, 3):
        side = math.isqrt(n_columns // channels)
        if n_columns % channels == 0 and side * side * channels == n_columns and side > 0:
            return side, channels
    raise CompError(
        f"{path}, line 1: {n_columns} pixel columns are not a square image (side x side grey, "
        f"or 3 x side x side colour): {math.isqrt(n_columns)}^2 = {math.isqrt(n_columns) ** 2}.",
        hint="Set data.id_column and data.label_column so that only pixel columns remain, or drop the extra columns.",
    )


def pixel_columns(table: pd.DataFrame, exclude: list[str | None]) -> list[str]:
    return [c for c in table.columns if c not in exclude]


def decode_rows(table: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    """N x side x side x channels uint8 images from the pixel columns."""
    side, channels = pixel_shape(len(columns), path)
    try:
        values = table[columns].to_numpy(dtype=np.float32)
    except ValueError:
        numeric = table[columns].apply(pd.to_numeric, errors="coerce")
        row, col = next(zip(*numeric.isna().to_numpy().nonzero(), strict=True))
        raise CompError(
            f"{path}, line {row + FIRST_LINE}: pixel column '{columns[col]}' holds "
            f"{table[columns].iat[row, col]!r}, not a number.",
            hint="Pixel tables hold numbers only, besides data.id_column and data.label_column.",
        ) from None
    if values.size and values.max() <= 1.0:
        values = values * 255
    images = np.clip(np.round(values), 0, 255).astype(np.uint8)
    return images.reshape(len(table), side, side, channels)


def _stamp(path: Path, n_rows: int) -> dict:
    stat = path.stat()
    return {"source": path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": n_rows}


def _cache_parents(root: Path, path: Path) -> list[Path]:
    """Where a table's PNG folder may live, first choice first: beside the competition, else (a read-only
    data.root) in comp's cache, one folder per table path so that two competitions never share one."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return [root / CACHE, cache_home() / "pixels" / key]


def _is_current(folder: Path, stamp: dict) -> bool:
    record = folder / "source.json"
    return record.is_file() and json.loads(record.read_text()) == stamp


def _staging_folder(parents: list[Path], path: Path) -> Path:
    """A new folder in the first parent that can be written."""
    for parent in parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=parent))
        except OSError:
            continue  # read-only (Kaggle's /kaggle/input): the next place
    raise CompError(
        f"Nowhere to write the decoded rows of {path}: neither {parents[0]} nor {parents[-1]} can be written.",
        hint="Set COMP_CACHE to a writable folder.",
    )


def _paths(folder: Path, n_rows: int) -> list[str]:
    return [str(folder / f"{row}.png") for row in range(1, n_rows + 1)]


def cached_images(root: Path, path: Path, table: pd.DataFrame, columns: list[str]) -> list[str]:
    """The PNG of each row of the pixel table at `path`, written once (see the module's notes)."""
    stamp = _stamp(path, len(table))
    parents = _cache_parents(root, path)
    for parent in parents:
        if _is_current(parent / path.stem, stamp):
            return _paths(parent / path.stem, len(table))
    images = decode_rows(table, columns, path)
    staging = _staging_folder(parents, path)
    folder = staging.parent / path.stem
    try:
        for row, image in enumerate(images, start=1):
            cv2.imwrite(str(staging / f"{row}.png"), image if image.shape[2] == 1 else image[..., ::-1])
        (staging / "source.json").write_text(json.dumps(stamp))
        _swap_in(staging, folder, folder / "source.json", stamp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _paths(folder, len(table))


def _swap_in(staging: Path, folder: Path, record: Path, stamp: dict) -> None:
    """Put the decoded rows in place, unless another process (a parallel fold) has just done so."""
    if record.is_file() and json.loads(record.read_text()) == stamp:
        return
    if folder.exists():
        shutil.rmtree(folder)
    try:
        staging.rename(folder)
    except OSError:
        if not (record.is_file() and json.loads(record.read_text()) == stamp):
            raise


def train_from_pixels(cfg: DataConfig, root: Path) -> pd.DataFrame:
    """data.train_csv: a label column, pixel columns, and an id column (data.id_column; null: row numbers)."""
    path = root / cfg.train_csv
    table = read_csv_text(path)
    require_column(table, cfg.label_column, path, "data.label_column")
    if cfg.id_column is not None:
        require_column(table, cfg.id_column, path, "data.id_column")
        ids = list(table[cfg.id_column])
    else:
        ids = [str(row) for row in range(1, len(table) + 1)]
    labels = list(table[cfg.label_column])
    check_no_empty_label(labels, ids, path, f"column '{cfg.label_column}'")
    columns = pixel_columns(table, [cfg.id_column, cfg.label_column])
    return label_rows(ids, labels, cached_images(root, path, table, columns))


def test_rows_from_pixels(cfg: DataConfig, root: Path, sample: pd.DataFrame) -> pd.DataFrame:
    """The sample's ids with the rows of data.test_csv: matched by data.test_id_column, or, when that is
    null, by position (digit-recognizer: ImageId 1..N is test.csv's row order)."""
    if not cfg.test_csv:
        raise CompError("The pixels layout reads the test images from a pixel table: set data.test_csv.")
    path, sample_path = root / cfg.test_csv, root / cfg.sample_submission
    table = read_csv_text(path)
    ids = list(sample.iloc[:, 0].astype(str))
    if cfg.test_id_column is not None:
        column = listed_id_column(cfg, table, path)
        listed = list(table[column])
        check_same_test_ids(ids, sample_path, listed, path)
        paths = cached_images(root, path, table, pixel_columns(table, [column]))
        by_id = dict(zip(listed, paths, strict=True))
        return pd.DataFrame({"id": ids, "path": [by_id[i] for i in ids]})
    if len(table) != len(ids):
        raise CompError(
            f"{sample_path} and {path} disagree: {len(ids)} ids vs {len(table)} pixel rows "
            f"(line {FIRST_LINE + min(len(ids), len(table))} of the longer has no partner); without "
            "data.test_id_column the sample's n-th id is the table's n-th row.",
            hint="Set data.test_id_column to the test table's id column, or download the competition again.",
        )
    paths = cached_images(root, path, table, pixel_columns(table, []))
    return pd.DataFrame({"id": ids, "path": paths})
