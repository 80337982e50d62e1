"""Decode once: every fold of `comp train --fold all` on generated JPEGs, data.cache=disk, in one process.

Each image is decoded once, into one array on disk that every fold opens: the images decoded (counted
where comp opens the array) must equal the images, all of them by the first fold. No later fold waits on
decoding, so their first epochs should take no longer than their later epochs (the first/later ratio
near 1; a first epoch also starts the DataLoader workers). Each round starts from an empty cache. The
model is small (model.name=resnet9_tiny, --set changes it) so that the data's share of an epoch shows.

    python benchmarks/decode_once.py                  # the issue's case: 20,000 JPEGs, 32 px, 5 folds
    python benchmarks/decode_once.py --images 300     # a quick check that it runs
"""

from __future__ import annotations

import os
import shutil
import statistics
import time

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
from comp.runs import fold_dir, run_dir
from comp.training import loaders
from comp.training.fold import train


class DecodeCounter:
    """comp's open_decoded, recording what each call decoded and how long it took."""

    def __init__(self):
        self.open_decoded = loaders.open_decoded
        self.decoded: list[int] = []
        self.seconds: list[float] = []

    def __call__(self, paths, image_size: int):
        start = time.perf_counter()
        images = self.open_decoded(paths, image_size)
        self.seconds.append(time.perf_counter() - start)
        self.decoded.append(images.decoded)
        return images


def epoch_seconds(config: Config, fold: int) -> list[float]:
    return pd.read_csv(fold_dir(run_dir(config.name), fold) / "metrics.csv")["seconds"].tolist()


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.set_defaults(rounds=1)
    parser.add_argument("--images", type=int, default=20000, help="training JPEGs generated")
    parser.add_argument("--size", type=int, default=32, help="the JPEGs' side in pixels, and data.image_size")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="per fold (2 or more: a first and later epochs)")
    args = parser.parse_args()
    begin("Decode once: five folds of comp train on JPEGs with data.cache=disk", args)

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
            "data.cache=disk",
            *args.overrides,
        ]
        config = bench_config(root, overrides, args.config)
        competition, _ = prepare(config)
        counter = DecodeCounter()
        loaders.open_decoded = counter

        rows, later_folds = [], []
        for r in range(1, args.rounds + 1):
            shutil.rmtree(cache, ignore_errors=True)
            counter.decoded.clear()
            counter.seconds.clear()
            train(config, competition, fold="all", force=True)
            once = counter.decoded[:1] == [args.images] and not any(counter.decoded[1:])
            print(
                f"round {r}: images decoded {sum(counter.decoded)} of {args.images} "
                f"({'once, by the first fold' if once else 'NOT once'}; per fold {counter.decoded}); "
                f"opening the array took {spread(counter.seconds)} s per fold",
                flush=True,
            )
            for fold in range(args.folds):
                first, *later = epoch_seconds(config, fold)
                ratio = first / statistics.median(later) if later else float("nan")
                if fold > 0:
                    later_folds.append(ratio)
                later_text = f"{statistics.median(later):.2f}" if later else "-"
                rows.append((str(r), str(fold), f"{first:.2f}", later_text, f"{ratio:.2f}"))

    print_table(
        "Seconds per epoch (training and validation), later: the median of epochs 2..",
        rows,
        ("round", "fold", "first epoch", "later epochs", "first / later"),
    )
    if later_folds:
        print(f"\nfirst / later epoch of folds 1..{args.folds - 1}, median (min..max): {spread(later_folds)}")


if __name__ == "__main__":
    main()
