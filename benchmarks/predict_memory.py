"""Prediction at scale: peak memory for 1k vs 20k test images, and throughput with 1 vs N TTA views.

Not part of the test suite. It builds a competition of generated 32x32 PNGs (a 20k-image test set,
cached in --workdir) and a run of the reference model (resnet18, untrained weights: speed and memory do
not depend on them), then measures, side by side in one run:

- peak RSS of `comp predict` (one fold, the real code path, each case in a fresh process) on the
  first 1k and on all 20k test images, alternating the two, --repeats times;
- images/s of the real prediction stream (decode, transform, forward, softmax) with 1 view and with
  N views, alternating, after a warm-up, --repeats times.

Figures are printed as medians with their spread (min..max) and as ratios of paired measurements.

    python benchmarks/predict_memory.py [--repeats 3] [--workdir /tmp/comp-bench-predict]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from comp.runs import run_dir

REPO = Path(__file__).resolve().parents[1]
N_CLASSES, N_TRAIN, N_TEST, SMALL = 10, 100, 20_000, 1_000
VIEW_SETS = {
    "1 view": ["identity"],
    "4 views": ["identity", "hflip", "vflip", "hvflip"],
    "9 views (13 copies)": None,
}  # None: every view `auto` tries


def build_data(root: Path) -> None:
    """train.csv + train/ (N_TRAIN images), test/ (N_TEST images), sample submissions of SMALL and N_TEST ids."""
    if (root / f"sample_{N_TEST}.csv").exists():
        return
    rng = np.random.default_rng(0)
    for folder in ("train", "test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"tr{i:05d}" for i in range(N_TRAIN)]
    for image_id in ids:
        cv2.imwrite(str(root / "train" / f"{image_id}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    pd.DataFrame({"id": ids, "label": [i % N_CLASSES for i in range(N_TRAIN)]}).to_csv(root / "train.csv", index=False)
    test_ids = [f"te{i:05d}" for i in range(N_TEST)]
    for image_id in test_ids:
        cv2.imwrite(str(root / "test" / f"{image_id}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for n in (SMALL, N_TEST):
        pd.DataFrame({"id": test_ids[:n], "label": 0}).to_csv(root / f"sample_{n}.csv", index=False)


# The memory run uses a small model (what is measured is the data path, and 20k images must pass quickly);
# the speed run uses the reference case's resnet18, whose forward pass TTA multiplies.
RUNS = {
    "memory": ["model.name=resnet18_cifar", "model.kwargs={widths: [8, 16, 32, 64]}", "data.image_size=16"],
    "speed": ["model.name=resnet18"],
}


def config_for(workdir: Path, run: str, n_test: int):
    from comp.config import load_config

    return load_config(
        REPO / "comp/configs/default.yaml",
        [
            f"name=bench-{run}",
            f"data.root={workdir / 'data'}",
            "data.competition=bench",
            "data.image_size=32",
            f"data.sample_submission=sample_{n_test}.csv",
            "folds.k=2",
            "predict.batch_size=256",
            *RUNS[run],
        ],
    )


def build_run(workdir: Path, run: str) -> None:
    """A run whose fold 0 is finished, laid out as `comp train` leaves it."""
    import torch
    from safetensors.torch import save_file

    from comp.config import save_config
    from comp.data.competition import load_competition, save_classes
    from comp.data.folds import write_folds
    from comp.models.factory import create_model

    config = config_for(workdir, run, N_TEST)
    if (run_dir(config.name) / "fold0/summary.json").exists():
        return
    competition = load_competition(config.data)
    write_folds(config, competition)
    save_classes(competition.classes, run_dir(config.name) / "classes.json")
    save_config(config, run_dir(config.name) / "config.yaml")
    torch.manual_seed(0)
    model = create_model(config.model, len(competition.classes))
    folder = run_dir(config.name) / "fold0"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "best.safetensors"), metadata={"classes": json.dumps(competition.classes)})
    (folder / "summary.json").write_text("{}")


# ----------------------------------------------------------------------------- peak memory (one process per case)


def child(workdir: Path, n_test: int) -> None:
    """Run `comp predict` on n_test images in this process; print its peak RSS and wall time as JSON."""
    from comp.data.competition import load_competition
    from comp.predict import predict

    os.chdir(workdir)
    config = config_for(workdir, "memory", n_test)
    competition = load_competition(config.data)
    started = time.perf_counter()
    predict(config, competition)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"n": n_test, "peak_mb": peak_mb, "seconds": seconds}))


def measure_memory(workdir: Path, repeats: int) -> list[dict]:
    rows = []
    for r in range(repeats):
        for n in (SMALL, N_TEST) if r % 2 == 0 else (N_TEST, SMALL):  # alternate the order
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), "--workdir", str(workdir)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "repeat": r})
    return rows


# ----------------------------------------------------------------------------- throughput (one process, side by side)


def measure_throughput(workdir: Path, repeats: int, n_images: int) -> list[dict]:
    from rich.progress import Progress

    from comp.data.competition import load_competition
    from comp.streaming import Streamer, open_run
    from comp.tta import AUTO_CANDIDATES

    os.chdir(workdir)
    config = config_for(workdir, "speed", SMALL)
    competition = load_competition(config.data)
    paths = competition.test["path"].iloc[:n_images]
    run = open_run(config)
    rows = []
    with Progress(transient=True) as progress:
        stream = Streamer(run, config, progress)
        for _ in stream(0, paths[:256], ["identity"], "warm-up"):
            pass
        for r in range(repeats):
            names = list(VIEW_SETS) if r % 2 == 0 else list(VIEW_SETS)[::-1]
            for name in names:
                views = VIEW_SETS[name] or AUTO_CANDIDATES
                started = time.perf_counter()
                for _ in stream(0, paths, views, name):
                    pass
                rows.append({"views": name, "images_per_s": n_images / (time.perf_counter() - started), "repeat": r})
    return rows


# ----------------------------------------------------------------------------- report


def spread(values) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}..{max(values):.3g})"


def report(memory: list[dict], speed: list[dict]) -> None:
    mem = pd.DataFrame(memory)
    small, large = (mem[mem["n"] == n].sort_values("repeat") for n in (SMALL, N_TEST))
    table_mb = N_TEST * N_CLASSES * 8 / 2**20
    print(f"\nPeak RSS of `comp predict` (one fold, fresh process each, {len(small)} repeats): median (min..max)")
    print(f"  {SMALL:>6} test images: {spread(small['peak_mb'])} MB   ({spread(SMALL / small['seconds'])} images/s)")
    print(f"  {N_TEST:>6} test images: {spread(large['peak_mb'])} MB   ({spread(N_TEST / large['seconds'])} images/s)")
    ratio = large["peak_mb"].to_numpy() / small["peak_mb"].to_numpy()
    growth = large["peak_mb"].to_numpy() - small["peak_mb"].to_numpy()
    print(
        f"  ratio 20k/1k: {spread(ratio)}; growth {spread(growth)} MB for {N_TEST - SMALL} more images "
        f"({spread(growth * 2**20 / (N_TEST - SMALL))} bytes per image; the output table is {table_mb:.1f} MB)"
    )

    speed = pd.DataFrame(speed)
    one = speed[speed["views"] == "1 view"].sort_values("repeat")["images_per_s"].to_numpy()
    print(
        f"\nImages/s of the prediction stream (decode + transform + all views in one forward pass), "
        f"{len(one)} repeats: median (min..max)"
    )
    for name in VIEW_SETS:
        rates = speed[speed["views"] == name].sort_values("repeat")["images_per_s"].to_numpy()
        copies = 13 if VIEW_SETS[name] is None else len(VIEW_SETS[name])
        cost = one / rates  # time per image relative to one view, paired by repeat
        print(
            f"  {name:<20} {spread(rates)} images/s; time per image {spread(cost)} x one view "
            f"(forward passes: {copies} x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/comp-bench-predict"))
    parser.add_argument("--speed-images", type=int, default=512)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.child:
        child(workdir, args.child)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build_data(workdir / "data")
    os.chdir(workdir)
    for run in RUNS:
        build_run(workdir, run)
    print(f"data and run ready in {workdir} ({time.perf_counter() - started:.0f}s)")
    memory = measure_memory(workdir, args.repeats)
    speed = measure_throughput(workdir, args.repeats, args.speed_images)
    report(memory, speed)


if __name__ == "__main__":
    main()
