"""A fold's data: the training batches of each epoch, drawn from (seed, fold, epoch) alone, and the validation rows.

An epoch resumed at batch b, or loaded by any number of workers, sees exactly the same batches: the
order and the seed each image is augmented from are drawn from (seed, fold, epoch), so resuming needs
no saved data state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from comp.augment import Augment, create_train_transform
from comp.config import Config
from comp.data.competition import Competition
from comp.data.dataset import ImageDataset, cache_mode, decoded_in_memory, loader_options
from comp.data.decoded import open_decoded
from comp.data.pseudo import load_pseudo_labels
from comp.training.distributed import rank_device, shard_batch, validation_sampler


class EpochBatches(Sampler):
    """One epoch's batches of dataset keys (index, phase, augmentation seed), from batch `start` on.

    Order and seeds are drawn from (seed, fold, epoch) alone. Batches are full (the remainder of
    an epoch is dropped), so batch norm never sees a batch of one. Under DDP each process takes its
    share of every batch, so the steps are the same for any number of processes.
    """

    def __init__(self, n_images: int, batch_size: int, seed: int, fold: int):
        self.n_images, self.batch_size, self.seed, self.fold = n_images, batch_size, seed, fold
        self.epoch, self.phase, self.start = 1, 1, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n_images // self.batch_size

    def set_epoch(self, epoch: int, phase: int, start: int = 0) -> None:
        self.epoch, self.phase, self.start = epoch, phase, start

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.fold, self.epoch])
        order = rng.permutation(self.n_images)
        seeds = rng.integers(2**32, size=self.n_images)
        for b in range(self.start, self.batches_per_epoch):
            rows = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(int(i), self.phase, int(seeds[i])) for i in shard_batch(rows)]


class PhasedImages(Dataset):
    """Training images under their phase's augmentation, each augmented from its own seed.

    pseudo_rows: how many of them are pseudo-labelled test images (data.pseudo_labels), the last ones.
    soft_targets: every single-label target is a probability row (a soft pseudo-label table), not a class index."""

    def __init__(
        self, images: ImageDataset, augments: dict[int, Augment], pseudo_rows: int = 0, soft_targets: bool = False
    ):
        self.images, self.augments, self.pseudo_rows, self.soft_targets = images, augments, pseudo_rows, soft_targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int, int]):
        index, phase, seed = key
        return self.images.sample(index, self.augments[phase](self.images.image(index), seed))


def smoothed_rows(rows: np.ndarray, smoothing: float) -> np.ndarray:
    """Probability rows with train.label_smoothing applied as cross-entropy's label_smoothing and timm's Mixup
    apply it to a class index: (1 - smoothing) * row + smoothing / classes. The loss then takes them as they are."""
    return ((1 - smoothing) * rows + smoothing / rows.shape[1]).astype(np.float32)


def create_loaders(
    config: Config, competition: Competition, folds: pd.DataFrame, fold: int
) -> tuple[DataLoader, DataLoader]:
    """(train, val) DataLoaders of a fold, giving uint8 image batches; the train loader's batch_sampler is an
    EpochBatches. The pseudo-labelled test images of data.pseudo_labels join the training rows; with a soft table,
    the training targets are smoothed probability rows (one-hot for the real rows), the validation ones stay
    class indices."""
    table = competition.train.set_index("id").loc[folds["id"]]
    targets = competition.targets(folds["id"], competition.classes)  # indices, or 0/1 per tag (multilabel)
    is_val = (folds["fold"] == fold).to_numpy()
    paths = table["path"].to_numpy()
    cache = cache_mode(config.data, len(paths), paths[0])
    size = config.data.image_size
    phases = {
        phase: create_train_transform(
            getattr(config.aug, f"phase{phase}"), size, f"aug.phase{phase}", config.aug.device
        )
        for phase in (1, 2)
    }
    pseudo = load_pseudo_labels(config, competition)  # test images: training rows only, never validation
    train_paths, train_targets = paths[~is_val], targets[~is_val]
    soft = pseudo is not None and pseudo.soft
    if pseudo is not None:
        train_paths = np.concatenate([train_paths, pseudo.paths])
        if soft:  # one batch mixes real and pseudo rows, so every row becomes a probability row
            train_targets = smoothed_rows(
                np.concatenate([np.eye(len(competition.classes), dtype=np.float32)[train_targets], pseudo.targets]),
                config.train.label_smoothing,
            )
        else:
            train_targets = np.concatenate([train_targets, pseudo.targets])
    n_pseudo = 0 if pseudo is None else len(pseudo.ids)
    # Every fold's images, decoded once: in memory for the folds of this process, or in one array on disk that
    # each fold, each --parallel process and later runs open.
    every_path = paths if pseudo is None else np.concatenate([paths, pseudo.paths])
    device = rank_device(config.train.device)  # this process's training device (its own GPU under DDP)
    decode_on = device if config.data.decode == "device" else None  # None: OpenCV on the CPU
    memory = decoded_in_memory(every_path, decode_on) if cache == "memory" else None
    decoded = open_decoded(every_path, size, decode_on) if cache == "disk" else None
    train_set = PhasedImages(ImageDataset(train_paths, train_targets, size, memory, decoded), phases, n_pseudo, soft)
    val_set = ImageDataset(paths[is_val], targets[is_val], size, memory, decoded)
    cfg = config.train
    common = loader_options(cfg, device)
    common.update(
        persistent_workers=cfg.persistent_workers and common["num_workers"] > 0,
        # Iterators draw a seed from this, not from torch's global generator (which resume restores).
        generator=torch.Generator().manual_seed(config.train_seed),
    )
    batches = EpochBatches(len(train_set), cfg.batch_size, config.train_seed, fold)
    return (
        DataLoader(train_set, batch_sampler=batches, **common),
        DataLoader(val_set, batch_size=config.predict.batch_size, sampler=validation_sampler(len(val_set)), **common),
    )
