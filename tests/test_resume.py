"""Training that survives being killed: exact resume, the fold loop's protections, reproducible and recorded runs."""

import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, TINY_RUN, on_competition, sets, write_csv_competition
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

import comp.training.loop
import comp.training.state
from comp.augment import BATCH_PRESETS
from comp.augment_batch import BatchAugment
from comp.cli import app
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import write_folds
from comp.errors import CompError
from comp.runs import fold_state, run_dir
from comp.training.fold import train

# EMA, a phase switch at epoch 2, dropout, mixup and random augmentation: every random stream there is.
# 4 batches an epoch; last.pt is written after batch 2 of each epoch and at every epoch's end.
# Loader workers as a real run has them (auto).
TINY = [
    *TINY_RUN,
    *on_competition("tiny"),
    "train.batch_size=4",
    "train.epochs=3",
    "train.num_workers=auto",
    "train.ema=true",
    "train.ema_decay=0.9",
    "aug.phase1=light",
    "aug.phase2=strong",
    "aug.phase2_epoch=2",
    "model.drop_rate=0.3",
    "train.mixup_alpha=0.4",
    "train.checkpoint_every_steps=2",
    "train.checkpoint_seconds=0",
]
runner = CliRunner()


def make_tiny(project):
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=8)
    config = config_with()
    write_folds(config, load_competition(config.data))


@pytest.fixture
def tiny(project):
    make_tiny(project)
    return project


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, trained once in a folder of its own: (metrics.csv, best weights)."""
    return train_uninterrupted(tmp_path_factory.mktemp("straight"))


def train_uninterrupted(folder):
    """The tiny run trained without a break in `folder` (on one thread): (metrics.csv, best weights)."""
    shutil.copytree(REPO / "comp/configs", folder / "configs")
    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(folder)
    torch.set_num_threads(1)
    try:
        make_tiny(folder)
        run()
        return metrics(), load_file("runs/tiny/fold0/best.safetensors")
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


def config_with(*overrides):
    return load_config("configs/default.yaml", [*TINY, *overrides])


def run(*overrides, fold=0, **kwargs):
    config = config_with(*overrides)
    return train(config, load_competition(config.data), fold, **kwargs)


def cli(*args):
    return runner.invoke(app, ["train", *sets(*TINY), *args])


def metrics(fold=0):
    return pd.read_csv(f"runs/tiny/fold{fold}/metrics.csv")


def assert_same_training(reference):
    """Fold 0 has the reference's metrics.csv values (timing aside) and bit-identical best weights."""
    reference_metrics, reference_weights = reference
    pd.testing.assert_frame_equal(
        metrics().drop(columns="seconds"), reference_metrics.drop(columns="seconds"), check_exact=True
    )
    weights = load_file("runs/tiny/fold0/best.safetensors")
    assert weights.keys() == reference_weights.keys()
    assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)


def interrupt_after_checkpoints(monkeypatch, n, *overrides, fold=0):
    """The process dies right after writing its n-th last.pt (a deterministic kill)."""
    real, calls = comp.training.state.save_state, []

    def save_then_die(path, state):
        real(path, state)
        calls.append(path)
        if len(calls) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(comp.training.state, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(*overrides, fold=fold)
    monkeypatch.setattr(comp.training.state, "save_state", real)


# ----------------------------------------------------------------------------- exact resume


def test_two_identical_runs_give_identical_metrics_and_weights(tiny, straight):
    run()
    assert_same_training(straight)


@pytest.mark.parametrize("checkpoints", [1, 2, 5])  # mid-epoch 1; end of epoch 1 (phase switch next); mid-epoch 3
def test_resume_after_any_checkpoint_equals_the_uninterrupted_run(tiny, straight, monkeypatch, checkpoints):
    interrupt_after_checkpoints(monkeypatch, checkpoints)
    assert fold_state(run_dir(config_with().name), 0) == "interrupted"
    (result,) = run(resume=True)
    assert result.status == "resumed"
    assert_same_training(straight)


# ----------------------------------------------------------------------------- checkpoints by time


def count_writes(monkeypatch) -> dict[str, list[int]]:
    """Spies on the fold's files: each write's epoch (last.pt: its position's; metrics.csv: its last row's)."""
    writes = {"metrics.csv": [], "last.pt": [], "best.safetensors": []}
    save_state, save_weights = comp.training.state.save_state, comp.training.state.save_weights
    write_csv = comp.training.state.write_csv

    def metrics_spy(path, rows):
        writes["metrics.csv"].append(int(rows["epoch"].iloc[-1]))
        write_csv(path, rows)

    def state_spy(path, state):
        writes["last.pt"].append(state["position"]["epoch"])
        save_state(path, state)

    def weights_spy(weights, path, classes, epoch):
        writes["best.safetensors"].append(epoch)
        save_weights(weights, path, classes, epoch)

    monkeypatch.setattr(comp.training.state, "save_state", state_spy)
    monkeypatch.setattr(comp.training.state, "save_weights", weights_spy)
    monkeypatch.setattr(comp.training.state, "write_csv", metrics_spy)
    return writes


def best_epoch_written(fold=0) -> int:
    with safe_open(f"runs/tiny/fold{fold}/best.safetensors", framework="pt") as f:
        return int(f.metadata()["epoch"])


def test_epochs_shorter_than_checkpoint_seconds_are_checkpointed_once_at_the_end_with_the_best_weights(
    tiny, straight, monkeypatch
):
    """Under the default, tiny epochs pass no checkpoint until the last: metrics.csv still gets every epoch, and the
    best weights, kept as a copy from the epoch they were best in, are the ones written at once in the straight run."""
    best_epoch = int(straight[0]["val_loss"].idxmin()) + 1
    assert best_epoch < 3  # training went on after the best epoch: the live weights at the end are not the best
    writes = count_writes(monkeypatch)
    run("train.checkpoint_seconds=3600", "train.checkpoint_every_steps=null")
    assert writes == {"metrics.csv": [1, 2, 3], "last.pt": [3], "best.safetensors": [best_epoch]}
    assert_same_training(straight)


def test_a_checkpoint_between_epochs_carries_the_best_weights_found_since_the_last_one(tiny, straight, monkeypatch):
    """Killed after the checkpoint in the middle of epoch 2 (none at epoch 1's end): best.safetensors was written with
    it, from epoch 1, so the files on disk agree; resuming (with a checkpoint every epoch now) trains as if nothing
    had happened."""
    interrupt_after_checkpoints(monkeypatch, 2, "train.checkpoint_seconds=3600")
    position = torch.load("runs/tiny/fold0/last.pt", weights_only=True)["position"]
    assert (position["epoch"], position["batch"], position["best_epoch"]) == (1, 2, 1)
    assert best_epoch_written() == 1
    (result,) = run(resume=True)
    assert result.status == "resumed"
    assert_same_training(straight)


def test_checkpoints_wait_for_checkpoint_seconds_to_pass_since_the_last(tiny, monkeypatch):
    """With a clock that moves 3 s at each reading and train.checkpoint_seconds=5, the ends of epochs 2 and 4 write
    checkpoints, and the last epoch's end always does."""
    clock = iter(range(0, 1000, 3))  # read at the fold's start, at each epoch's end and at each checkpoint
    monkeypatch.setattr(comp.training.state, "monotonic", lambda: next(clock))
    writes = count_writes(monkeypatch)
    run("train.epochs=5", "train.checkpoint_seconds=5", "train.checkpoint_every_steps=null")
    assert writes["last.pt"] == [2, 4, 5]


@pytest.mark.parametrize("background", [True, False], ids=["written-on-a-thread", "written-at-once"])
def test_a_checkpoint_that_cannot_be_written_stops_training_and_the_one_before_resumes_exactly(
    tiny, straight, monkeypatch, background
):
    """Checkpoints reach the disk on a thread while training goes on (as on a GPU), or at once (on the CPU). The third
    (mid-epoch 2) meets a full disk: the command stops with an error naming last.pt, no traceback; last.pt is still
    the second one, whole (the end of epoch 1), and resuming from it trains as if nothing had happened."""
    monkeypatch.setattr(comp.training.state, "writes_in_background", lambda device: background)
    real, saves, epoch_two_stepped = torch.save, [], threading.Event()
    real_step = comp.training.loop.optimizer_step

    def step(trainer, number):
        real_step(trainer, number)
        if number > 4:  # 4 steps an epoch
            epoch_two_stepped.set()

    monkeypatch.setattr(comp.training.loop, "optimizer_step", step)

    def save_until_the_disk_fills(state, path):
        saves.append(path)
        if len(saves) == 2 and background:  # written once training has moved the weights it was taken from
            assert epoch_two_stepped.wait(timeout=60)
        if len(saves) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(state, path)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    failed = cli("--fold", "0")
    monkeypatch.setattr(torch, "save", real)
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    message = " ".join(failed.output.split())
    assert "Cannot write runs/tiny/fold0/last.pt: No space left on device" in message
    assert "The previous last.pt, if any, is unchanged" in message
    position = torch.load("runs/tiny/fold0/last.pt", weights_only=True)["position"]
    assert (position["epoch"], position["batch"]) == (1, 0)
    assert not list(Path("runs/tiny/fold0").glob(".*.tmp"))  # the failed write left no temporary file

    resumed = cli("--fold", "0", "--resume")
    assert resumed.exit_code == 0 and "resuming after epoch 1" in resumed.output, resumed.output
    assert_same_training(straight)


def test_training_batches_are_augmented_on_the_device_by_phase_and_validation_batches_never(tiny, monkeypatch):
    """aug.device is on by default: every training batch above (light, then strong from epoch 2) goes through its
    phase's BatchAugment once, each from a seed of its own; the validation batches do not."""
    real, calls = BatchAugment.__call__, []

    def spy(self, images, seed):
        calls.append((self.ops, len(images), seed))
        return real(self, images, seed)

    monkeypatch.setattr(BatchAugment, "__call__", spy)
    run()
    assert [ops for ops, _, _ in calls] == [BATCH_PRESETS["light"]] * 4 + [BATCH_PRESETS["strong"]] * 8
    assert {size for _, size, _ in calls} == {4} and len({seed for *_, seed in calls}) == 12


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_equals_the_uninterrupted_run(tiny, straight):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the threads the uninterrupted run had
    command = [sys.executable, "-m", "comp", "train", "--fold", "0", *sets(*TINY)]
    training_seconds = straight[0]["seconds"].sum()
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    last = tiny / "runs/tiny/fold0/last.pt"
    for attempt in range(4):  # a loaded machine may finish before the kill: retry, aiming earlier
        shutil.rmtree(tiny / "runs/tiny", ignore_errors=True)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not last.exists() and process.poll() is None:  # training has begun
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.7 * training_seconds / 2**attempt))
        process.send_signal(signal.SIGKILL)
        if process.wait() == -signal.SIGKILL and fold_state(run_dir(config_with().name), 0) == "interrupted":
            break
    else:
        pytest.fail(f"the training process always finished before it was killed (seed {seed})")
    position = torch.load(last, weights_only=True)["position"]
    resumed = cli("--fold", "0", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming after epoch {position['epoch']}" in resumed.output, f"seed {seed}"
    assert_same_training(straight)


# ----------------------------------------------------------------------------- the fold loop


def test_fold_all_skips_finished_resumes_interrupted_and_refuses_without_resume(tiny, monkeypatch):
    run("train.epochs=1", fold=0)
    interrupt_after_checkpoints(monkeypatch, 2, "train.epochs=1", fold=1)

    refused = cli("--fold", "all", "--set", "train.epochs=1")
    assert refused.exit_code == 1 and "Fold 1 of run 'tiny' was interrupted" in refused.output
    assert "fold 0: finished already, skipped" in refused.output and "--resume" in refused.output
    resumed = cli("--fold", "all", "--resume", "--set", "train.epochs=1")
    assert resumed.exit_code == 0, resumed.output
    table = resumed.output[resumed.output.index("Folds") :]
    assert "│ 0    │ skipped" in table and "│ 1    │ resumed" in table
    assert resumed.output.strip().splitlines()[-1] == "Results saved to runs/tiny"

    again = cli("--fold", "0", "--set", "train.epochs=1")
    assert again.exit_code == 1 and "already trained" in again.output and "--force" in again.output


def test_changed_config_is_refused_on_resume_and_continued_with_force(tiny, monkeypatch):
    interrupt_after_checkpoints(monkeypatch, 3)  # mid-epoch 2
    with pytest.raises(CompError) as refused:
        run("train.lr=0.0005", "train.epochs=4", resume=True)
    assert "train.epochs: 3 -> 4; train.lr: 0.001 -> 0.0005" in refused.value.message
    assert fold_state(run_dir(config_with().name), 0) == "interrupted"  # untouched

    run("train.lr=0.0005", "train.epochs=4", resume=True, force=True)
    assert list(metrics()["epoch"]) == [1, 2, 3, 4]
    record = json.loads((tiny / "runs/tiny/fold0/run.json").read_text())
    (resume,) = record["resumes"]
    assert resume["changes"] == ["train.epochs: 3 -> 4", "train.lr: 0.001 -> 0.0005"] and resume["epoch"] == 1
    assert record["config"]["train"]["lr"] == 0.0005 and record["finished"]
    # The one-cycle peak is now the new lr: continuing never exceeds it.
    assert metrics()["lr"].iloc[2:].max() <= 0.0005


def test_a_finished_fold_continues_with_more_epochs_under_resume_force(tiny):
    run("train.epochs=2", "train.scheduler=none")
    before = metrics()
    run("train.epochs=3", "train.scheduler=none", resume=True, force=True)
    after = metrics()
    assert list(after["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(after.iloc[:2].drop(columns="seconds"), before.drop(columns="seconds"))


def test_resume_with_nothing_to_resume_says_so_and_trains_from_scratch(tiny, straight):
    result = cli("--fold", "0", "--resume")
    assert result.exit_code == 0, result.output
    assert "fold 0: nothing to resume" in result.output and "training from scratch" in result.output
    assert_same_training(straight)


def test_a_pickle_with_code_placed_as_last_pt_is_refused_without_running_it(tiny):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').close()",))

    folder = tiny / "runs/tiny/fold0"
    folder.mkdir(parents=True)
    torch.save({"model": Boom()}, folder / "last.pt")
    result = cli("--fold", "0", "--resume")
    assert result.exit_code == 1 and "Cannot load runs/tiny/fold0/last.pt safely" in result.output
    assert "Traceback" not in result.output and not (tiny / "pwned").exists()
    (folder / "last.pt").write_bytes(pickle.dumps({"model": Boom()}, protocol=2))
    assert cli("--fold", "0", "--resume").exit_code == 1 and not (tiny / "pwned").exists()


# ----------------------------------------------------------------------------- records


def test_each_fold_records_config_versions_git_and_fold_file_hash(tiny):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "configs"], check=True)
    subprocess.run([*git, "commit", "-qm", "configs"], check=True)
    run("train.epochs=1")
    record = json.loads((tiny / "runs/tiny/fold0/run.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert record["git"] == {"commit": head, "dirty": True}  # data/, folds/ and runs/ are untracked
    assert record["config"] == config_with("train.epochs=1").to_dict()
    assert set(record["versions"]) >= {"torch", "timm", "albumentations", "numpy"} and all(record["versions"].values())
    assert record["fold_file"] == "folds/tiny_k2_s42.csv" and len(record["fold_file_sha256"]) == 64


def test_a_changed_fold_file_is_refused(tiny):
    run("train.epochs=1")
    fold_file = tiny / "folds/tiny_k2_s42.csv"
    table = pd.read_csv(fold_file)
    swapped = [table.index[table["fold"] == 0][0], table.index[table["fold"] == 1][0]]
    table.loc[swapped, "fold"] = [1, 0]  # two images trade folds: same ids, another split
    table.to_csv(fold_file, index=False)
    with pytest.raises(CompError, match=r"folds/tiny_k2_s42\.csv changed since fold 0 of run 'tiny'"):
        run("train.epochs=1", fold=1)
    assert not (tiny / "runs/tiny/fold1").exists()


def test_tensorboard_missing_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an absent package looks like
    with pytest.raises(CompError, match=r"pip install 'comp\[tensorboard\]'"):
        run("train.tensorboard=true")
    assert not (tiny / "runs").exists()
