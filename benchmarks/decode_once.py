"""Decode once: every fold of `comp train --fold all` on generated JPEGs in one process, per data.cache mode.

Each image is decoded once for all folds: with data.cache=disk into one array on disk that every fold (and
every later run, and every --parallel process) opens; with data.cache=on (what `auto` picks when the images
fit in a quarter of memory) into memory, kept for the process's later folds. The images decoded (counted
at comp's image reader) must equal the images. No later fold waits on decoding, so their first epochs
should take no longer than their later epochs (first/later near 1). Each round starts from an empty cache.
The model is small (model.name=resnet9_tiny, --set changes it) so that the data's share of an epoch shows.

    python benchmarks/decode_once.py                  # the issue's case: 20,000 JPEGs, 32 px, 5 folds
    python benchmarks/decode_once.py --images 300     # a quick check that it runs
"""

from __future__ import annotations

import os
import shutil
import statistics

import pandas as pd
from common import (
    argument_parser,
    begin,
    bench_config,
    prepare,
    print_table,
    scratch_project,
    spread,
    write_competition,
)

from comp.config import Config
from comp.data import dataset, decoded
from comp.runs import fold_dir, run_dir
from comp.training.fold import train


class DecodeCounter:
    """comp's image reader, counting the images decoded (by the in-memory cache and by the disk cache)."""

    def __init__(self):
        self.read_image, self.decoded = dataset.read_image, 0
        dataset.read_image = decoded.read_image = self

    def __call__(self, path):
        self.decoded += 1
        return self.read_image(path)


def epoch_seconds(config: Config, fold: int) -> list[float]:
    return pd.read_csv(fold_dir(run_dir(config.name), fold) / "metrics.csv")["seconds"].tolist()


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.set_defaults(rounds=1)
    parser.add_argument("--images", type=int, default=20000, help="training JPEGs generated")
    parser.add_argument("--size", type=int, default=32, help="the JPEGs' side in pixels, and data.image_size")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="per fold (2 or more: a first and later epochs)")
    parser.add_argument("--cache", nargs="+", choices=["disk", "on"], default=["disk", "on"], help="data.cache modes")
    args = parser.parse_args()
    begin("Decode once: the folds of comp train on JPEGs, per data.cache mode", args)

    with scratch_project(args.keep) as project:
        root = write_competition(project / "data", args.images, n_test=64, size=args.size, suffix=".jpg")
        cache = project / "cache"
        os.environ["COMP_CACHE"] = str(cache)  # a cache of its own, empty at each round's start
        overrides = [
            "model.name=resnet9_tiny",
            "data.image_suffix=.jpg",
            f"data.image_size={args.size}",
            f"folds.k={args.folds}",
            f"train.epochs={args.epochs}",
            *args.overrides,
        ]
        counter = DecodeCounter()
        rows, later_folds = [], {mode: [] for mode in args.cache}
        for r in range(1, args.rounds + 1):
            for mode in args.cache:
                config = bench_config(root, [*overrides, f"data.cache={mode}"], args.config)
                competition, _ = prepare(config)
                shutil.rmtree(cache, ignore_errors=True)
                dataset.decoded_in_memory([])  # nothing kept in memory from the last mode
                counter.decoded = 0
                train(config, competition, fold="all", force=True)
                verdict = "once" if counter.decoded == args.images else "NOT once"
                print(f"round {r}, data.cache={mode}: images decoded {counter.decoded} of {args.images} ({verdict})")
                for fold in range(args.folds):
                    first, *later = epoch_seconds(config, fold)
                    ratio = first / statistics.median(later) if later else float("nan")
                    if fold > 0:
                        later_folds[mode].append(ratio)
                    later_text = f"{statistics.median(later):.2f}" if later else "-"
                    rows.append((str(r), mode, str(fold), f"{first:.2f}", later_text, f"{ratio:.2f}"))

    print_table(
        "Seconds per epoch (training and validation), later: the median of epochs 2..",
        rows,
        ("round", "data.cache", "fold", "first epoch", "later epochs", "first / later"),
    )
    for mode, ratios in later_folds.items():
        if ratios:
            folds = f"folds 1..{args.folds - 1}"
            print(f"data.cache={mode}: first / later epoch of {folds}, median (min..max): {spread(ratios)}")


if __name__ == "__main__":
    main()
