"""What the speed benchmarks share: a generated PNG competition, a scratch project, interleaved timing.

The machines these run on are often shared and noisy, so every benchmark measures its cases side
by side in one process, interleaved round by round (the order rotating each round), and reports
the median and the spread (min..max) of each figure and of each ratio over the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from comp.config import Config, load_config
from comp.data.competition import Competition, load_competition
from comp.data.folds import write_folds
from comp.device import autocast, numeric_format, resolve_device, usable_cpu_count
from comp.models.factory import create_model
from comp.training.optim import create_optimizer, create_scheduler

REPO = Path(__file__).resolve().parents[1]
# The reference case: the default config with resnet18 on 32x32 images, batch 128.
REFERENCE = ["model.name=resnet18", "data.image_size=32", "train.batch_size=128"]


# ----------------------------------------------------------------------------- a competition on disk


def class_image(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth noisy BGR image tinted by its class: decodes like a photo, not like white noise."""
    tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], dtype=np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 60, (size, size, 3)).astype(np.float32), (5, 5), 0)
    return np.clip(0.5 * tint + 64 + noise, 0, 255).astype(np.uint8)


def write_images(
    folder: Path, names: list[str], labels: np.ndarray, size: int, seed: int, suffix: str = ".png"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def write(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        cv2.imwrite(str(folder / f"{names[i]}{suffix}"), class_image(int(labels[i]), rng, size))

    with ThreadPoolExecutor(usable_cpu_count()) as pool:  # cv2 releases the GIL
        list(pool.map(write, range(len(names))))


def write_competition(
    root: Path, n_train: int, n_test: int, size: int = 32, n_classes: int = 10, suffix: str = ".png"
) -> Path:
    """A csv-layout competition of generated images (PNGs, or JPEGs with suffix=".jpg"): train.csv + train/,
    sample_submission.csv + test/. A suffix other than .png needs data.image_suffix set to it."""
    train_ids = [f"tr{i:06d}" for i in range(n_train)]
    test_ids = [f"te{i:06d}" for i in range(n_test)]
    train_labels = np.arange(n_train) % n_classes
    write_images(root / "train", train_ids, train_labels, size, seed=0, suffix=suffix)
    write_images(root / "test", test_ids, np.arange(n_test) % n_classes, size, seed=1, suffix=suffix)
    pd.DataFrame({"id": train_ids, "label": train_labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return root


@contextmanager
def scratch_project(keep: bool = False) -> Iterator[Path]:
    """A temporary project folder as the working directory (comp writes folds/ and runs/ there)."""
    folder = Path(tempfile.mkdtemp(prefix="comp-bench-"))
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def bench_config(data_root: Path | str, overrides: list[str], path: Path | None = None) -> Config:
    """A config file (default: comp/configs/default.yaml with the reference case), the generated data, the overrides."""
    base = [f"data.root={data_root}", "data.competition=bench", "data.layout=csv", "name=bench"]
    if path is None:
        path, base = REPO / "comp/configs/default.yaml", base + REFERENCE
    return load_config(path, base + list(overrides))


def prepare(config: Config) -> tuple[Competition, pd.DataFrame]:
    competition = load_competition(config.data)
    _, folds, _ = write_folds(config, competition)
    return competition, folds


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every case once per round, the order rotating each round; each case returns its figure."""
    names = list(cases)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(cases[name]())
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {results[n][-1]:.3g}" for n in names), flush=True)
    return results


def spread(values: list[float]) -> str:
    """median (min..max) of a figure over the rounds."""
    return f"{statistics.median(values):.3g} ({min(values):.3g}..{max(values):.3g})"


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-round ratios: both figures of a round were measured moments apart."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def machine_line() -> str:
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{usable_cpu_count()} usable cores, torch {torch.__version__} with {threads} threads, "
        f"load average {load:.1f} (timings from a busy machine are slower, their ratios less so)"
    )


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE, repeatable, as comp's own commands take it: collected in args.overrides."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every case")
    parser.add_argument(
        "--config",
        type=lambda path: Path(path).resolve(),
        help="start from this config file instead of the reference case",
    )
    add_overrides(parser, "config override applied to every case (repeatable), e.g. model.name=resnet9")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project folder")
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this process's CPU time; with --threads 1, the work itself on a busy machine",
    )
    return parser


def clock_of(args: argparse.Namespace) -> Callable[[], float]:
    return time.process_time if args.clock == "cpu" else time.perf_counter


def begin(title: str, args: argparse.Namespace) -> None:
    """Apply the shared options, then print the title, the machine and the command line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{title}\n{machine_line()}\n{' '.join(sys.argv)}", flush=True)


# ----------------------------------------------------------------------------- the model alone


class ModelAlone:
    """comp's model, optimizer and schedule stepping on one batch already in memory: the hardware's limit.

    Precision (train.amp), memory format (train.channels_last, `auto` resolved as comp does) and torch.compile
    (train.compile) follow the config, as in comp's loop; `dtype` overrides the autocast dtype ("none": full precision,
    "bfloat16", "float16"). `sync_every_step` adds a `loss.item()` per step, the host synchronisation
    a loop that logs every step pays. `fused` overrides comp's choice of torch's fused optimizer kernel
    (False: torch's default per-tensor update). `clock` times the steps: wall time, or time.process_time (the
    CPU time of this process: on one thread, the compute's cost, far less disturbed by a busy machine).
    """

    def __init__(
        self,
        config: Config,
        n_classes: int,
        sync_every_step: bool = False,
        dtype: str = "auto",
        fused: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        cfg = config.train
        self.clock = clock
        self.device = resolve_device(cfg.device)
        self.model = create_model(config.model, n_classes).to(self.device)
        numerics = numeric_format(cfg.amp, cfg.channels_last, self.model, self.device, config.data.image_size)
        self.dtype = numerics.dtype if dtype == "auto" else None if dtype == "none" else getattr(torch, dtype)
        self.memory_format = numerics.memory_format
        self.model.to(memory_format=self.memory_format)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = create_optimizer(config, self.model, fused=fused)
        # A schedule long enough never to run out during a benchmark.
        self.scheduler = create_scheduler(config, self.optimizer, steps_per_epoch=10**7)
        self.sync_every_step = sync_every_step
        size, batch = config.data.image_size, cfg.batch_size
        self.images = torch.randn(batch, 3, size, size, device=self.device).contiguous(memory_format=self.memory_format)
        self.targets = torch.randint(0, n_classes, (batch,), device=self.device)
        self.eval_images = torch.randn(config.predict.batch_size, 3, size, size, device=self.device).contiguous(
            memory_format=self.memory_format
        )

    def describe(self) -> str:
        precision = str(self.dtype).replace("torch.", "") if self.dtype else "fp32"
        layout = "channels_last" if self.memory_format == torch.channels_last else "contiguous"
        compiled = "compiled" if self.forward is not self.model else "eager"
        fused = "fused" if self.optimizer.defaults.get("fused") else "per-tensor"
        return f"{type(self.model).__name__}, {precision}, {layout}, {compiled}, {fused} optimizer, {self.device}"

    def train_seconds(self, steps: int) -> float:
        self.model.train()
        losses = []
        synchronize(self.device)
        start = self.clock()
        for _ in range(steps):
            with autocast(self.device, self.dtype):
                loss = F.cross_entropy(self.forward(self.images), self.targets)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            losses.append(loss.item() if self.sync_every_step else loss.detach())
        if not self.sync_every_step:
            torch.stack(losses).sum().item()  # one synchronisation at the end, as comp's loop does
        return self.clock() - start

    @torch.no_grad()
    def eval_seconds(self, images: int, copies: int = 1) -> float:
        """Forward passes over `images` images in predict.batch_size batches, each batch `copies` times over
        in one pass (TTA views), the outputs brought to the host as comp's prediction does."""
        self.model.eval()
        batch = len(self.eval_images)
        synchronize(self.device)
        start = self.clock()
        for first in range(0, images, batch):
            chunk = self.eval_images[: min(batch, images - first)]
            with autocast(self.device, self.dtype):
                self.forward(torch.cat([chunk] * copies) if copies > 1 else chunk).float().cpu()
        return self.clock() - start

    def steps_for(self, seconds: float) -> int:
        """Training steps that take about `seconds`, from a timed step (which also warms up)."""
        return max(1, round(seconds / self.train_seconds(1)))
