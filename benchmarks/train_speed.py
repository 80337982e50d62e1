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

--paired interleaves instead: comp's loop trains, and after each of its steps the model alone in the same format
takes one step, timed apart and left out of comp's time; after each epoch, the model alone's validation passes (and,
with --formats, every format timed against it, in turn). Each of comp's epochs after the first is compared with the
model alone's epoch of the same work, estimated from the steps taken among comp's own; a run's ratio takes those
epochs together (an epoch that writes a checkpoint counts by its share of them). This machine's speed swings
by a quarter within a minute: whole runs side by side catch different swings, steps a step apart the same ones.
CPU only: on a GPU each of the model alone's steps would wait for comp's, and comp's loop runs ahead. And work comp
does on other threads or processes (DataLoader workers, checkpoints written in the background) slows the model
alone's steps beside it too, so --paired flatters a loop that has such work; comp's default on a CPU has none.

Each --variant is another comp loop, run interleaved with the rest, e.g.
  --variant data.cache=off  --variant train.num_workers=1  --variant "train.channels_last=true data.cache=on"

    python benchmarks/train_speed.py                      # about 3 minutes on a quiet 2-core CPU
    python benchmarks/train_speed.py --images 12000 --epochs 2 --formats  # the reference case, against every format
    python benchmarks/train_speed.py --images 12000 --epochs 5 --paired --formats --rounds 2  # step by step
    python benchmarks/train_speed.py --format jpg --size 256 --images 5000 \
        --set model.name=resnet50 --set data.image_size=224  # benchmarks/gpu_check.sh's 224 px case
"""

from __future__ import annotations

import shlex
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

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
from comp.training.reporter import FoldStart, Reporter, create_reporters

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


class StepPairs(Reporter):
    """--paired: the model alone in comp's format (`reference`) takes one training step after each of comp's, outside
    comp's time, and after each epoch runs its validation passes; each of comp's epochs is then compared with the
    model alone's epoch of the same work, estimated from the steps taken among comp's own.

    With formats (`in_turn`, the reference among them), each epoch's end also times every format against the others
    (`format_steps` steps each, in turn, and its validation passes). Stepped among comp's steps instead, another
    format's step left comp's next one slower (caches of the other format's weights): comp would pay for the
    instrument."""

    def __init__(
        self,
        reference: str,
        in_turn: dict[str, ModelAlone],
        sizes: tuple[int, int],
        clock: Callable[[], float],
        format_steps: int = 8,
    ):
        self.reference, self.in_turn, self.clock, self.format_steps = reference, in_turn, clock, format_steps
        self.steps, self.n_val = sizes  # an epoch's training steps, validation images
        self.comp: list[float] = []  # per epoch: comp's seconds, the model alone's left out
        self.model: list[float] = []  # per epoch: the reference's epoch of the same work, stepped among comp's
        self.formats: dict[str, list[float]] = {name: [] for name in in_turn}  # per epoch: each one's, in turn
        self.step_seconds: list[float] = []
        self.spent = 0.0  # the instrument's own wall-clock seconds so far

    def comp_clock(self) -> float:
        """The wall clock as comp would read it without the instrument: its checkpoints by time
        (train.checkpoint_seconds) then come after as much of comp's own work as in a plain run."""
        return time.monotonic() - self.spent

    @contextmanager
    def instrument(self) -> Iterator[None]:
        """Count the block's wall time as the instrument's (self.clock may be CPU time: comp_clock needs wall)."""
        start = time.monotonic()
        yield
        self.spent += time.monotonic() - start

    def start_fold(self, start: FoldStart) -> None:
        self.mark, self.aside = self.clock(), 0.0

    def end_batch(self) -> None:
        with self.instrument():
            start = self.clock()
            self.step_seconds.append(self.in_turn[self.reference].train_seconds(1))
            self.aside += self.clock() - start

    def end_epoch(self, row: dict, improved: bool) -> None:
        self.comp.append(self.clock() - self.mark - self.aside)
        with self.instrument():
            self.model.append(self.epoch_seconds(self.in_turn[self.reference], self.step_seconds))
            self.step_seconds = []
            if len(self.in_turn) > 1:
                steps: dict[str, list[float]] = {name: [] for name in self.in_turn}
                for _ in range(self.format_steps):
                    for name, model in self.in_turn.items():
                        steps[name].append(model.train_seconds(1))
                for name, model in self.in_turn.items():
                    self.formats[name].append(self.epoch_seconds(model, steps[name]))
        self.mark, self.aside = self.clock(), 0.0

    def epoch_seconds(self, model: ModelAlone, step_seconds: list[float]) -> float:
        return statistics.mean(step_seconds) * self.steps + model.eval_seconds(self.n_val)

    def relative(self, name: str, to: str) -> list[float]:
        """Per epoch after the first: format `name`'s seconds / format `to`'s, timed in turn."""
        return [a / b for a, b in zip(self.formats[name][1:], self.formats[to][1:], strict=True)]

    def span_ratio(self) -> float:
        """The epochs after the first together (the checkpoints of some of them included): model alone / comp."""
        return sum(self.model[1:]) / sum(self.comp[1:])

    def ratios(self, against: str | None = None) -> list[float]:
        """Per epoch after the first (the first warms up): the model alone's seconds / comp's; in format `against`
        (None: the reference's), scaled from the reference by their seconds timed in turn."""
        scale = self.relative(against, self.reference) if against else [1.0] * len(self.comp[1:])
        return [m * r / c for m, r, c in zip(self.model[1:], scale, self.comp[1:], strict=True)]


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
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument(
        "--steady",
        action="store_true",
        help="time comp's epochs after the first: an (epochs + 1)-epoch run minus a 1-epoch run, back to back",
    )
    timing.add_argument(
        "--paired",
        action="store_true",
        help="the model alone steps between comp's steps; comp's epochs after the first compared (--epochs 2 or more)",
    )
    parser.add_argument(
        "--formats",
        action="store_true",
        help="also time the model alone in each precision x memory format, and compare every loop with the best",
    )
    args = parser.parse_args()
    if args.paired and args.epochs < 2:
        parser.error("--paired compares the epochs after the first: set --epochs 2 or more")
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
        if args.paired and any(resolve_device(loop.config.train.device).type != "cpu" for loop in loops):
            parser.error("--paired is for CPUs: on a GPU the model alone's steps would stop comp's loop running ahead")
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
        if args.paired:
            return report_paired(loops, models, formats, competition, (n_train, n_val), args.rounds, clock)
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


def report_paired(
    loops: list[Loop],
    models: dict[str, ModelAlone],
    formats: list[str],
    competition,
    sizes: tuple[int, int],
    rounds: int,
    clock: Callable[[], float],
) -> None:
    """--paired: every loop trained `rounds` times with the model alone stepping between its steps; then the
    per-epoch ratios. sizes: fold 0's training and validation images."""
    n_train, n_val = sizes
    first = {}  # one model per distinct format: the default's reference is often one of the explicit formats
    for name, model in models.items():
        first.setdefault(model.describe(), name)
    alias = {name: first[model.describe()] for name, model in models.items()}
    for name in first.values():
        models[name].train_seconds(1)  # warm-up
    format_models = {alias[name]: models[alias[name]] for name in formats}
    runs: dict[str, list[StepPairs]] = {loop.name: [] for loop in loops}

    def paired(loop: Loop) -> Callable[[], float]:
        def run() -> float:  # one training run; its figure for the round's line: the median of its epochs' ratios
            steps = n_train // loop.config.train.batch_size  # comp's epochs drop the last partial batch
            in_turn = {**format_models, alias[loop.reference]: models[alias[loop.reference]]}
            pairs = StepPairs(alias[loop.reference], in_turn, (steps, n_val), clock)
            with mock.patch("comp.training.state.monotonic", pairs.comp_clock):
                train(loop.config, competition, fold=0, force=True, reporters=[*create_reporters(loop.config), pairs])
            runs[loop.name].append(pairs)
            print(f"  comp {loop.name}, epochs 2 on: " + " ".join(f"{r:.3f}" for r in pairs.ratios()), flush=True)
            return statistics.median(pairs.ratios())

        return run

    interleaved({f"comp {loop.name}": paired(loop) for loop in loops}, rounds)

    def pooled(values) -> list[float]:  # over every run's epochs after the first
        return [x for per_epoch in values for x in per_epoch]

    for name in first.values():
        print(f"{name}: {models[name].describe()}")
    rows = []
    for loop in loops:
        images = runs[loop.name][0].steps * loop.config.train.batch_size
        comp = pooled(pairs.comp[1:] for pairs in runs[loop.name])
        model = pooled(pairs.model[1:] for pairs in runs[loop.name])
        rows.append(
            (
                loop.name,
                spread([images / s for s in comp]),
                spread([images / s for s in model]),
                spread(pooled(pairs.ratios() for pairs in runs[loop.name])),
                spread([pairs.span_ratio() for pairs in runs[loop.name]]),
                str(len(comp)),
                alias[loop.reference],
            )
        )
    print_table(
        "Step by step (--paired): training images / an epoch's seconds (validation included), median (min..max)",
        rows,
        ("comp loop", "comp img/s", "model img/s", "same-work ratio", "runs' ratio", "epochs", "reference"),
    )
    if format_models:
        every_run = [pairs for per_loop in runs.values() for pairs in per_loop]
        anchor = next(iter(format_models))  # in every run

        def against(to: str) -> dict[str, list[float]]:
            return {name: pooled(pairs.relative(name, to) for pairs in every_run) for name in format_models}

        best = min(format_models, key=lambda name: statistics.median(against(anchor)[name]))
        print_table(
            f"Each format's epoch of work / the fastest's ({best}), timed in turn at each epoch's end",
            [(name, spread(ratios)) for name, ratios in against(best).items()],
            ("model alone", "seconds ratio"),
        )
        print_table(
            f"Against the model alone in its fastest format here ({best}: {models[best].describe()})",
            [(loop.name, spread(pooled(pairs.ratios(best) for pairs in runs[loop.name]))) for loop in loops],
            ("comp loop", "same-work ratio to the best format"),
        )


if __name__ == "__main__":
    main()
