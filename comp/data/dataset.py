"""Datasets of images by path, optionally decoded once into memory or into a shared array on disk (augmented
every epoch)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from comp.augment import fit_size
from comp.config import DataConfig, TrainConfig
from comp.data.competition import read_image
from comp.data.decoded import DecodedImages, decoded_bytes, fits_on_disk, stamp
from comp.data.images import decode_batches, decoder_name, read_images
from comp.device import default_num_workers, usable_cpu_count

# The in-memory cache may take up to this share of the memory available when it is built.
CACHE_MEMORY_SHARE = 0.25
CacheMode = Literal["memory", "disk", "off"]


class ImageDataset(Dataset):
    """(image, target) rows: images by path as uint8 H x W x C tensors at image_size, taken from `in_memory`
    (decoded_in_memory: path -> decoded image) or from the rows of `decoded` (data.cache: disk; already at
    image_size) when given, else read from disk. Normalisation happens per batch, on the device
    (comp.augment.ModelInput)."""

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence,
        image_size: int,
        in_memory: Mapping[str, np.ndarray] | None = None,
        decoded: DecodedImages | None = None,
    ):
        self.paths = list(paths)
        targets = torch.as_tensor(np.asarray(targets))
        # float: 0/1 per tag (multilabel), or a probability row each (soft pseudo-labels)
        self.targets = targets if targets.is_floating_point() else targets.long()
        self.image_size = image_size
        self.images = [in_memory[path] for path in self.paths] if in_memory is not None else None
        self.decoded, self.rows = decoded, decoded.rows_of(self.paths) if decoded is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        """The decoded image at its own size (at image_size from the disk cache)."""
        if self.decoded is not None:
            # A copy of the row: writable, as transforms and torch.from_numpy expect, where the map is read-only.
            return np.array(self.decoded.array[self.rows[index]])
        return self.images[index] if self.images is not None else read_image(self.paths[index])

    def __getitem__(self, index: int):
        return self.sample(index, fit_size(self.image(index), self.image_size))

    def sample(self, index: int, image: np.ndarray):
        """The row `index` with this image (sized image_size) in place of the stored one."""
        return torch.from_numpy(np.ascontiguousarray(image)), self.targets[index]


def decode_all(paths: Sequence[str], device: torch.device | None = None) -> list[np.ndarray]:
    """Every image decoded, in order, on one thread per core (OpenCV and torchvision's decoders release the
    GIL): by read_image, or with a `device` (data.decode: device) in batches by read_images on that device."""
    with ThreadPoolExecutor(usable_cpu_count()) as pool:
        batches = pool.map(partial(read_images, device=device), decode_batches(paths, device))
        return [image for batch in batches for image in batch]


# data.cache in memory: path -> (size, mtime_ns, decoder, decoded image), kept for the images last asked for, so
# that the folds of one process (comp train --fold all) decode them once.
_IN_MEMORY: dict[str, tuple[int, int, str, np.ndarray]] = {}


def decoded_in_memory(paths: Sequence[str], device: torch.device | None = None) -> dict[str, np.ndarray]:
    """Every image of `paths` decoded (on `device` with data.decode: device, see decode_all), path -> image:
    those decoded by the last call with the same decoder and unchanged since (same size and modification time)
    are reused, the others decoded now; images of earlier calls not in `paths` are let go."""
    decoder = decoder_name(device)
    stamps = {path: (*stamp(os.stat(path)), decoder) for path in paths}
    kept = {p: _IN_MEMORY[p] for p in stamps if p in _IN_MEMORY and _IN_MEMORY[p][:3] == stamps[p]}
    _IN_MEMORY.clear()
    missing = [p for p in stamps if p not in kept]
    kept |= {p: (*stamps[p], image) for p, image in zip(missing, decode_all(missing, device), strict=True)}
    _IN_MEMORY.update(kept)
    return {path: entry[3] for path, entry in kept.items()}


def loader_options(cfg: TrainConfig, device: torch.device) -> dict:
    """DataLoader arguments that training, validation and prediction share: the workers (auto: from the core
    count), pinned memory for a CUDA device, and one OpenCV thread in each worker."""
    workers = default_num_workers(device) if cfg.num_workers == "auto" else cfg.num_workers
    return dict(
        num_workers=workers,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        worker_init_fn=one_opencv_thread if workers else None,
    )


def one_opencv_thread(_worker_id: int) -> None:
    """A worker decodes and augments one image at a time. OpenCV's own thread pool in each of N workers puts
    N x cores threads on the cores, and on small images the extra threads mostly wait: twice the CPU time of
    one thread for the same images."""
    cv2.setNumThreads(0)  # 0: OpenCV runs on the calling thread alone


def available_memory() -> int | None:
    """Bytes that can be allocated now: the system's available memory, or less under a cgroup (container) limit."""
    candidates = []
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:  # macOS: the physical total
        candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    cgroup = Path("/sys/fs/cgroup")
    limit, used = cgroup / "memory.max", cgroup / "memory.current"
    if limit.exists() and used.exists() and limit.read_text().strip().isdigit():
        candidates.append(int(limit.read_text()) - int(used.read_text()))
    return min(candidates) if candidates else None


def cache_mode(cfg: DataConfig, n_images: int, sample: str | Path | None = None) -> CacheMode:
    """data.cache as where images are decoded once: `on` memory, `disk`, `off`. `auto`: memory when the decoded
    images take under a quarter of the available memory, else disk (at image_size) when it has room, else off.

    The size of a decoded image in memory is the `sample` image's when given (a competition's images are
    often far larger than image_size), otherwise at least 3 x image_size^2 bytes.
    """
    if cfg.cache != "auto":
        return {"on": "memory", "disk": "disk", "off": "off"}[cfg.cache]
    per_image = read_image(sample).nbytes if sample is not None else 3 * max(cfg.image_size, 64) ** 2
    budget = available_memory()
    budget = CACHE_MEMORY_SHARE * budget if budget is not None else 2 * 1024**3
    if n_images * per_image < budget:
        return "memory"
    return "disk" if fits_on_disk(decoded_bytes(n_images, cfg.image_size)) else "off"
