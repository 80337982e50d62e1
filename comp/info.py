"""`comp info`: what a config amounts to before (and while) it trains: model size, inputs, data, folds (per seed
for a run of several seeds) and the CV."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.text import Text

from comp.config import Config
from comp.data.competition import Competition, Label, read_csv_text
from comp.models.factory import count_parameters, create_model, normalization, split_parameters
from comp.runs import FoldState, fold_state, read_cv, read_seeds, run_dir, seed_run_name


@dataclass
class ModelInfo:
    name: str
    total: int
    trainable: int
    head: int  # what a frozen-backbone phase trains
    max_params: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class SeedInfo:
    """One seed of a run trained with several (`comp train --seeds N`): its folds, its CV."""

    fold_states: dict[int, FoldState]
    cv_score: float | None  # in the run's cv_metric (cv.json "seeds")


@dataclass
class RunInfo:
    name: str
    run_dir: Path
    model: ModelInfo
    image_size: int
    class_counts: dict[Label, int]  # in model index order
    fold_file: Path
    fold_file_exists: bool
    fold_states: dict[int, FoldState]
    cv_metric: str | None  # the metric cv.json records its score in
    cv_score: float | None  # a run of several seeds: the seed-averaged one
    seeds: dict[int, SeedInfo] = field(default_factory=dict)  # empty: a run of one seed

    def __rich__(self) -> Group:
        m = self.model
        limit = Text()
        if m.max_params is not None:
            limit.append(f", limit {m.max_params:,}")
            if m.total > m.max_params:
                limit.append(" exceeded", style="bold red")
        counts = ", ".join(f"{label}: {n}" for label, n in self.class_counts.items())
        return Group(
            Text.assemble(
                (self.name, "bold"),
                f" ({self.run_dir}): {m.name}, {m.total:,} parameters ({m.trainable:,} trainable, head {m.head:,})",
                limit,
            ),
            Text(f"input {self.image_size}x{self.image_size}, mean {_rounded(m.mean)}, std {_rounded(m.std)}"),
            Text(f"{len(self.class_counts)} classes, {sum(self.class_counts.values())} images ({counts})"),
            Text(f"fold file {self.fold_file}: {'exists' if self.fold_file_exists else 'missing (run comp folds)'}"),
            *self._progress(),
        )

    def _progress(self) -> list[Text]:
        """The folds' states and the CV; for a run of several seeds, each seed's, then the seed-averaged CV."""
        if not self.seeds:
            return [Text(_folds(self.fold_states) + _cv(self.cv_metric, self.cv_score, "OOF"))]
        lines = [
            Text(f"seed {seed}: " + _folds(info.fold_states) + _cv(self.cv_metric, info.cv_score, "OOF"))
            for seed, info in self.seeds.items()
        ]
        if self.cv_score is not None:
            mean = f"OOF, mean of seeds {', '.join(map(str, self.seeds))}"
            lines.append(Text(_cv(self.cv_metric, self.cv_score, mean).removeprefix("; ")))
        return lines


def _folds(states: dict[int, FoldState]) -> str:
    return ", ".join(f"fold {k} {state}" for k, state in states.items())


def _cv(metric: str | None, value: float | None, rows: str) -> str:
    return "" if value is None else f"; CV {metric} ({rows}) {value:.4f}"


def describe_model(config: Config, num_classes: int) -> ModelInfo:
    """Parameter counts and normalisation of the configured model, built without downloading weights.

    The size limit is reported, not enforced, so an oversized model can still be inspected.
    """
    offline = config.model.model_copy(update={"pretrained": False, "weights": None, "max_params": None})
    model = create_model(offline, num_classes)
    total, trainable = count_parameters(model)
    head = sum(p.numel() for p in split_parameters(model)[0])
    mean, std = normalization(model)
    return ModelInfo(config.model.name, total, trainable, head, config.model.max_params, mean, std)


def fold_count(config: Config) -> int:
    """Folds in the fold file when it exists (it is what training uses), folds.k otherwise."""
    if config.fold_file.exists():
        return int(read_csv_text(config.fold_file)["fold"].astype(int).max()) + 1
    return config.folds.k


def describe_run(config: Config, competition: Competition) -> RunInfo:
    targets = competition.targets(competition.train["id"], competition.classes)  # 0/1 per tag when multilabel
    counts = targets.sum(0) if targets.ndim == 2 else np.bincount(targets, minlength=len(competition.classes))
    folder = run_dir(config.name)
    cv = read_cv(folder)
    folds = range(fold_count(config))
    seeds = {
        seed: SeedInfo(
            {k: fold_state(run_dir(seed_run_name(config.name, seed)), k) for k in folds},
            cv.get("seeds", {}).get(str(seed), {}).get("oof"),
        )
        for seed in read_seeds(folder)
    }
    return RunInfo(
        name=config.name,
        run_dir=folder,
        model=describe_model(config, len(competition.classes)),
        image_size=config.data.image_size,
        class_counts={c: int(n) for c, n in zip(competition.classes, counts, strict=True)},  # images holding it
        fold_file=config.fold_file,
        fold_file_exists=config.fold_file.exists(),
        fold_states={k: fold_state(folder, k) for k in folds},
        cv_metric=cv.get("metric"),
        cv_score=cv.get("oof"),
        seeds=seeds,
    )


def _rounded(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
