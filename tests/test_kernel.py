"""Code competitions: `comp kernel` (build, rehearse, push), `comp predict --test-only`, `comp submit --kernel`.

The dependency wheels come from tests/wheelhouse.py: the installed distributions repacked offline,
so the rehearsal's `pip install --no-index` really installs comp and every dependency into a fresh
environment that has only torch and torchvision. What that cannot prove: that the same wheels suit
Kaggle's own image (its Python version and platform), which only a push to Kaggle shows.
Every Kaggle call goes through the real client to tests/fake_kaggle.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, write_folders_competition
from fake_kaggle import KEY, USERNAME
from wheelhouse import build_wheelhouse

from comp.config import load_config
from comp.data.demo import SOLUTION_FILE, score_submission
from comp.errors import CompError
from comp.kaggle.ledger import read_ledger
from comp.kernel.package import create_kernel
from comp.kernel.rehearse import rehearse

pytestmark = pytest.mark.slow  # every test here trains, packages hundreds of MB of wheels, or rehearses

SLUG = "fake-comp"
TINY = [
    "--set", "folds.k=2", "--set", "train.epochs=2", "--set", "train.batch_size=32",
    "--set", "aug.phase1=none", "--set", "train.num_workers=0",
]  # fmt: skip
DEMO = [*TINY, "--set", f"data.competition={SLUG}", "--set", "data.root=data/demo"]


def comp(cwd: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m comp ARGS` in cwd, importing this checkout's comp."""
    environ = (env or dict(os.environ)) | {"COLUMNS": "200"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "comp", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=900
    )
    assert not check or done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and KEY not in done.stdout + done.stderr
    return done


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    build_wheelhouse(folder)
    return folder


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory) -> Path:
    """A project with the demo competition and run `tiny` (2 folds, 2 epochs), predicted."""
    root = tmp_path_factory.mktemp("demo-project")
    shutil.copytree(REPO / "comp/configs", root / "configs")
    comp(root, "download", "demo")
    for step in (["folds"], ["train"], ["predict"]):
        comp(root, *step, *DEMO, "--set", "name=tiny")
    return root


@pytest.fixture
def demo(trained_demo, tmp_path, monkeypatch) -> Path:
    """A copy of the trained demo project, as the working directory."""
    project = tmp_path / "project"
    shutil.copytree(trained_demo, project, symlinks=True)
    monkeypatch.chdir(project)
    return project


def demo_config(*extra: str):
    return load_config("configs/default.yaml", [s for s in DEMO if s != "--set"] + ["name=tiny", *extra])


# ----------------------------------------------------------------------------- the round trip


def test_demo_kernel_is_rehearsed_offline_pushed_and_submitted(demo, wheelhouse, fake, tmp_path):
    home = tmp_path / "home"
    env = fake.env(home)
    kernel = demo / "kernels" / "tiny"

    built = comp(
        demo, "kernel", "tiny", "--wheels", str(wheelhouse), "--rehearse", "--time-limit", "600", *DEMO, env=env
    )
    print(built.stdout)
    assert "comp importable before the install cell: False" in built.stdout
    assert "Rehearsal passed" in built.stdout and fake.calls == []  # a rehearsal uploads nothing

    # The notebook's submission is the run's own: the same labels as `comp predict --test-only` here.
    notebook_csv = kernel / "rehearsal" / "as-is" / "submission.csv"
    rehearsed = notebook_csv.read_bytes()  # the push below builds the kernel folder afresh
    comp(demo, "predict", "--test-only", "tiny", "--out", "local.csv", *DEMO)
    assert pd.read_csv(notebook_csv).equals(pd.read_csv(demo / "local.csv"))
    score = score_submission(notebook_csv, demo / "data/demo" / SOLUTION_FILE)
    print(f"held-back accuracy of the rehearsal's submission.csv: {score:.4f}")
    assert score > 0.3  # ten classes: chance is 0.1

    # The replaced test set: dropped ids are gone, renamed ones carry their image's prediction.
    replaced = pd.read_csv(kernel / "rehearsal" / "replaced" / "submission.csv", dtype=str).set_index("id")
    as_is = pd.read_csv(notebook_csv, dtype=str).set_index("id")
    renamed = {i: i.removeprefix("rehearsal_") for i in replaced.index if i.startswith("rehearsal_")}
    assert renamed and len(replaced) < len(as_is) and not set(renamed) & set(as_is.index)
    originals = [renamed.get(i, i) for i in replaced.index]
    assert list(replaced["label"]) == list(as_is.loc[originals, "label"])
    truth = pd.read_csv(demo / "data/demo" / SOLUTION_FILE, dtype=str).set_index("id")["label"]
    print(
        f"held-back accuracy on the replaced test set: {(replaced['label'] == truth.loc[originals].values).mean():.4f}"
    )

    # Packaged: the weights and records prediction needs, never last.pt, data or credentials.
    manifest = json.loads((kernel / "dataset" / "comp-kernel.json").read_text())
    assert sorted(manifest["files"].values()) == sorted(
        [f"runs/tiny/{n}" for n in ("classes.json", "config.yaml", "cv.json")]
        + [f"runs/tiny/fold{k}/{n}" for k in (0, 1) for n in ("best.safetensors", "summary.json")]
    )
    names = {p.name for p in (kernel / "dataset").iterdir()}
    assert not any("last.pt" in n or n.endswith((".png", "kaggle.json")) for n in names)
    assert len([n for n in names if n.endswith(".whl")]) == len(list(wheelhouse.glob("*.whl"))) + 1
    metadata = json.loads((kernel / "notebook" / "kernel-metadata.json").read_text())
    assert metadata | {"code_file": ""} == {
        "id": f"{USERNAME}/comp-tiny",
        "title": "comp tiny",
        "code_file": "",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": False,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [f"{USERNAME}/tiny-comp-model"],
        "competition_sources": [SLUG],
        "kernel_sources": [],
        "model_sources": [],
    }
    notebook = json.loads((kernel / "notebook" / metadata["code_file"]).read_text())
    assert not any(line.lstrip().startswith(("!", "%")) for c in notebook["cells"] for line in c["source"].splitlines())

    # Push: the dataset's files uploaded as they are, the notebook pushed and followed until it completes.
    fake.code.output = {"submission.csv": rehearsed}  # what the run on Kaggle writes
    pushed = comp(
        demo, "kernel", "tiny", "--wheels", str(wheelhouse), "--push", "--poll-interval", "0.05", *DEMO, env=env
    )
    print(pushed.stdout)
    assert f"Pushed {USERNAME}/comp-tiny version 1 (dataset {USERNAME}/tiny-comp-model version 1)" in pushed.stdout
    uploaded = fake.code.datasets[f"{USERNAME}/tiny-comp-model"].versions[-1]
    local = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (kernel / "dataset").iterdir()}
    assert uploaded == {n: h for n, h in local.items() if n != "dataset-metadata.json"}
    request = fake.code.kernels[f"{USERNAME}/comp-tiny"].versions[-1]
    assert (request["enableInternet"], request["competitionDataSources"]) == (False, [SLUG])
    assert [c["source"] for c in json.loads(request["text"])["cells"]] == [c["source"] for c in notebook["cells"]]

    # Submit the notebook's output; the ledger row names the kernel, its version and the dataset version.
    submit = ["submit", "--kernel", "tiny", "-m", "kernel v1", "--wait", "--poll-interval", "0.05", *DEMO]
    submitted = comp(demo, *submit, env=env)
    print(submitted.stdout)
    assert "Public score: 0.91250" in submitted.stdout
    ledger = read_ledger(demo / "submissions" / "ledger.csv")
    print(ledger.to_string())
    cv = json.loads((demo / "runs/tiny/cv.json").read_text())
    row = ledger.iloc[0]
    assert (row["file"], row["kernel"], row["kernel_version"], row["dataset_version"]) == (
        "submission.csv",
        f"{USERNAME}/comp-tiny",
        "1",
        "1",
    )
    assert (row["status"], row["public_score"], float(row["oof_score"])) == ("complete", "0.91250", cv["oof"])
    assert row["sha256"] == hashlib.sha256(rehearsed).hexdigest()
    assert fake.code.submitted == [(f"{USERNAME}/comp-tiny", 1, 1000)]

    again = comp(demo, *submit, env=env, check=False)
    assert again.returncode == 1 and "already submitted" in again.stderr and "--force" in again.stderr
    assert len(read_ledger(demo / "submissions" / "ledger.csv")) == 1


def test_folder_layout_blend_rehearses_on_a_replaced_test_set(tmp_path, wheelhouse, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "comp/configs", tmp_path / "configs")
    solution = write_folders_competition(tmp_path / "data/shapes", n_classes=6, per_class=24, n_test=30)
    data = ["--set", "data.competition=shapes", "--set", "data.root=data/shapes", *TINY]
    data += ["--set", "train.epochs=6", "--set", "train.batch_size=8"]  # enough steps to learn the 6 patterns
    comp(tmp_path, "folds", *data)
    for name, lr in (("a", "0.003"), ("b", "0.005")):  # one seed: blended runs share their fold file
        comp(tmp_path, "train", *data, "--set", f"name={name}", "--set", f"train.lr={lr}")
        comp(tmp_path, "predict", *data, "--set", f"name={name}")
    comp(tmp_path, "ensemble", "a", "b", "--name", "ab", "--method", "weighted", *data)

    config = load_config("configs/default.yaml", [s for s in data if s != "--set"] + ["name=ab"])
    build = create_kernel(config, ["ab"], owner="someone", wheels=wheelhouse)
    result = rehearse(build.folder, config, time_limit=600)
    from comp.console import console

    console.print(build)
    console.print(result)
    labels = solution.set_index("id")["label"].astype(str)
    for case in result.cases:
        found = pd.read_csv(case.submission, dtype=str)
        truth = labels.loc[[case.renamed.get(i, i) for i in found["id"]]].to_numpy()
        accuracy = (found["label"].to_numpy() == truth).mean()
        print(f"{case.case}: {case.n_test} images, {case.seconds:.1f} s, {case.peak_bytes / 2**20:.0f} MiB, "
              f"held-back accuracy {accuracy:.4f}")  # fmt: skip
        assert case.n_test == len(found) and accuracy > 0.5
    assert result.cases[1].dropped and result.cases[1].renamed
    blend_csv = next(Path("submissions").glob("ab*.csv"))  # what `comp ensemble` wrote from the members' tables
    assert pd.read_csv(result.cases[0].submission).equals(pd.read_csv(blend_csv))


def test_a_pixel_table_competition_rehearses_on_its_read_only_input(tmp_path, wheelhouse, monkeypatch):
    """digit-recognizer: the test images are rows of test.csv, paired with the sample's ids by position.
    The rehearsal mounts the input read-only, as /kaggle/input is, with no decoded rows beside it: the
    notebook decodes them into comp's cache; the replaced case drops and renames rows of test.csv."""
    from shapes import digit_recognizer

    from comp.data.survey import survey_competition
    from comp.kaggle.competition_config import write_competition_config

    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "comp/configs", tmp_path / "configs")
    root = Path("data/digit-recognizer")
    digit_recognizer(root)
    write_competition_config(survey_competition(root), "digit-recognizer", Path("configs"))
    data = ["-c", "configs/digit-recognizer.yaml", *TINY, "--set", "name=digits"]
    for step in (["folds"], ["train"], ["predict"]):
        comp(tmp_path, *step, *data)
    shutil.rmtree(root / ".pixels")  # Kaggle's input holds the tables only

    config = load_config("configs/digit-recognizer.yaml", [s for s in data[2:] if s != "--set"])
    build = create_kernel(config, owner="someone", wheels=wheelhouse)
    result = rehearse(build.folder, config, time_limit=600)
    assert not (root / ".pixels").exists()
    as_is, replaced = (pd.read_csv(c.submission, dtype=str).set_index("ImageId") for c in result.cases)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert list(as_is.index) == list(sample["ImageId"])
    renamed, dropped = result.cases[1].renamed, result.cases[1].dropped
    assert renamed and dropped and len(replaced) == len(as_is) - len(dropped)
    originals = [renamed.get(i, i) for i in replaced.index]
    assert list(replaced["Label"]) == list(as_is.loc[originals, "Label"])  # each row kept its own image


# ----------------------------------------------------------------------------- bad input


def test_unfinished_folds_are_refused_and_nothing_is_written(demo, wheelhouse):
    (demo / "runs/tiny/fold1/summary.json").unlink()
    with pytest.raises(CompError, match=r"unfinished folds \(fold 1 interrupted\)") as err:
        create_kernel(demo_config(), owner="someone", wheels=wheelhouse)
    assert "--resume" in err.value.hint
    assert not (demo / "kernels").exists()


def test_a_pretrained_model_is_packaged_with_its_hub_download_off(demo, wheelhouse):
    config_path = demo / "runs/tiny/config.yaml"
    tree = yaml.safe_load(config_path.read_text())
    tree["model"].update(pretrained=True, weights="/somewhere/only/here.safetensors")
    config_path.write_text(yaml.safe_dump(tree))
    build = create_kernel(demo_config("model.pretrained=true"), owner="someone", wheels=wheelhouse)
    packaged = yaml.safe_load((build.folder / "dataset" / "tiny--config.yaml").read_text())
    kernel_config = yaml.safe_load((build.folder / "dataset" / "comp-config.yaml").read_text())
    assert packaged["model"]["pretrained"] is False and packaged["model"]["weights"] is None
    assert kernel_config["model"]["pretrained"] is False and kernel_config["name"] == "tiny"


def test_a_dataset_over_the_limit_and_several_runs_are_refused(demo, wheelhouse):
    with pytest.raises(CompError, match="over Kaggle's limit of 0.00 GB") as err:
        create_kernel(demo_config(), owner="someone", wheels=wheelhouse, max_bytes=1000)
    assert "nothing was written" in err.value.hint
    with pytest.raises(CompError, match="one run; 2 were given") as err:
        create_kernel(demo_config(), ["tiny", "other"], owner="someone", wheels=wheelhouse)
    assert "comp ensemble tiny other --name" in err.value.hint
    assert not (demo / "kernels").exists() or not any((demo / "kernels").iterdir())


def test_push_without_credentials_says_where_to_put_them_before_building(demo, fake, tmp_path):
    done = comp(
        demo,
        "kernel",
        "tiny",
        "--push",
        "--poll-interval",
        "0.05",
        *DEMO,
        env=fake.env(tmp_path / "home", credentials=False),
        check=False,
    )
    assert done.returncode == 1 and "No Kaggle credentials found" in done.stderr
    assert not (demo / "kernels").exists() and fake.calls == []


def test_a_dataset_of_another_account_is_refused_with_403(demo, wheelhouse, fake, tmp_path):
    args = [
        "kernel",
        "tiny",
        "--wheels",
        str(wheelhouse),
        "--owner",
        "someone-else",
        "--push",
        "--poll-interval",
        "0.05",
        *DEMO,
    ]
    done = comp(demo, *args, env=fake.env(tmp_path / "home"), check=False)
    assert done.returncode == 1, done.stdout
    assert "someone-else/tiny-comp-model (HTTP 403)" in done.stderr and "--owner" in done.stderr
    assert fake.code.kernels == {} and not (demo / "kernels/tiny/push.json").exists()


def test_a_kernel_that_fails_on_kaggle_shows_its_log_and_the_ledger_is_untouched(demo, wheelhouse, fake, tmp_path):
    fake.code.outcome, fake.code.running_polls = "ERROR", 2
    log = [
        {"stream_name": "stdout", "time": 1.0, "data": "dataset /kaggle/input/tiny-comp-model\n"},
        {"stream_name": "stderr", "time": 2.0, "data": "KernelFailed: 3 test image(s) are missing\n"},
    ]
    fake.code.log = json.dumps(log)
    env = fake.env(tmp_path / "home")
    done = comp(
        demo,
        "kernel",
        "tiny",
        "--wheels",
        str(wheelhouse),
        "--push",
        "--poll-interval",
        "0.05",
        *DEMO,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert "failed on Kaggle (error): KernelFailed: 3 test image(s) are missing" in done.stderr
    assert sum("GetKernelSessionStatus" in c for c in fake.calls) == 3  # running, running, error
    submitted = comp(demo, "submit", "--kernel", "tiny", "-m", "x", *DEMO, env=env, check=False)
    assert submitted.returncode == 1 and "has not been pushed" in submitted.stderr
    assert not (demo / "submissions/ledger.csv").exists() and fake.submissions == []


def test_rehearsal_stops_on_a_missing_test_image_and_at_the_time_limit(demo, wheelhouse):
    config = demo_config()
    build = create_kernel(config, owner="someone", wheels=wheelhouse)
    with pytest.raises(CompError, match="ran past the time limit of 2 s") as err:
        rehearse(build.folder, config, time_limit=2)
    assert "9 hours" in err.value.hint
    assert not (build.folder / "rehearsal/as-is/submission.csv").exists()

    sample = pd.read_csv(demo / "data/demo/sample_submission.csv", dtype=str)
    (demo / "data/demo/test" / f"{sample['id'][3]}.png").unlink()
    with pytest.raises(CompError, match=r"Rehearsal 'as-is'.*KernelFailed: 1 test image\(s\).*missing"):
        rehearse(build.folder, config, time_limit=600)
    assert not (build.folder / "rehearsal/as-is/submission.csv").exists()


def test_test_only_prediction_of_a_blend_matches_the_ensemble(demo):
    comp(demo, "train", *DEMO, "--set", "name=tiny2", "--set", "train.lr=0.003")
    comp(demo, "predict", *DEMO, "--set", "name=tiny2")
    comp(demo, "ensemble", "tiny", "tiny2", "--name", "both", "--method", "geometric", *DEMO)
    comp(demo, "predict", "--test-only", "both", "--out", "both-test.csv", *DEMO)
    blend = pd.read_csv(next(Path("submissions").glob("both*.csv")))
    assert pd.read_csv("both-test.csv").equals(blend)
    refused = comp(demo, "predict", "--test-only", "both", "--tta", *DEMO, check=False)
    assert refused.returncode == 1 and "views the run's cv.json recorded" in refused.stderr
