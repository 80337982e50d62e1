"""A run of several seeds predicted: each seed's sub-run, then the run's tables as the mean over seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.text import Text

from comp.config import Config
from comp.data.competition import (
    Competition,
    check_same_classes,
)
from comp.data.folds import load_folds
from comp.errors import CompError
from comp.predict_run import PredictResult, predict_run, write_run_predictions
from comp.runs import (
    finished_folds,
    probability_table,
    read_predictions,
    read_seeds,
    run_dir,
    seed_config,
    seed_dirs,
    seed_run_name,
    staged_outputs,
    table_file,
)


@dataclass
class SeedsPrediction:
    """A run of several seeds predicted: each seed's own result, and the seed-averaged CV."""

    run_dir: Path
    metric: str
    seeds: dict[int, PredictResult]
    folds: dict[int, float]
    oof_score: float

    def __rich__(self) -> Group:
        lines = [
            Text(f"seed {seed}: CV {self.metric} {result.oof_score:.4f} (views {', '.join(result.views)})")
            for seed, result in self.seeds.items()
        ]
        lines += [
            Text(f"fold {k}: OOF {self.metric} {value:.4f} (mean of the seeds)") for k, value in self.folds.items()
        ]
        seeds = ", ".join(map(str, self.seeds))
        lines.append(Text(f"CV {self.metric} (OOF, mean of seeds {seeds}): {self.oof_score:.4f}  -> {self.run_dir}"))
        return Group(*lines)


def _seed_tables(folder: Path, seeds: dict[int, PredictResult]) -> tuple[list, dict, dict]:
    """Each seed's OOF and test tables (indexed by id), checked to cover the same rows and classes."""
    oof, test, classes = {}, {}, None
    folders = seed_dirs(folder)  # predict_seeds made sure each exists
    for seed in seeds:
        seed_folder = folders[seed]
        oof[seed], oof_classes = read_predictions(table_file(seed_folder, "oof"))
        test[seed], _ = read_predictions(table_file(seed_folder, "test"))
        classes = classes or oof_classes
        check_same_classes(classes, oof_classes, f"Seed run {seed_folder}")
    first = next(iter(seeds))
    for seed in seeds:
        if set(oof[seed].index) != set(oof[first].index):
            raise CompError(
                f"Seeds {first} and {seed} of run {folder} have different trained folds "
                f"({sorted(seeds[first].folds)} and {sorted(seeds[seed].folds)}): their OOF rows cannot be averaged.",
                hint="Train the same folds under every seed: comp train --seeds N --fold all.",
            )
    return classes, oof, test


def predict_seeds(config: Config, competition: Competition, tta: bool = False) -> SeedsPrediction:
    """Predict each seed's sub-run, then write the run's tables: the mean over seeds, row by row (per fold)."""
    folder, metric = run_dir(config.name), config.predict.metric
    seeds = read_seeds(folder)
    untrained = [s for s in seeds if not finished_folds(run_dir(seed_run_name(config.name, s)))]
    if untrained:
        raise CompError(
            f"Seed(s) {', '.join(map(str, untrained))} of run {folder} have no finished fold: the run's "
            f"seeds ({', '.join(map(str, seeds))}, {folder / 'seeds.json'}) cannot be averaged yet.",
            hint=f"Finish training them: comp train --seeds {len(seeds)} (with --resume if interrupted).",
        )
    results = {seed: predict_run(seed_config(config, seed), competition, tta) for seed in seeds}
    classes, oof, test = _seed_tables(folder, results)
    ids = next(iter(oof.values())).index
    mean_oof = np.mean([table.loc[ids].to_numpy() for table in oof.values()], axis=0)
    test_ids = competition.test["id"]
    mean_test = np.mean([table.loc[test_ids].to_numpy() for table in test.values()], axis=0)
    fold_of = load_folds(config, competition).set_index("id")["fold"].reindex(ids).to_numpy()
    by_fold = {
        int(k): probability_table(ids[fold_of == k], mean_oof[fold_of == k], classes) for k in sorted(set(fold_of))
    }
    views = sorted({v for r in results.values() for v in r.views})
    per_seed = {
        str(seed): {"oof": r.oof_score, "folds": {str(k): v for k, v in r.folds.items()}, "views": r.views}
        for seed, r in results.items()
    }
    params = config.predict.metric_params
    with staged_outputs(folder) as stage:
        oof_score, fold_scores, _ = write_run_predictions(
            stage, by_fold, mean_test, competition, classes, views, metric, params, config, seeds=per_seed
        )
    return SeedsPrediction(folder, metric, results, fold_scores, oof_score)
