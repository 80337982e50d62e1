"""The training dataset: images by path, optionally decoded once into memory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from comp.config import DataConfig
from comp.data import read_image


class ImageDataset(Dataset):
    """Images by path, decoded once into memory when `cache` is set (augmented every epoch)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int] | None, transform, cache: bool = False):
        self.paths = list(paths)
        self.targets = None if targets is None else torch.as_tensor(list(targets), dtype=torch.long)
        self.transform = transform
        self.images = [read_image(p) for p in self.paths] if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        return self.images[index] if self.images is not None else read_image(self.paths[index])

    def __getitem__(self, index: int):
        tensor = self.transform(image=self.image(index))["image"]
        if self.targets is None:
            return tensor
        return tensor, self.targets[index]


def should_cache(cfg: DataConfig, n_images: int) -> bool:
    """Cache decoded images when they plainly fit in memory (an estimate at 3x image_size^2 bytes)."""
    if cfg.cache != "auto":
        return cfg.cache == "on"
    return n_images * 3 * max(cfg.image_size, 64) ** 2 < 2 * 1024**3
