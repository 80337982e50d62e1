"""The run folder and the submissions folder: the one module that knows where a run's files live.

A run folder, trained or blended, exposes the same three things: oof.parquet, test.parquet and
cv.json, so a blend is just another run. A trained run also has one folder per fold:

    runs/<name>/config.yaml, classes.json, cv.json, oof.parquet, test.parquet
    runs/<name>/fold<k>/best.safetensors, last.pt, metrics.csv, run.json, summary.json, oof.parquet, test.parquet
    runs/<name>/fold<k>/tb/ (train.loggers tensorboard), logs/fold<k>.log (`comp train --parallel`)
    runs/<name>/report/*.png (`comp evaluate`), report/lr_find.{png,csv} (`comp lr-find`)
    runs/<name>/predictions/<folder>.csv (`comp predict --images`), trackers.json (W&B/MLflow -cv run ids)
    runs/<name>/members.json (a blend's members), features/ and fold<k>/probe.json (`comp probe`)
    runs/<name>/duplicates.csv, report/duplicates.png (`comp duplicates`)
    runs/<name>/pseudo_labels.csv (`comp pseudo`: test ids and labels for data.pseudo_labels)

A run trained with several seeds over the same folds (`comp train --seeds N`) holds one sub-run per
seed, each a trained run of its own, and the seed-averaged tables on top:

    runs/<name>/seeds.json (the run's seeds, written before the first one trains)
    runs/<name>/seed<s>/config.yaml, cv.json, oof.parquet, test.parquet, fold<k>/...
    runs/<name>/cv.json (each seed's score and the averaged one), oof.parquet, test.parquet
    submissions/<name>.csv (+ .json), submissions/ledger.csv

A prediction table is `id` plus one probability column per class named `str(label)`, stored as
parquet with the class list, the task (comp.tasks: for multilabel the columns are independent
per-tag probabilities) and the TTA views in its metadata, so it can never be read against other
classes. Tables are aligned by id, never by row order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from comp.config import Config
from comp.data.competition import column_name
from comp.errors import CompError
from comp.io import read_parquet_metadata, write_json, write_parquet

RUNS = Path("runs")
SUBMISSIONS = Path("submissions")
LEDGER = SUBMISSIONS / "ledger.csv"
KERNELS = Path("kernels")  # kernels/<name>/: a run packaged as a Kaggle notebook (comp kernel)

FoldState = Literal["new", "interrupted", "finished"]


# ----------------------------------------------------------------------------- folders


def run_dir(name: str) -> Path:
    return RUNS / name


def kernel_dir(name: str) -> Path:
    return KERNELS / name


def fold_dir(run: Path, fold: int) -> Path:
    return run / f"fold{fold}"


def seed_run_name(name: str, seed: int) -> str:
    """The run name of one seed of a several-seed run: its folder is runs/<name>/seed<s>."""
    return f"{name}/seed{seed}"


def seed_config(config: Config, seed: int) -> Config:
    """The config of one seed's sub-run: its own folder, its own train.seed, the same folds."""
    train = config.train.model_copy(update={"seed": seed})
    return config.model_copy(update={"name": seed_run_name(config.name, seed), "train": train})


def seed_dirs(run: Path) -> dict[int, Path]:
    """The run's seed sub-runs by seed, in seed order (empty: a run trained with one seed)."""
    return _numbered_dirs(run, "seed")


def read_seeds(run: Path) -> list[int]:
    """The seeds a several-seed run is trained with (seeds.json); empty: a single-seed run."""
    path = run / "seeds.json"
    return json.loads(path.read_text())["seeds"] if path.exists() else []


def write_seeds(run: Path, seeds: list[int]) -> None:
    if seeds:
        write_json(run / "seeds.json", {"seeds": seeds})
    else:
        (run / "seeds.json").unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the files every run exposes


def cv_file(run: Path) -> Path:
    """cv.json: the CV score, the TTA views, the task's fitted decisions; a blend's weights."""
    return run / "cv.json"


def classes_file(run: Path) -> Path:
    return run / "classes.json"


def config_file(run: Path) -> Path:
    """The resolved config the run was trained (or blended, or probed) with."""
    return run / "config.yaml"


def members_file(run: Path) -> Path:
    """A blend's members, method and weights."""
    return run / "members.json"


def table_file(folder: Path, kind: Literal["oof", "test"]) -> Path:
    """A prediction table of a run or of one of its folds."""
    return folder / f"{kind}.parquet"


def pseudo_labels_path(run: Path) -> Path:
    return run / "pseudo_labels.csv"


def duplicates_files(run: Path) -> tuple[Path, Path]:
    """`comp duplicates`' pair table and its picture of the closest pairs."""
    return run / "duplicates.csv", run / "report" / "duplicates.png"


def _number(folder: Path, prefix: str) -> int | None:
    """n for a folder named <prefix><n>; None for any other name."""
    digits = folder.name.removeprefix(prefix)
    return int(digits) if folder.name.startswith(prefix) and digits.isdigit() else None


def _numbered_dirs(run: Path, prefix: str) -> dict[int, Path]:
    """The folders <prefix><n> in `run` by n, in order."""
    found = {_number(p, prefix): p for p in run.glob(f"{prefix}*") if p.is_dir()}
    return {n: found[n] for n in sorted(n for n in found if n is not None)}


def fold_number(folder: Path) -> int | None:
    """k for a folder named fold<k>; None for any other name."""
    return _number(folder, "fold")


def fold_dirs(run: Path) -> dict[int, Path]:
    """The run's fold folders by fold number, in fold order."""
    return _numbered_dirs(run, "fold")


def fold_state(run: Path, fold: int) -> FoldState:
    folder = fold_dir(run, fold)
    if (folder / "summary.json").exists():
        return "finished"
    if (folder / "last.pt").exists() or (folder / "metrics.csv").exists():
        return "interrupted"
    return "new"


def read_fold_record(run: Path, fold: int) -> dict | None:
    """fold<k>/run.json: what the fold was trained with (config, fold-file hash, versions, resumes); None if absent."""
    path = fold_dir(run, fold) / "run.json"
    return json.loads(path.read_text()) if path.exists() else None


def finished_folds(run: Path) -> list[int]:
    return [k for k in fold_dirs(run) if fold_state(run, k) == "finished"]


def resolve_run(run: str) -> Path:
    """A run name (a folder under runs/) or a path to a run folder, which must hold test predictions."""
    for candidate in (run_dir(run), Path(run)):
        if table_file(candidate, "test").exists():
            return candidate
    raise CompError(
        f"Run '{run}' has no test predictions (looked in {run_dir(run)}/ and {run}/).",
        hint=f"Run `comp predict` for it first, or check the name with `ls {RUNS}/`.",
    )


def read_cv(run: Path) -> dict:
    path = cv_file(run)
    return json.loads(path.read_text()) if path.exists() else {}


def next_submission_path(name: str) -> Path:
    """submissions/<name>.csv, or the next free <name>-2.csv, ... (both the CSV and its JSON must be free)."""
    if name == LEDGER.stem:
        name = f"{LEDGER.stem}-run"
    path, n = SUBMISSIONS / f"{name}.csv", 2
    while path.exists() or path.with_suffix(".json").exists():
        path, n = SUBMISSIONS / f"{name}-{n}.csv", n + 1
    return path


@contextmanager
def staged_outputs(run: Path) -> Iterator[Path]:
    """A scratch folder mirroring `run`: its files replace the run's only when the block succeeds."""
    run.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".predict-", dir=run))
    try:
        yield stage
        files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: (p == cv_file(stage), str(p)))
        for path in files:  # cv.json last: whoever sees the new score finds the new tables
            target = run / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ----------------------------------------------------------------------------- prediction tables


def probability_table(ids, probs: np.ndarray, classes: list) -> pd.DataFrame:
    table = pd.DataFrame(probs, columns=[column_name(c) for c in classes])
    table.insert(0, "id", list(ids))
    return table


def _table_metadata(classes: list, views: list[str], task: str) -> dict[str, str]:
    return {"classes": json.dumps(classes), "views": json.dumps(views), "task": task}


def write_predictions(path: Path, table: pd.DataFrame, classes: list, views: list[str], task: str) -> None:
    write_parquet(path, table, metadata=_table_metadata(classes, views, task))


def read_predictions(path: Path) -> tuple[pd.DataFrame, list]:
    """A prediction table indexed by id, and its class list."""
    if not path.exists():
        raise CompError(f"{path} not found.", hint="Run `comp predict` for that run first.")
    classes = json.loads(read_parquet_metadata(path)["classes"])
    return pd.read_parquet(path).set_index("id"), classes


def read_table_task(path: Path) -> str:
    """The task a prediction table was written for (tables from before tasks were recorded: multiclass)."""
    return read_parquet_metadata(path).get("task", "multiclass")


class TableWriter:
    """A prediction table written to parquet batch by batch, never held whole in memory."""

    ROWS_PER_GROUP = 16384  # rows held before a row group is written: memory stays bounded

    def __init__(self, path: Path, classes: list, views: list[str], task: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = [pa.field("id", pa.string()), *(pa.field(column_name(c), pa.float64()) for c in classes)]
        self.schema = pa.schema(fields, metadata=_table_metadata(classes, views, task))
        self.writer = pq.ParquetWriter(path, self.schema)
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0

    def append(self, ids, probs: np.ndarray) -> None:
        arrays = [pa.array([str(i) for i in ids], pa.string()), *(pa.array(col) for col in probs.T)]
        self.pending.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.pending_rows += len(probs)
        if self.pending_rows >= self.ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending, schema=self.schema))
        self.pending, self.pending_rows = [], 0

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._flush()
        self.writer.close()
