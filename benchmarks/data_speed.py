"""Data pipeline speed: decode + augment images/s of comp's training loader alone, per worker count.

The loader is comp's own (`comp.training.loaders.create_loaders`, fold 0, phase-1 augmentation), iterated for
one epoch without a model, with the in-memory cache on (decode once, augment every epoch) and
off (decode every time), for every worker count from 0 to the number of usable cores. Before the
table, the cost of each stage per image on one thread: what the workers have to hide.

    python benchmarks/data_speed.py                       # about 2 minutes on a quiet 2-core CPU
    python benchmarks/data_speed.py --set aug.phase1=strong --workers 0 1 2 4
"""

from __future__ import annotations

import time

import cv2
import torch
from common import argument_parser, begin, bench_config, interleaved, prepare, print_table, scratch_project, spread
from common import write_competition as write_png_competition
from torch.utils.data import default_collate

from comp.augment import ModelInput, create_train_transform
from comp.data.competition import read_image
from comp.device import usable_cpu_count
from comp.models.factory import create_model
from comp.training.loaders import create_loaders


def per_image_microseconds(fn, n: int) -> float:
    """CPU time per call: on one thread, the work itself, little disturbed by a busy machine."""
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e6


def stage_costs(config, competition, folds, n: int = 300) -> list[tuple[str, str]]:
    """CPU microseconds per image of each stage, on one thread."""
    paths = competition.train["path"].to_numpy()[:n]
    images = [read_image(p) for p in paths]
    augment = create_train_transform(config.aug.phase1, config.data.image_size)
    cached = config.model_copy(
        update={
            "data": config.data.model_copy(update={"cache": "on"}),
            "train": config.train.model_copy(update={"num_workers": 0}),
        }
    )
    dataset = create_loaders(cached, competition, folds, 0)[0].dataset
    n = min(n, len(dataset))
    rows = [dataset[(i, 1, i)] for i in range(config.train.batch_size)]
    batch = default_collate(rows)[0]
    inputs = ModelInput.of(create_model(config.model, len(competition.classes)), torch.device("cpu"))
    threads, opencv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)  # as in a DataLoader worker; the CPU clock would also count OpenCV's waiting threads
    try:
        costs = [
            ("decode (read_image)", per_image_microseconds(lambda i: read_image(paths[i]), n)),
            (
                "augment (aug.phase1, seeded, fitted to image_size)",
                per_image_microseconds(lambda i: augment(images[i], i), n),
            ),
            (
                "comp's dataset item from the cache (augment + tensor)",
                per_image_microseconds(lambda i: dataset[(i, 1, i)], n),
            ),
            ("collate into a uint8 batch", per_image_microseconds(lambda i: default_collate(rows), 20) / len(rows)),
            ("normalise the batch (ModelInput)", per_image_microseconds(lambda i: inputs(batch), 20) / len(rows)),
        ]
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(opencv_threads)
    return [(name, f"{us:.0f}") for name, us in costs]


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="training images generated (fold 0 reads 4/5)")
    parser.add_argument("--workers", type=int, nargs="+", default=list(range(usable_cpu_count() + 1)))
    args = parser.parse_args()
    begin("Data pipeline speed: comp's training loader without a model", args)

    with scratch_project(args.keep) as project:
        root = write_png_competition(project / "data", args.images, n_test=64)
        config = bench_config(root, args.overrides, args.config)
        competition, folds = prepare(config)
        print_table(
            "Per image, one thread (CPU microseconds)", stage_costs(config, competition, folds), ("stage", "us")
        )

        loaders, build_seconds = {}, {}
        for cache in ("on", "off"):
            for workers in args.workers:
                case = config.model_copy(
                    update={
                        "data": config.data.model_copy(update={"cache": cache}),
                        "train": config.train.model_copy(update={"num_workers": workers}),
                    }
                )
                start = time.perf_counter()
                loader = create_loaders(case, competition, folds, 0)[0]
                build_seconds[cache] = time.perf_counter() - start
                next(iter(loader))  # start the workers
                loaders[f"cache {cache}, {workers} workers"] = loader

        def epoch_rate(loader):
            def run() -> float:
                start, n = time.perf_counter(), 0
                for images, _ in loader:
                    n += len(images)
                return n / (time.perf_counter() - start)

            return run

        print(
            f"\nfold 0 epoch: {len(next(iter(loaders.values())).dataset)} images; building the loader took "
            f"{build_seconds['on']:.1f}s with the cache (decoding every image once), "
            f"{build_seconds['off']:.1f}s without"
        )
        rates = interleaved({name: epoch_rate(loader) for name, loader in loaders.items()}, args.rounds)

    baseline = rates[next(iter(rates))]
    rows = [
        (name, spread(values), spread([v / b for v, b in zip(values, baseline, strict=True)]))
        for name, values in rates.items()
    ]
    print_table(
        f"Images/s of one epoch, median (min..max) of {args.rounds} rounds",
        rows,
        ("loader", "images/s", f"/ {next(iter(rates))}"),
    )


if __name__ == "__main__":
    main()
