"""`comp train --fold all --parallel N`: folds side by side in their own processes, a failed one resumed later."""

import json
import os

import pandas as pd
import pytest
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.errors import CompError
from comp.training.parallel import choose_gpus, device_slots, parse_gpus, train_arguments

runner = CliRunner()
# Three folds over two processes, two epochs (the crash below comes in the second), a checkpoint after each;
# loader workers as a real run has them (auto).
TINY = sets(
    *TINY_RUN,
    *on_competition("shapes"),
    "folds.k=3",
    "train.epochs=2",
    "train.checkpoint_seconds=0",
    "train.num_workers=auto",
)

# Loaded by every Python process started with the hook folder on PYTHONPATH: the process training fold 1
# crashes when it writes the second epoch's metrics.csv (after epoch 1 was committed to last.pt).
CRASH_FOLD_1_IN_EPOCH_2 = """
import os, sys
if sys.argv[1:4] == ["train", "--fold", "1"]:
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("metrics.csv") and os.path.exists(dst):
            raise RuntimeError("injected failure in fold 1, epoch 2")
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def test_slots_give_each_process_its_own_gpu_and_cores():
    slots = device_slots(4, [0, 1, 2, 3], list(range(16)), visible=None)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert sorted(core for s in slots for core in s.cores) == list(range(16))  # dealt out, none twice
    assert all(s.env["OMP_NUM_THREADS"] == "4" for s in slots)


def test_slots_translate_gpu_numbers_through_the_parents_visible_devices():
    slots = device_slots(4, [1, 3], list(range(4)), visible="4,5,6,7")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["5", "7", "5", "7"]  # two folds per GPU


def test_cpu_slots_share_the_cores():
    two = device_slots(2, [], [0, 1], visible=None)
    assert [(s.device, s.cores, s.env) for s in two] == [
        ("cpu", [0], {"OMP_NUM_THREADS": "1"}),
        ("cpu", [1], {"OMP_NUM_THREADS": "1"}),
    ]
    three = device_slots(3, [], [0, 1], visible=None)
    assert all(s.cores is None and s.env == {"OMP_NUM_THREADS": "1"} for s in three)


@pytest.mark.parametrize("text", ["0,0", "a", "", "-1"])
def test_bad_gpu_lists_are_refused(text):
    with pytest.raises(CompError, match="--gpus"):
        parse_gpus(text)


def test_gpus_that_are_not_there_are_refused(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert choose_gpus(None, "auto") == []  # no GPU: processes on the CPU
    with pytest.raises(CompError, match="0 GPU"):
        choose_gpus([0], "auto")


def test_fold_processes_get_the_same_config_and_flags():
    assert train_arguments(2, "configs/x.yaml", ["train.lr=0.1", "name=a"], force=False, resume=True) == [
        "train",
        "--fold",
        "2",
        "--config",
        "configs/x.yaml",
        "--set",
        "train.lr=0.1",
        "--set",
        "name=a",
        "--resume",
    ]


def test_parallel_spreads_the_folds_of_fold_all_only(project):
    result = runner.invoke(app, ["train", "--fold", "0", "--parallel", "2", *TINY])
    assert result.exit_code == 2 and "--devices alone trains one fold" in flat(result.output)


@pytest.mark.slow
def test_parallel_folds_go_on_past_a_failed_one_which_resumes_afterwards(project, tmp_path, monkeypatch):
    write_csv_competition(project / "data/shapes", n_classes=4, per_class=8)
    assert runner.invoke(app, ["folds", *TINY]).exit_code == 0
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_FOLD_1_IN_EPOCH_2)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("COLUMNS", "200")
    run = project / "runs/shapes"

    failed = runner.invoke(app, ["train", "--fold", "all", "--parallel", "2", *TINY])
    output = flat(failed.output)
    assert failed.exit_code == 1, output
    assert "fold 1 failed" in output and "RuntimeError: injected failure in fold 1, epoch 2" in output
    assert "Fold(s) 1 failed" in output and "--resume" in output and "Traceback" not in output
    for k in (0, 2):  # the others finished
        assert (run / f"fold{k}/summary.json").exists()
        assert list(pd.read_csv(run / f"fold{k}/metrics.csv")["epoch"]) == [1, 2]
    assert not (run / "fold1/summary.json").exists()
    assert list(pd.read_csv(run / "fold1/metrics.csv")["epoch"]) == [1]  # epoch 1 committed, epoch 2 lost
    assert "RuntimeError: injected failure" in (run / "logs/fold1.log").read_text()
    finished = {k: (run / f"fold{k}/summary.json").read_bytes() for k in (0, 2)}

    monkeypatch.delenv("PYTHONPATH")
    refused = runner.invoke(app, ["train", "--fold", "all", "--parallel", "2", *TINY])
    assert refused.exit_code == 1 and "--resume" in refused.output  # an interrupted fold is not retrained silently
    resumed = runner.invoke(app, ["train", "--fold", "all", "--parallel", "2", "--resume", *TINY])
    output = flat(resumed.output)
    assert resumed.exit_code == 0, output
    assert "fold 0: finished already, skipped" in output and "fold 2: finished already, skipped" in output
    assert {k: (run / f"fold{k}/summary.json").read_bytes() for k in (0, 2)} == finished
    assert list(pd.read_csv(run / "fold1/metrics.csv")["epoch"]) == [1, 2]
    assert json.loads((run / "fold1/summary.json").read_text())["status"] == "resumed"
    assert [r["epoch"] for r in json.loads((run / "fold1/run.json").read_text())["resumes"]] == [1]
