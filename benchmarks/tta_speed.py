"""Prediction speed: `comp predict` images/s with 1 and with N TTA views, against the model's inference alone.

Setup (not timed): fold 0 of a generated PNG competition is trained for one epoch on a small
training set. Then, interleaved round by round:

  comp 1 view    comp.predict.predict without TTA (the identity view)
  comp N views   comp.predict.predict with TTA, predict.tta = --views
  model 1 view / model N views
                 the model alone doing the same forward passes on tensors in memory: batches of
                 predict.batch_size images, all the views' copies of a batch in one pass

comp's images are the test images plus fold 0's out-of-fold rows (it predicts both); its time
covers reading and decoding the PNGs, sizing and normalising them, the views, averaging and writing the
prediction tables. The TTA cost is comp's N-view time / (N x its 1-view time): 1.05 means 5% over N views.

    python benchmarks/tta_speed.py                        # about 3 minutes on a quiet 2-core CPU
    python benchmarks/tta_speed.py --views identity hflip --images 10000
"""

from __future__ import annotations

import time

from common import (
    ModelAlone,
    argument_parser,
    begin,
    bench_config,
    interleaved,
    prepare,
    print_table,
    ratios,
    scratch_project,
    spread,
    write_competition,
)

from comp.predict import predict
from comp.training.fold import train
from comp.tta import view_copies


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="test images generated")
    parser.add_argument("--train-images", type=int, default=640, help="training images (fold 0 trains one epoch)")
    parser.add_argument("--views", nargs="+", default=["identity", "hflip", "vflip", "hvflip"])
    args = parser.parse_args()
    begin("Prediction speed: comp predict / the model's inference alone", args)

    with scratch_project(args.keep) as project:
        root = write_competition(project / "data", args.train_images, args.images)
        views = "[" + ", ".join(args.views) + "]"
        config = bench_config(root, ["train.epochs=1", f"predict.tta={views}", *args.overrides], args.config)
        competition, folds = prepare(config)
        train(config, competition, fold=0)
        n_oof = int((folds["fold"] == 0).sum())
        images = n_oof + len(competition.test)
        copies = sum(len(view_copies(name)) for name in args.views)
        print(
            f"{images} images per prediction ({n_oof} OOF + {len(competition.test)} test); "
            f"views {views}: {copies} copies of each image"
        )

        def comp_predict(tta: bool):
            def run() -> float:
                start = time.perf_counter()
                predict(config, competition, tta=tta)
                return time.perf_counter() - start

            return run

        model = ModelAlone(config, len(competition.classes))
        model.eval_seconds(config.predict.batch_size, copies)  # warm-up

        def model_alone(n_copies: int):
            return lambda: model.eval_seconds(n_oof, n_copies) + model.eval_seconds(len(competition.test), n_copies)

        seconds = interleaved(
            {
                "comp 1 view": comp_predict(False),
                "comp N views": comp_predict(True),
                "model 1 view": model_alone(1),
                "model N views": model_alone(copies),
            },
            args.rounds,
        )

    print(f"\nmodel: {model.describe()}")
    rows = []
    for label in ("1 view", "N views"):
        comp, alone = seconds[f"comp {label}"], seconds[f"model {label}"]
        rows.append(
            (
                label,
                spread([images / s for s in comp]),
                spread([images / s for s in alone]),
                spread(ratios(alone, comp)),
            )
        )
    print_table(
        f"Prediction images/s, median (min..max) of {args.rounds} rounds (N = {copies} copies)",
        rows,
        ("views", "comp img/s", "model img/s", "comp / model"),
    )
    cost = [n / (copies * one) for n, one in zip(seconds["comp N views"], seconds["comp 1 view"], strict=True)]
    alone = [n / (copies * one) for n, one in zip(seconds["model N views"], seconds["model 1 view"], strict=True)]
    print(f"\nTTA cost, N-view time / (N x 1-view time): comp {spread(cost)}, the model alone {spread(alone)}")


if __name__ == "__main__":
    main()
