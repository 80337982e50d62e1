"""A trained run's fold models, and images streamed from disk through them in batches.

`open_run` checks every finished fold's checkpoint before any work starts; `Streamer` runs a fold's
model over image paths batch by batch (DataLoader workers, pinned memory on CUDA), every TTA view of
a batch in one forward pass, so memory does not grow with the number of images. The model and the
image size are the run's own (runs/<name>/config.yaml); batch size, workers, device and precision
come from the current config. `comp predict` and `comp probe` both read images this way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from comp.augment import ModelInput, fit_size
from comp.config import Config, load_config
from comp.data.competition import check_same_classes, load_classes, read_image
from comp.data.dataset import loader_options
from comp.device import autocast, numeric_format, resolve_device
from comp.errors import CompError
from comp.models.factory import create_model
from comp.runs import classes_file, config_file, finished_folds, fold_dir, run_dir
from comp.tta import view_log_probs

# ----------------------------------------------------------------------------- the trained run


@dataclass
class TrainedRun:
    config: Config  # the run's own config: the model and image size it was trained with
    classes: list
    folds: list[int]  # finished folds
    task: str  # comp.tasks: how the model's outputs become probabilities


def open_run(config: Config, task: str | None = None) -> TrainedRun:
    """The run's config, class map and finished folds, each fold's checkpoint checked before anything runs.

    The task is the competition's (`task`) or, predicting a folder of images, the one the run's config.yaml
    records (training writes data.task as it resolved it)."""
    folder = run_dir(config.name)
    finished = finished_folds(folder)
    if not finished:
        raise CompError(
            f"Run '{config.name}' has no trained folds in {folder}.",
            hint="Train first: comp train --fold all (or check `name` in the config).",
        )
    classes = load_classes(classes_file(folder))
    for k in finished:
        path = fold_dir(folder, k) / "best.safetensors"
        if not path.exists():
            raise CompError(
                f"Fold {k} of run '{config.name}' is finished but {path} is missing.",
                hint=f"Retrain it: comp train --fold {k} --force.",
            )
        with safe_open(str(path), framework="pt") as f:
            check_same_classes(classes, json.loads(f.metadata()["classes"]), f"Checkpoint {path}")
    saved = config_file(folder)
    run_config = load_config(saved) if saved.exists() else config
    return TrainedRun(run_config, classes, finished, task or _recorded_task(run_config, len(classes)))


def _recorded_task(run_config: Config, n_classes: int) -> str:
    task = run_config.data.task
    if task == "auto":  # a run trained before tasks were recorded: single-label
        return "binary" if n_classes == 2 else "multiclass"
    return task


def load_fold_model(run: TrainedRun, fold: int, device: torch.device) -> torch.nn.Module:
    path = fold_dir(run_dir(run.config.name), fold) / "best.safetensors"
    local = run.config.model.model_copy(update={"pretrained": False, "weights": None})
    model = create_model(local, len(run.classes))
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise CompError(
            f"{path} does not fit model '{local.name}' of {config_file(run_dir(run.config.name))}: "
            f"{str(exc).splitlines()[0]}",
            hint="Retrain the fold (comp train --force), or restore the run's config.yaml.",
        ) from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- streaming images through a model


class PredictImages(Dataset):
    """(uint8 image tensor at image_size, "") by path; an unreadable file gives (blank, its message) instead, so
    that the error is raised in the main process as itself, not as a worker's traceback."""

    def __init__(self, paths, image_size: int):
        self.paths, self.image_size = list(paths), image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image, problem = read_image(self.paths[index]), ""
        except CompError as exc:
            image, problem = np.zeros((8, 8, 3), dtype=np.uint8), exc.message
        return torch.from_numpy(fit_size(image, self.image_size)), problem


def create_image_loader(paths, image_size: int, config: Config, device: torch.device) -> DataLoader:
    return DataLoader(
        PredictImages(paths, image_size),
        batch_size=config.predict.batch_size,
        shuffle=False,
        **loader_options(config.train, device),
    )


def image_batches(loader: DataLoader, progress: Progress, label: str, command: str) -> Iterator[torch.Tensor]:
    """The loader's image batches under a progress task; an unreadable image is raised here, as itself."""
    task = progress.add_task(label, total=len(loader))
    for images, problems in loader:
        if any(problems):
            raise CompError(next(p for p in problems if p), hint=f"Replace or remove the file, then {command} again.")
        yield images
        progress.advance(task)
    progress.remove_task(task)


@dataclass
class Streamer:
    """Streams images through a fold's model: the run's model and image size, the current config's
    batch size, workers, device, precision, memory format and TTA mean."""

    run: TrainedRun
    config: Config
    progress: Progress

    def __post_init__(self):
        self.device = resolve_device(self.config.train.device)

    def __call__(self, fold: int, paths, views: list[str], label: str) -> Iterator[torch.Tensor]:
        """Per-view log-probabilities (views x batch x classes) of each batch, on the CPU, in `paths` order."""
        model = load_fold_model(self.run, fold, self.device)
        size, cfg = self.run.config.data.image_size, self.config.train
        numerics = numeric_format(cfg.amp, cfg.channels_last, model, self.device, size)
        model.to(memory_format=numerics.memory_format)
        inputs = ModelInput.of(model, self.device, numerics.memory_format)
        loader = create_image_loader(list(paths), size, self.config, self.device)
        return self._batches(model, inputs, loader, views, numerics.dtype, f"fold {fold} {label}")

    @torch.no_grad()
    def _batches(
        self, model, inputs: ModelInput, loader: DataLoader, views: list[str], dtype: torch.dtype | None, label: str
    ) -> Iterator[torch.Tensor]:
        for images in image_batches(loader, self.progress, label, "predict"):
            with autocast(self.device, dtype):
                log_probs = view_log_probs(model, inputs(images), views, self.config.predict.tta_mean, self.run.task)
            yield log_probs.cpu()


def collect(batches: Iterator[torch.Tensor], n_rows: int) -> np.ndarray:
    """The batches of a Streamer as one views x rows x classes array."""
    out, start = None, 0
    for batch in batches:
        if out is None:
            out = np.empty((batch.shape[0], n_rows, batch.shape[2]), dtype=np.float32)
        out[:, start : start + batch.shape[1]] = batch.numpy()
        start += batch.shape[1]
    return out
