"""comp train against the same training written with timm's own data pipeline, per epoch, side by side.

timm's train.py is not shipped with the timm package, so its loop is written here from timm's parts:
`timm.data.create_dataset` over class folders, `create_transform` through `create_loader` (its default
training augmentation: RandomResizedCrop, horizontal flip, ColorJitter 0.4; the prefetcher normalising uint8
batches on the device), `create_optimizer_v2` and a per-epoch cosine schedule, then a validation pass every
epoch, as train.py runs them. Both sides get the same PNGs (fold 0's rows of one generated competition),
model, batch size, optimizer, learning rate, epochs, and the precision and memory format comp picks here.

comp's epoch is measured the way a user meets it: (the wall time of an --epochs run - that of a 1-epoch run)
/ (epochs - 1), checkpoints and metrics files included. timm's is the median of its epochs after the first
(nothing written). timm's loop runs with each --timm-workers count; the ratio is against its fastest.

    python benchmarks/timm_loop.py                          # about 10 minutes on a quiet 2-core CPU
    python benchmarks/timm_loop.py --images 4000 --rounds 2 --timm-workers 0
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (
    argument_parser,
    begin,
    bench_config,
    interleaved,
    prepare,
    print_table,
    ratios,
    scratch_project,
    spread,
    write_competition,
)
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from comp.config import Config
from comp.device import autocast, numeric_format, resolve_device
from comp.models.factory import create_model
from comp.training.fold import train


def class_folders(root: Path, folds, fold: int, out: Path) -> tuple[Path, Path]:
    """train/<label>/<id>.png and val/<label>/<id>.png links to fold `fold`'s training and validation images."""
    for split, rows in (("train", folds[folds["fold"] != fold]), ("val", folds[folds["fold"] == fold])):
        for image_id, label in zip(rows["id"], rows["label"], strict=True):
            link = out / split / str(label) / f"{image_id}.png"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((root / "train" / f"{image_id}.png").resolve())
    return out / "train", out / "val"


class TimmLoop:
    """A train.py-style loop from timm's parts, on comp's model in the format comp chose."""

    def __init__(self, config: Config, train_dir: Path, val_dir: Path, n_classes: int, workers: int):
        self.config, self.device = config, resolve_device(config.train.device)
        self.train_dir, self.val_dir, self.n_classes, self.workers = train_dir, val_dir, n_classes, workers

    def epoch_seconds(self, epochs: int) -> list[float]:
        cfg, size = self.config.train, self.config.data.image_size
        model = create_model(self.config.model, self.n_classes).to(self.device)
        numerics = numeric_format(cfg.amp, cfg.channels_last, model, self.device, size)
        model.to(memory_format=numerics.memory_format)
        data = resolve_data_config({"input_size": (3, size, size)}, model=model)
        options = dict(batch_size=cfg.batch_size, num_workers=self.workers, device=self.device)
        options |= dict(mean=data["mean"], std=data["std"], persistent_workers=self.workers > 0)
        train_loader = create_loader(create_dataset("", root=str(self.train_dir)), size, is_training=True, **options)
        val_loader = create_loader(create_dataset("", root=str(self.val_dir)), size, **options)
        optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = CosineLRScheduler(optimizer, t_initial=epochs)
        seconds = []
        for epoch in range(epochs):
            start = time.perf_counter()
            model.train()
            for images, targets in train_loader:
                images = images.contiguous(memory_format=numerics.memory_format)
                with autocast(self.device, numerics.dtype):
                    loss = F.cross_entropy(model(images), targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss.item()  # train.py updates its loss meter every step
            scheduler.step(epoch + 1)
            model.eval()
            with torch.no_grad(), autocast(self.device, numerics.dtype):
                for images, _ in val_loader:
                    model(images.contiguous(memory_format=numerics.memory_format)).float().cpu()
            seconds.append(time.perf_counter() - start)
        return seconds


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000, help="training images generated (fold 0 trains on 4/5)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timm-workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers of timm's loop")
    args = parser.parse_args()
    begin("comp train / the same training on timm's data pipeline, seconds per epoch", args)

    with scratch_project(args.keep) as project:
        root = write_competition(project / "data", args.images, 16)
        config = bench_config(root, [f"train.epochs={args.epochs}", *args.overrides], args.config)
        one_epoch = bench_config(root, ["train.epochs=1", *args.overrides], args.config)
        competition, folds = prepare(config)
        train_dir, val_dir = class_folders(root, folds, 0, project / "timm")
        n_classes = len(competition.classes)

        def comp_run(run_config: Config):
            def run() -> float:
                start = time.perf_counter()
                train(run_config, competition, fold=0, force=True)
                return time.perf_counter() - start

            return run

        def timm_run(workers: int):
            loop = TimmLoop(config, train_dir, val_dir, n_classes, workers)
            return lambda: statistics.median(loop.epoch_seconds(args.epochs)[1:])

        cases = {f"comp {args.epochs} epochs": comp_run(config), "comp 1 epoch": comp_run(one_epoch)}
        cases |= {f"timm loop, {w} workers": timm_run(w) for w in args.timm_workers}
        seconds = interleaved(cases, args.rounds)

    comp_epoch = [(a - b) / (args.epochs - 1) for a, b in zip(*list(seconds.values())[:2], strict=True)]
    timm_names = [f"timm loop, {w} workers" for w in args.timm_workers]
    fastest = min(timm_names, key=lambda name: statistics.median(seconds[name]))
    n_train = int((folds["fold"] != 0).sum())
    rows = [("comp", spread(comp_epoch), spread([n_train / s for s in comp_epoch]), "1")]
    for name in timm_names:
        ratio = spread(ratios(seconds[name], comp_epoch))
        rows.append((name, spread(seconds[name]), spread([n_train / s for s in seconds[name]]), ratio))
    print_table(
        f"Seconds per epoch ({n_train} training images + validation), median (min..max) of {args.rounds} rounds; "
        f"comp is {statistics.median(ratios(seconds[fastest], comp_epoch)):.2f}x as fast as timm's fastest",
        rows,
        ("loop", "s/epoch", "train img/s", "timm s / comp s"),
    )


if __name__ == "__main__":
    main()
