"""Decode once (data.cache: disk): every image decoded and resized to image_size in one uint8 array on disk.

The array, N x S x S x 3 uint8 in a .npy file opened memory-mapped and read-only, is one file in the page
cache that every fold, every `--parallel` process and every later run shares. Its folders:

    <cache_home()>/decoded/<hash of the images' folder>/
        hashes.json             relative path -> [size, mtime_ns, sha256]: unchanged files are not read again
        <S>px-<key>/images.npy  the rows, in the order of the sorted relative paths
        <S>px-<key>/rows.json   image_size, DECODE_VERSION, decoder and [relative path, sha256] of every row

The key hashes everything the pixels depend on: every (relative path, content hash), image_size,
DECODE_VERSION and the decoder (data.decode: OpenCV, or torchvision's on the CPU or CUDA, whose pixels differ
by a level or two). A changed or added image changes the key, and the new array copies the rows of unchanged
images (same content) from the newest earlier array at that size and decoder: only the new contents are
decoded.
Earlier arrays stay on disk (a running process may still read one); delete the folder to reclaim them.

An array is built in a temporary folder and renamed into place once written and synced, under a lock on its
images' folder: parallel processes decode once between them, and an interrupted build leaves no array.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from comp.augment import fit_size
from comp.console import console
from comp.data.images import OPENCV_DECODER, decode_batches, decoder_name, read_images
from comp.device import usable_cpu_count
from comp.errors import CompError
from comp.io import sha256_file, write_json

# Bump when read_image or fit_size change the pixels they give: arrays of an older version are not reused.
DECODE_VERSION = 1
CHANNELS = 3  # read_image gives RGB, whatever the file holds (grey, RGBA, 16-bit, DICOM)
ARRAY, ROWS, HASHES = "images.npy", "rows.json", "hashes.json"
# A file modified this recently may be modified again within the file system's timestamp granularity, with
# the same size and mtime: its hash is not kept (it is read again next time), as git does with racy entries.
RACY_NS = 2 * 10**9


def cache_home() -> Path:
    """comp's cache folder: $COMP_CACHE, else $XDG_CACHE_HOME/comp, else ~/.cache/comp (writable on Kaggle too,
    where the competition's own folder is not)."""
    if os.environ.get("COMP_CACHE"):
        return Path(os.environ["COMP_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "comp"


def decoded_bytes(n_images: int, image_size: int) -> int:
    return n_images * image_size * image_size * CHANNELS


def fits_on_disk(n_bytes: int) -> bool:
    """Whether the cache folder's disk has room for n_bytes more (False where it cannot be created)."""
    try:
        folder = cache_home() / "decoded"
        folder.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(folder).free > n_bytes
    except OSError:
        return False


@dataclass
class DecodedImages:
    """A decoded-image array (memory-mapped read-only on first use) and its rows by image path."""

    file: Path
    rows: dict[str, int]  # absolute image path -> row
    decoded: int  # images decoded to build it: 0 when an existing array was opened
    _array: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.file, mmap_mode="r")
        return self._array

    def rows_of(self, paths: Sequence[str]) -> np.ndarray:
        return np.array([self.rows[os.path.abspath(p)] for p in paths], dtype=np.int64)

    def __getstate__(self) -> dict:
        # A spawned DataLoader worker maps the file itself: a pickled memmap would travel as a full copy.
        return {**self.__dict__, "_array": None}


def open_decoded(paths: Sequence[str], image_size: int, device: torch.device | None = None) -> DecodedImages:
    """The decoded array of these images at image_size, decoded by read_image or, given a `device`
    (data.decode: device), by read_images on it: opened if it exists, otherwise built (decoding only the
    contents no earlier array of the same decoder holds) while holding the lock on the images' folder."""
    files = sorted({os.path.abspath(p) for p in paths})
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    relative = [os.path.relpath(f, root) for f in files]
    group = cache_home() / "decoded" / digest(root)[:16]
    with locked(group):
        hashes = content_hashes(root, relative, group / HASHES)
        rows = [[name, sha] for name, sha in zip(relative, hashes, strict=True)]
        entry = group / f"{image_size}px-{digest(json.dumps(key_settings(image_size, device, rows)))[:20]}"
        decoded = 0 if entry.is_dir() else build(entry, files, rows, image_size, device)
    return DecodedImages(entry / ARRAY, {f: i for i, f in enumerate(files)}, decoded)


def key_settings(image_size: int, device: torch.device | None, rows: list[list[str]]) -> list:
    """What an array's key hashes. OpenCV's arrays keep the key they had before data.decode existed (no
    decoder in it), so that arrays already on disk stay in use."""
    decoder = decoder_name(device)
    if decoder == OPENCV_DECODER:
        return [DECODE_VERSION, image_size, rows]
    return [DECODE_VERSION, image_size, decoder, rows]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextmanager
def locked(group: Path) -> Iterator[None]:
    """The group folder, created, under an exclusive lock: one process at a time reads or builds in it."""
    try:
        group.mkdir(parents=True, exist_ok=True)
        lock = open(group / ".lock", "w")
    except OSError as exc:
        raise CompError(
            f"Cannot write the decoded-image cache in {group}: {exc.strerror}.",
            hint="Point COMP_CACHE at a writable folder, or set data.cache=on (memory) or off.",
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or by the OS if the process dies
        yield


def content_hashes(root: str, relative: list[str], index_file: Path) -> list[str]:
    """sha256 of each file's bytes; a file whose size and mtime the index already holds is not read again."""
    index = json.loads(index_file.read_text()) if index_file.exists() else {}
    stats = []
    for name in relative:
        try:
            stats.append(os.stat(os.path.join(root, name)))
        except FileNotFoundError:
            raise CompError(f"Cannot read image {os.path.join(root, name)}: the file is missing.") from None
    seen = {
        name: index[name][2] for name, st in zip(relative, stats, strict=True) if index.get(name, [])[:2] == stamp(st)
    }
    stale = [i for i, name in enumerate(relative) if name not in seen]
    with ThreadPoolExecutor(usable_cpu_count()) as pool:  # hashlib releases the GIL on large buffers
        hashes = pool.map(sha256_file, [os.path.join(root, relative[i]) for i in stale])
        fresh = dict(zip(stale, hashes, strict=True))
    settled = time.time_ns() - RACY_NS
    kept = {i: sha for i, sha in fresh.items() if stats[i].st_mtime_ns < settled}
    if kept:
        write_json(index_file, index | {relative[i]: [*stamp(stats[i]), sha] for i, sha in kept.items()})
    return [seen[name] if name in seen else fresh[i] for i, name in enumerate(relative)]


def stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns]


def build(entry: Path, files: list[str], rows: list[list[str]], image_size: int, device: torch.device | None) -> int:
    """Write the array of `files` at `entry` (rows copied from an earlier array of the same decoder where the
    content is the same, the rest decoded); returns how many images were decoded."""
    shape = (len(files), image_size, image_size, CHANNELS)
    check_free_space(entry.parent, decoded_bytes(len(files), image_size))
    for stale in entry.parent.glob(".*px-*"):  # a build killed before its rename (the lock is ours: none runs)
        shutil.rmtree(stale, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        array = np.lib.format.open_memmap(building / ARRAY, mode="w+", dtype=np.uint8, shape=shape)
        earlier = earlier_rows(entry.parent, image_size, decoder_name(device))
        missing = []
        for row, (_, sha) in enumerate(rows):
            if sha in earlier:
                source, source_row = earlier[sha]
                array[row] = source[source_row]
            else:
                missing.append(row)
        decode_into(array, files, missing, image_size, device)
        array.flush()
        del array
        with open(building / ARRAY, "rb") as f:
            os.fsync(f.fileno())
        meta = {"image_size": image_size, "version": DECODE_VERSION, "decoder": decoder_name(device), "rows": rows}
        write_json(building / ROWS, meta)
        os.rename(building, entry)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    console.print(f"decoded {len(missing)} images into {entry / ARRAY}", soft_wrap=True, markup=False)
    return len(missing)


def check_free_space(folder: Path, n_bytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < n_bytes:
        raise CompError(
            f"The decoded-image cache needs {n_bytes / 1e9:.2f} GB in {folder}, but only {free / 1e9:.2f} GB are free.",
            hint="Free space there, point COMP_CACHE at a larger disk, or set data.cache=off.",
        )


def earlier_rows(group: Path, image_size: int, decoder: str) -> dict[str, tuple[np.ndarray, int]]:
    """sha256 -> (array, row) of the newest finished array of this group at image_size, DECODE_VERSION and
    decoder (arrays written before data.decode existed are OpenCV's)."""
    for entry in sorted(group.glob(f"{image_size}px-*"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        meta = json.loads((entry / ROWS).read_text())
        same_decoder = meta.get("decoder", OPENCV_DECODER) == decoder
        if meta["version"] == DECODE_VERSION and meta["image_size"] == image_size and same_decoder:
            array = np.load(entry / ARRAY, mmap_mode="r")
            return {sha: (array, row) for row, (_, sha) in enumerate(meta["rows"])}
    return {}


def decode_into(
    array: np.ndarray, files: list[str], rows: list[int], image_size: int, device: torch.device | None = None
) -> None:
    """Decode files[row] at image_size into array[row] for each row, on one thread per core (OpenCV and
    torchvision decode and resize without holding the GIL), with a progress bar: one file a task by read_image,
    or with a `device` (data.decode: device) a batch of files a task by read_images on it."""

    def decode(batch: Sequence[int]) -> int:
        for row, image in zip(batch, read_images([files[row] for row in batch], device), strict=True):
            array[row] = fit_size(image, image_size)
        return len(batch)

    pool = ThreadPoolExecutor(usable_cpu_count())
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"decoding {len(rows)} images at {image_size} px", total=len(rows))
            for done in pool.map(decode, decode_batches(rows, device)):
                progress.advance(task, done)
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, the images not yet started are not decoded for nothing
