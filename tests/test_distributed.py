"""Data-parallel training: `comp train --devices 2` on the CPU (gloo) writes once, from rank 0, and validates
every row once."""

import os
from collections import Counter

import pandas as pd
import pytest
import torch
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from safetensors.torch import load_file
from typer.testing import CliRunner

from comp.augment import ModelInput
from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import load_folds
from comp.device import amp_dtype
from comp.models.factory import create_model
from comp.training.distributed import ShardSampler, shard_batch
from comp.training.loaders import create_loaders
from comp.training.loop import evaluate

runner = CliRunner()
# 32 images in 3 folds: fold 0 validates on 11 rows, shared 6 + 5 by two processes.
# Loader workers as a real run has them (auto): each process starts its own.
OVERRIDES = [*TINY_RUN, *on_competition("shapes"), "folds.k=3", "train.num_workers=auto"]
TINY = sets(*OVERRIDES)

# Loaded by every Python process started with the hook folder on PYTHONPATH (the torchrun workers):
# each says that it started, then logs every file it puts in place (comp writes atomically: os.replace).
LOG_WRITES = """
import os
log_path, rank = os.environ["COMP_TEST_WRITES"], os.environ.get("RANK", "-")
with open(log_path, "a") as log:
    log.write(f"{rank} started\\n")
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    with open(log_path, "a") as log:
        log.write(f"{rank} {dst}\\n")
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
"""


@pytest.mark.parametrize(("n", "count"), [(11, 2), (10, 3), (3, 3)])
def test_validation_shares_hold_every_row_once(n, count):
    shares = [list(ShardSampler(n, position, count)) for position in range(count)]
    assert sum(shares, []) == list(range(n))  # in order: gathered logits line up with the rows


def test_each_process_takes_an_equal_share_of_every_batch():
    assert [shard_batch(list(range(8)), position, 2) for position in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.fixture
def shapes(project):
    write_csv_competition(project / "data/shapes", n_classes=4, per_class=8)
    assert runner.invoke(app, ["folds", *TINY]).exit_code == 0
    return project


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "3"], "does not split evenly over 3 processes"),
        (["--devices", "2", "--set", "train.sync_bn=true"], "train.sync_bn needs CUDA"),
    ],
)
def test_what_every_process_would_refuse_is_refused_before_launching(shapes, args, message):
    result = runner.invoke(app, ["train", "--fold", "0", *TINY, *args])
    assert result.exit_code == 1 and message in " ".join(result.output.split())
    assert not (shapes / "runs/shapes/fold0").exists()


@pytest.mark.slow
def test_two_processes_write_once_from_rank_0_and_validate_like_one(shapes, tmp_path, monkeypatch, capfd):
    hook, writes = tmp_path / "hook", tmp_path / "writes.log"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LOG_WRITES)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("COMP_TEST_WRITES", str(writes))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    result = runner.invoke(app, ["train", "--fold", "0", "--devices", "2", *TINY])
    printed = capfd.readouterr().out  # the workers write to the terminal directly
    assert result.exit_code == 0, result.output + printed

    log = [line.split(" ", 1) for line in writes.read_text().splitlines()]
    assert sorted(rank for rank, what in log if what == "started") == ["0", "1"]
    run_files = [(rank, os.path.basename(path)) for rank, path in log if "runs/shapes" in path]
    assert {rank for rank, _ in run_files} == {"0"}
    counts = Counter(name for _, name in run_files)
    assert counts["best.safetensors"] == counts["last.pt"] == counts["metrics.csv"] == counts["summary.json"] == 1
    assert printed.count("fold 0 done") == 1  # one report, not one per process

    # A single process evaluating the saved weights on all validation rows gets the same metrics.
    folder = shapes / "runs/shapes/fold0"
    config = load_config("configs/default.yaml", OVERRIDES)
    competition = load_competition(config.data)
    model = create_model(config.model, len(competition.classes))
    model.load_state_dict(load_file(folder / "best.safetensors"))
    _, val_loader = create_loaders(config, competition, load_folds(config, competition), 0)
    assert len(val_loader.dataset) == 11
    cpu = torch.device("cpu")
    single = evaluate(
        model, val_loader, ModelInput.of(model, cpu), amp_dtype(cpu, config.train.amp), config.train.monitor
    )
    row = pd.read_csv(folder / "metrics.csv").iloc[0]
    assert single["val_accuracy"] == row["val_accuracy"]
    assert single["val_loss"] == pytest.approx(row["val_loss"], rel=1e-5)

    # last.pt of a data-parallel fold continues in one process.
    monkeypatch.delenv("PYTHONPATH")
    resumed = runner.invoke(app, ["train", "--fold", "0", "--resume", "--force", *TINY, "--set", "train.epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    assert list(pd.read_csv(folder / "metrics.csv")["epoch"]) == [1, 2]
