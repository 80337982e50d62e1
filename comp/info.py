"""`comp info`: what a config amounts to before (and while) it trains: model size, inputs, data, folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comp.config import Config
from comp.data.competition import Competition, Label, read_csv_text
from comp.models.factory import count_parameters, create_model, normalization, split_parameters
from comp.runs import fold_state, read_cv, run_dir


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
class RunInfo:
    run_dir: Path
    model: ModelInfo
    image_size: int
    class_counts: dict[Label, int]  # in model index order
    fold_file: Path
    fold_file_exists: bool
    fold_states: dict[int, str]  # fold -> new | interrupted | finished
    cv_score: float | None


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
    counts = competition.train["label"].value_counts()
    return RunInfo(
        run_dir=run_dir(config.name),
        model=describe_model(config, len(competition.classes)),
        image_size=config.data.image_size,
        class_counts={c: int(counts.get(c, 0)) for c in competition.classes},
        fold_file=config.fold_file,
        fold_file_exists=config.fold_file.exists(),
        fold_states={k: fold_state(run_dir(config.name), k) for k in range(fold_count(config))},
        cv_score=read_cv(run_dir(config.name)).get("oof"),
    )


def info_report(name: str, run: RunInfo) -> list[str]:
    """The lines `comp info` prints (rich markup)."""
    m = run.model
    limit = ""
    if m.max_params is not None:
        limit = f", limit {m.max_params:,}{' [bold red]exceeded[/]' if m.total > m.max_params else ''}"
    counts = ", ".join(f"{label}: {n}" for label, n in run.class_counts.items())
    folds = ", ".join(f"fold {k} {state}" for k, state in run.fold_states.items())
    return [
        f"[bold]{name}[/] ({run.run_dir}): {m.name}, {m.total:,} parameters "
        f"({m.trainable:,} trainable, head {m.head:,}){limit}",
        f"input {run.image_size}x{run.image_size}, mean {_rounded(m.mean)}, std {_rounded(m.std)}",
        f"{len(run.class_counts)} classes, {sum(run.class_counts.values())} images ({counts})",
        f"fold file {run.fold_file}: {'exists' if run.fold_file_exists else 'missing (run comp folds)'}",
        folds + ("" if run.cv_score is None else f"; CV accuracy (OOF) {run.cv_score:.4f}"),
    ]


def _rounded(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
