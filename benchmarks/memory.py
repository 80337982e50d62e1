"""Peak memory of `comp train` and `comp predict` as the dataset grows (1k, 10k, 50k generated PNGs).

For each size N a competition of N training and N test images (32x32) is generated; then, each
in a fresh process: fold 0 trained for one epoch with the in-memory cache on and off, and the
trained fold predicting its OOF rows and the N test images. Peak RSS (ru_maxrss) of the process
is reported (DataLoader workers, 0 by default on 2 cores, are not counted). The model is small by default
(its memory is the same at every size; what grows is the data): pass --set model.name=resnet18
for the reference model. benchmarks/predict_memory.py looks closer at prediction alone.

    python benchmarks/memory.py                           # about 5 minutes on a quiet 2-core CPU
    python benchmarks/memory.py --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import argument_parser, begin, bench_config, prepare, print_table, scratch_project, write_competition

SMALL_MODEL = ["model.name=resnet9", "model.kwargs={widths: [8, 16, 32, 64]}"]


def child(task: str, data_root: Path, overrides: list[str], config_path: Path | None) -> None:
    """Train fold 0 or predict in this process; print peak RSS and time as the last line (JSON)."""
    from comp.predict import predict
    from comp.training.fold import train

    config = bench_config(data_root, overrides, config_path)
    competition, _ = prepare(config)
    start = time.perf_counter()
    if task == "train":
        train(config, competition, fold=0, force=True)
    else:
        predict(config, competition)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_mb": peak_mb, "seconds": time.perf_counter() - start}))


def run_child(task: str, data_root: Path, overrides: list[str], config_path: Path | None) -> dict:
    command = [sys.executable, __file__, "--child", task, "--data", str(data_root)]
    command += ["--config", str(config_path.resolve())] if config_path else []
    command += [arg for override in overrides for arg in ("--set", override)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--child", choices=["train", "predict"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.overrides, args.config)
        return
    begin("Peak memory of training and prediction by dataset size", args)

    rows = []
    with scratch_project(args.keep) as project:
        for n in args.sizes:
            start = time.perf_counter()
            root = write_competition(project / f"data{n}", n, n)
            print(f"{n} images: generated {2 * n} PNGs in {time.perf_counter() - start:.0f}s", flush=True)
            model = SMALL_MODEL if args.config is None else []
            base = [*model, "train.epochs=1", f"name=n{n}", f"data.competition=bench{n}", *args.overrides]
            for task, extra in (("train", ["data.cache=on"]), ("train", ["data.cache=off"]), ("predict", [])):
                figures = run_child(task, root, base + extra, args.config)
                label = f"{task} (cache {extra[0].split('=')[1]})" if extra else f"{task} ({n} test + OOF)"
                rows.append((str(n), label, f"{figures['peak_mb']:.0f}", f"{figures['seconds']:.0f}"))
                print(f"  {label}: {rows[-1][2]} MB", flush=True)
    print_table("Peak RSS of the process (MB)", rows, ("images", "run", "peak MB", "seconds"))
    print(
        f"\nmodel: {' '.join(SMALL_MODEL)} unless --config or --set; the cache holds 3 bytes per pixel "
        f"({32 * 32 * 3 / 1024:.0f} KB per 32x32 image)"
    )


if __name__ == "__main__":
    main()
