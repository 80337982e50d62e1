"""Speed levers inside the training step, measured on the model alone (tensors in memory), side by side.

Each lever is the baseline (the config: by default the issue's reference case, resnet18 on 32x32
images, batch 128, in the precision and memory format comp would choose) with one change:

  channels_last   train.channels_last: the model and batches in channels-last memory format
  bf16            bf16 autocast, whatever comp.device.amp_dtype would choose here
  fp32            no autocast, whatever comp.device.amp_dtype would choose here
  item            a loss.item() after every step: the host synchronisation of per-step logging
  unfused         torch's default per-tensor optimizer update instead of the fused kernel comp picks
  compile         train.compile: torch.compile(model) (compiled once before the rounds, not timed)

    python benchmarks/levers.py                               # about 2 minutes on a quiet 2-core CPU
    python benchmarks/levers.py --levers channels_last bf16 compile --seconds 20
"""

from __future__ import annotations

import time

from common import (
    ModelAlone,
    argument_parser,
    begin,
    bench_config,
    clock_of,
    interleaved,
    print_table,
    ratios,
    spread,
)

LEVERS = {
    "channels_last": (["train.channels_last=true"], {}),
    "bf16": ([], {"dtype": "bfloat16"}),
    "fp32": ([], {"dtype": "none"}),
    "item": ([], {"sync_every_step": True}),
    "unfused": ([], {"fused": False}),
    "compile": (["train.compile=true"], {}),
}


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=["channels_last", "item", "unfused"])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each case in each round")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    begin("Levers of the training step, on the model alone", args)

    clock = clock_of(args)
    models = {}
    for name in ["baseline", *args.levers]:
        overrides, options = LEVERS.get(name, ([], {}))
        start = time.perf_counter()
        models[name] = ModelAlone(
            bench_config("unused", [*args.overrides, *overrides], args.config), args.classes, clock=clock, **options
        )
        models[name].train_seconds(1)  # warm-up (and compilation)
        print(f"{name}: {models[name].describe()}, ready in {time.perf_counter() - start:.0f}s", flush=True)

    def rate(model: ModelAlone):
        steps = model.steps_for(args.seconds)
        return lambda: steps * len(model.images) / model.train_seconds(steps)

    rates = interleaved({name: rate(model) for name, model in models.items()}, args.rounds)
    rows = [
        (name, models[name].describe(), spread(values), spread(ratios(values, rates["baseline"])))
        for name, values in rates.items()
    ]
    print_table(
        f"Training images/s ({args.clock} clock) of the model alone, median (min..max) of {args.rounds} rounds",
        rows,
        ("case", "model", "images/s", "/ baseline"),
    )


if __name__ == "__main__":
    main()
