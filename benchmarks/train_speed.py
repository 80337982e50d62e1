"""Training speed: comp's real training loop against the model alone on tensors in memory.

comp's loop is `comp.training.fold.train` on fold 0 of a generated competition (PNGs, or JPEGs with
--format jpg; --size px square, resized to data.image_size as comp does) for --epochs epochs:
data read from disk (or decoded once into the in-memory cache), augmented, validated every
epoch, logged and checkpointed. The model alone is the same model, optimizer, schedule,
precision and memory format stepping on one batch already in memory. Two ratios:

  train-only  comp's training images/s / the model alone's forward+backward+step images/s
  same work   the model alone doing exactly comp's arithmetic (its training steps and its
              validation forward passes) / comp's time: the share of the hardware's limit reached

comp's time is its whole run (start, decoding, epochs, checkpoints); with --steady, its epochs after the
first: an (epochs + 1)-epoch run minus a 1-epoch run, timed back to back, as a long run meets them.
--formats adds the model alone in each explicit precision x memory format and a ratio against the fastest.

Each --variant is another comp loop, run interleaved with the rest, e.g.
  --variant data.cache=off  --variant train.num_workers=1  --variant "train.channels_last=true data.cache=on"

    python benchmarks/train_speed.py                      # about 3 minutes on a quiet 2-core CPU
    python benchmarks/train_speed.py --images 12000 --epochs 2 --formats  # the reference case, against every format
    python benchmarks/train_speed.py --format jpg --size 256 --images 5000 \
        --set model.name=resnet50 --set data.image_size=224  # benchmarks/gpu_check.sh's 224 px case
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import dataclass

from common import (
    ModelAlone,
    argument_parser,
    begin,
    bench_config,
    clock_of,
    interleaved,
    prepare,
    print_table,
    ratios,
    scratch_project,
    spread,
    write_competition,
)

from comp.config import Config
from comp.device import default_num_workers, resolve_device
from comp.training.fold import train

# The config values the model alone depends on: two loops that agree on them share one reference.
MODEL_KEYS = (
    "model",
    "data.image_size",
    "train.batch_size",
    "predict.batch_size",
    "train.amp",
    "train.channels_last",
    "train.compile",
    "train.device",
    "train.optimizer",
)


@dataclass
class Loop:
    name: str
    config: Config
    reference: str  # the name of its model-alone case


def workers(config: Config) -> int:
    setting = config.train.num_workers
    return default_num_workers(resolve_device(config.train.device)) if setting == "auto" else setting


def model_key(config: Config) -> str:
    tree = config.to_dict()
    values = []
    for key in MODEL_KEYS:
        value = tree
        for part in key.split("."):
            value = value[part]
        values.append(f"{key}={value}")
    return "; ".join(values)


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="training images generated (fold 0 trains on 4/5)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--format", choices=["png", "jpg"], default="png", help="the generated images' format")
    parser.add_argument("--size", type=int, default=32, help="the generated images' side in pixels")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'KEY=VALUE ...'",
        help="another comp loop with these overrides (repeatable)",
    )
    parser.add_argument(
        "--steady",
        action="store_true",
        help="time comp's epochs after the first: an (epochs + 1)-epoch run minus a 1-epoch run, back to back",
    )
    parser.add_argument(
        "--formats",
        action="store_true",
        help="also time the model alone in each precision x memory format, and compare every loop with the best",
    )
    args = parser.parse_args()
    begin("Training speed: comp's loop / the model alone", args)

    with scratch_project(args.keep) as project:
        root = write_competition(project / "data", args.images, 64, args.size, suffix=f".{args.format}")
        base = [f"train.epochs={args.epochs}", f"data.image_suffix=.{args.format}", *args.overrides]
        variants = {"default": []} | {v: shlex.split(v) for v in args.variant}
        loops, references = [], {}
        for name, extra in variants.items():
            config = bench_config(root, base + extra, args.config)
            key = model_key(config)
            references.setdefault(key, (f"model {len(references) + 1}", config))
            loops.append(Loop(name, config, references[key][0]))
        formats = []  # the model alone in each explicit format (--formats)
        for amp, channels_last in [(a, c) for a in (False, True) for c in (False, True)] if args.formats else []:
            explicit = [f"train.amp={amp}", f"train.channels_last={channels_last}"]
            config = bench_config(root, [*base, *explicit], args.config)
            name = f"model {'amp' if amp else 'fp32'} {'channels_last' if channels_last else 'contiguous'}"
            references.setdefault(model_key(config), (name, config))
            formats.append(references[model_key(config)][0])
        clock = clock_of(args)
        if args.clock == "cpu" and any(workers(loop.config) for loop in loops):
            parser.error("--clock cpu counts this process alone: set train.num_workers=0 in every loop")
        competition, folds = prepare(loops[0].config)
        n_val = int((folds["fold"] == 0).sum())
        n_train = len(folds) - n_val

        def steps(config: Config) -> int:  # comp's epochs drop the last partial batch
            return n_train // config.train.batch_size * args.epochs

        def images(config: Config) -> int:
            return steps(config) * config.train.batch_size

        print(
            f"fold 0: {n_train} training images, {n_val} validation images ({args.size} px {args.format.upper()}s), "
            f"{args.epochs} epoch(s)"
        )

        def timed_train(config: Config) -> float:
            start = clock()
            train(config, competition, fold=0, force=True)
            return clock() - start

        def comp_loop(config: Config):
            if not args.steady:
                return lambda: timed_train(config)
            longer = config.model_copy(update={"train": config.train.model_copy(update={"epochs": args.epochs + 1})})
            first = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
            return lambda: timed_train(longer) - timed_train(first)

        models = {
            name: ModelAlone(config, len(competition.classes), clock=clock) for name, config in references.values()
        }
        train_seconds: dict[str, list[float]] = {name: [] for name in models}

        def model_alone(name: str, config: Config):
            model = models[name]
            model.train_seconds(1)  # warm-up

            def run() -> float:
                seconds = model.train_seconds(steps(config))
                train_seconds[name].append(seconds)
                return seconds + sum(model.eval_seconds(n_val) for _ in range(args.epochs))

            return run

        cases = {f"comp {loop.name}": comp_loop(loop.config) for loop in loops}
        cases |= {name: model_alone(name, config) for name, config in references.values()}
        seconds = interleaved(cases, args.rounds)

    for name, model in models.items():
        print(f"{name}: {model.describe()}")
    rows = []
    for loop in loops:
        comp = seconds[f"comp {loop.name}"]
        rows.append(
            (
                loop.name,
                spread([images(loop.config) / s for s in comp]),
                spread([images(loop.config) / s for s in train_seconds[loop.reference]]),
                spread(ratios(train_seconds[loop.reference], comp)),
                spread(ratios(seconds[loop.reference], comp)),
                loop.reference,
            )
        )
    print_table(
        f"Training images/s ({args.clock} clock), median (min..max) of {args.rounds} rounds",
        rows,
        ("comp loop", "comp img/s", "model img/s", "train-only ratio", "same-work ratio", "reference"),
    )
    if formats:
        best = min(formats, key=lambda name: statistics.median(seconds[name]))
        print_table(
            f"Against the model alone in its fastest format here ({best}: {models[best].describe()})",
            [(loop.name, spread(ratios(seconds[best], seconds[f"comp {loop.name}"]))) for loop in loops],
            ("comp loop", "same-work ratio to the best format"),
        )


if __name__ == "__main__":
    main()
