"""Fashion-MNIST time to accuracy: a Kaggle-style competition from the official files, trained and scored by comp.

    apt-get install dataset-fashion-mnist                    # the files, in /usr/share/datasets/fashion-mnist
    python benchmarks/fashion_mnist.py --tta                 # one model (fold 0): about 20 minutes on 2 cores
    python benchmarks/fashion_mnist.py --folds all --tta     # the 5-fold ensemble
    python benchmarks/fashion_mnist.py --limit 3000 --set train.epochs=2    # a quick end-to-end check
    python benchmarks/fashion_mnist.py --seeds 3 --tta      # 3 seeds x 5 folds vs 1 seed; hill vs mean

The competition is written once under the working folder: data/fashion-mnist/ holds train.csv +
train/*.png (the 60,000 training images) and sample_submission.csv + test/*.png (the 10,000
official test images); their labels are held back in data/fashion-mnist-solution.csv, outside
what comp reads. Then, with comp/configs/fashion_mnist.yaml: comp folds, comp train (fold 0, or every
fold), comp predict, comp ensemble, and the submission scored against the held-back labels.

With --seeds N the 5 folds are trained under N seeds as one run (comp train --seeds N), and the
table compares, OOF and test accuracy side by side: the first seed alone, the N-seed average, and
hill climbing over the N seed runs (comp ensemble --method hill; its OOF is optimistic, so the
score on held-out fold 0, with the weights chosen on folds 1-4, is shown too) against their plain
mean. On 2 CPU cores each 5-fold seed takes hours (see the README's figures): run it on a GPU.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from common import add_overrides

from comp.config import Config, load_config
from comp.data.competition import load_competition
from comp.data.demo import score_submission
from comp.data.folds import write_folds
from comp.device import usable_cpu_count
from comp.ensemble import ensemble
from comp.hill import HillOptions
from comp.predict import predict
from comp.runs import fold_state, run_dir, seed_dirs
from comp.training.fold import train
from comp.training.seeds import train_seeds

SOURCE = Path(os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))  # the official .gz files
CONFIG = Path(__file__).resolve().parents[1] / "comp/configs/fashion_mnist.yaml"
TEST_SHARE = 1 / 6  # --limit keeps the official 60,000 : 10,000 proportion


# ----------------------------------------------------------------------------- the competition


def read_split(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n x 28 x 28 uint8) and labels of the official `train` or `t10k` files."""
    with gzip.open(SOURCE / f"{kind}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    with gzip.open(SOURCE / f"{kind}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(len(labels), 28, 28)
    return images, labels


def write_pngs(folder: Path, ids: list[str], images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    with ThreadPoolExecutor(usable_cpu_count()) as pool:  # cv2 releases the GIL
        list(pool.map(lambda i: cv2.imwrite(str(folder / f"{ids[i]}.png"), images[i]), range(len(ids))))


def build_competition(root: Path, solution: Path, limit: int | None) -> None:
    """The competition folder and the held-back solution, written once (in a staging folder, then renamed)."""
    if (root / "sample_submission.csv").exists() and solution.exists():
        return
    if not SOURCE.is_dir():
        raise SystemExit(
            f"Fashion-MNIST is not in {SOURCE}: apt-get install dataset-fashion-mnist (or set FASHION_MNIST)"
        )
    started = time.perf_counter()
    train_images, train_labels = read_split("train")
    test_images, test_labels = read_split("t10k")
    if limit:
        n_test = max(1, round(limit * TEST_SHARE))
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_images, test_labels = test_images[:n_test], test_labels[:n_test]
    train_ids = [f"train_{i:05d}" for i in range(len(train_labels))]
    test_ids = [f"test_{i:05d}" for i in range(len(test_labels))]
    staging = root.with_name(f".{root.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    write_pngs(staging / "train", train_ids, train_images)
    write_pngs(staging / "test", test_ids, test_images)
    pd.DataFrame({"id": train_ids, "label": train_labels}).to_csv(staging / "train.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(staging / "sample_submission.csv", index=False)
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    pd.DataFrame({"id": test_ids, "label": test_labels}).to_csv(solution, index=False)
    print(
        f"wrote {root}: {len(train_ids)} training and {len(test_ids)} test images "
        f"({time.perf_counter() - started:.0f}s); labels held back in {solution}"
    )


# ----------------------------------------------------------------------------- the run


def recipe(args: argparse.Namespace) -> Config:
    suffix = f"-{args.limit}" if args.limit else ""
    where = [
        f"data.root=data/fashion-mnist{suffix}",
        f"data.competition=fashion-mnist{suffix}",
        f"name=fashion_mnist{suffix.replace('-', '_')}",
    ]
    return load_config(args.config, where + args.overrides)


def train_folds(config: Config, competition, folds: str) -> tuple[list, float]:
    """Train fold 0 or every fold (finished folds are kept, interrupted ones continued); results and wall time."""
    started = time.perf_counter()
    if folds == "all":
        results = train(config, competition, "all", resume=True)
    elif fold_state(run_dir(config.name), 0) == "finished":
        print("fold 0: finished already, kept")
        results = []
    else:
        results = train(config, competition, 0, resume=fold_state(run_dir(config.name), 0) == "interrupted")
    return results, time.perf_counter() - started


def compare_seeds(config: Config, competition, n_seeds: int, solution: Path, tta: bool, args) -> None:
    """N seeds over the same 5 folds against one, and hill climbing over the seed runs against their mean."""
    started = time.perf_counter()
    train_seeds(config, competition, args.config, args.overrides, n_seeds, "all", resume=True)
    train_minutes = (time.perf_counter() - started) / 60
    averaged = predict(config, competition, tta=tta)  # each seed's sub-run, then the mean over seeds per fold
    seeds = [str(folder) for folder in seed_dirs(run_dir(config.name)).values()]
    rows = []
    for label, runs, method, hill in (
        ("1 seed (the first)", seeds[:1], "mean", None),
        (f"{n_seeds} seeds, mean per fold", [str(run_dir(config.name))], "mean", None),
        (f"mean of the {n_seeds} seed runs", seeds, "mean", None),
        (f"hill climb over the {n_seeds} seed runs", seeds, "hill", None),
        ("hill climb, chosen on folds 1-4", seeds, "hill", HillOptions(holdout_folds=[0])),
    ):
        name = f"{config.name}-{method}-{len(runs)}{'-holdout' if hill else ''}"
        result = ensemble(config, competition, runs, name=name, force=True, method=method, hill=hill)
        held = result.climb.holdout.value if result.climb and result.climb.holdout else None
        rows.append((label, result.oof_score, held, score_submission(result.path, solution)))
    print(
        f"\nFashion-MNIST, {len(averaged.seeds)} seeds x {len(averaged.folds)} folds, {train_minutes:.0f} min training"
    )
    print(f"{'':42} {'OOF acc':>8} {'fold 0 held out':>16} {'test acc':>9}")
    for label, oof, held, test in rows:
        print(f"{label:42} {oof:8.4f} {'' if held is None else f'{held:.4f}':>16} {test:9.4f}")
    print("(the hill climb's OOF accuracy is optimistic: it chose its weights on those rows)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--folds", choices=["0", "all"], default="0", help="one model (fold 0) or every fold")
    parser.add_argument("--tta", action="store_true", help="predict with the views of predict.tta")
    parser.add_argument("--seeds", type=int, help="train every fold under N seeds; compare with 1 seed, hill vs mean")
    parser.add_argument("--limit", type=int, help="use the first N training images (and N/6 test images)")
    parser.add_argument("--config", type=Path, default=CONFIG)
    add_overrides(parser, "config override (repeatable), e.g. train.epochs=12")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="where data/, folds/, runs/ go")
    args = parser.parse_args()

    args.config = args.config.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    config = recipe(args)
    root = Path(config.data.root)
    solution = root.with_name(f"{root.name}-solution.csv")
    build_competition(root, solution, args.limit)
    competition = load_competition(config.data)
    write_folds(config, competition)
    if args.seeds:
        compare_seeds(config, competition, args.seeds, solution, args.tta, args)
        return

    started = time.perf_counter()
    results, train_seconds = train_folds(config, competition, args.folds)
    predict_start = time.perf_counter()
    predicted = predict(config, competition, tta=args.tta)
    submission = ensemble(config, competition)
    predict_seconds = time.perf_counter() - predict_start
    accuracy = score_submission(submission.path, solution)

    print(
        f"\nFashion-MNIST: {len(competition.train)} training / {len(competition.test)} test images, "
        f"{config.model.name} {config.model.kwargs or ''}, folds {', '.join(map(str, predicted.folds))}, "
        f"views {', '.join(predicted.views)}"
    )
    for r in results:
        print(
            f"  fold {r.fold} ({r.status}): {r.seconds / 60:.1f} min of epochs, best epoch {r.best_epoch}, "
            f"val accuracy {r.val_accuracy:.4f}"
        )
    print(
        f"training {train_seconds / 60:.1f} min, prediction and submission {predict_seconds / 60:.1f} min, "
        f"in all {(time.perf_counter() - started) / 60:.1f} min"
    )
    print(f"CV accuracy (OOF) {predicted.oof_score:.4f}   test accuracy {accuracy:.4f}   -> {submission.path}")


if __name__ == "__main__":
    main()
