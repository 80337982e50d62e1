"""The parts of `comp kernel` that need no training: the notebook's cells, the replaced test set,
the sandbox's isolation, Kaggle log parsing, the ledger's kernel columns, the notebook's token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import write_folders_competition

from comp.config import load_config
from comp.kaggle.credentials import find_credentials
from comp.kaggle.kernels import _error_lines
from comp.kaggle.ledger import COLUMNS, append_entry, find_kernel_submission, read_ledger
from comp.kernel.notebook import code_cells
from comp.kernel.rehearse import replaced_test_set
from comp.kernel.sandbox import namespace_command, namespaces_work, read_only_copy, run_measured

MANIFEST = {"comp": "0.1.0", "run": "runs/exp", "sample_submission": "sample_submission.csv", "files": {}}


def test_the_notebook_cells_are_plain_python_that_reads_its_folders_from_the_environment():
    cells = code_cells("me/comp-exp", "some-comp", "me/exp-comp-model", MANIFEST)
    for cell in cells:
        compile(cell, "<cell>", "exec")  # plain Python: no shell magics
        assert not any(line.lstrip().startswith(("!", "%")) for line in cell.splitlines())
    source = "\n".join(cells)
    assert 'os.environ.get("COMP_KAGGLE_INPUT", "/kaggle/input")' in source
    assert 'os.environ.get("COMP_KAGGLE_WORKING", "/kaggle/working")' in source
    assert '"--no-index", "--find-links"' in source and "comp==" in source
    assert "from comp.predict_test import predict_test_set" in source


def test_the_notebook_stops_with_one_line_when_its_inputs_are_missing(tmp_path):
    setup = code_cells("me/comp-exp", "some-comp", "me/exp-comp-model", MANIFEST)[0]
    script = tmp_path / "setup.py"
    script.write_text(setup)
    env = {**os.environ, "COMP_KAGGLE_INPUT": str(tmp_path / "input"), "COMP_KAGGLE_WORKING": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("KernelFailed: comp's dataset not found under")


def test_the_replaced_test_set_drops_some_ids_and_renames_others(tmp_path):
    root = tmp_path / "comp"
    write_folders_competition(root, n_classes=3, per_class=2, n_test=10)
    config = load_config(None, ["data.root=" + str(root)])
    renamed, dropped = replaced_test_set(root, tmp_path / "replaced", config)
    sample = pd.read_csv(tmp_path / "replaced" / "sample_submission.csv", dtype=str)
    assert dropped == ["t000", "t005"] and len(sample) == 8
    assert renamed == {f"rehearsal_{i}": i for i in ("t001", "t004", "t008")}
    assert set(sample["id"]) == ({f"t{i:03d}" for i in range(10)} - set(dropped) - set(renamed.values())) | set(renamed)
    files = {p.stem for p in (tmp_path / "replaced" / "test").iterdir()}
    assert files == set(sample["id"])
    assert (tmp_path / "replaced" / "train").is_symlink()


@pytest.mark.parametrize("shape", ["digit_recognizer", "kannada_mnist"])
def test_the_replaced_test_set_of_a_pixel_table_drops_and_renames_its_rows(tmp_path, shape):
    import shapes

    from comp.config import build_config
    from comp.data.competition import load_test_set
    from comp.data.survey import survey_competition

    root = tmp_path / "comp"
    getattr(shapes, shape)(root)
    data = survey_competition(root).config("c")
    renamed, dropped = replaced_test_set(root, tmp_path / "replaced", build_config({"data": data}))
    before = load_test_set(build_config({"data": data}).data)[0].set_index("id")["path"]
    after = load_test_set(build_config({"data": data | {"root": str(tmp_path / "replaced")}}).data)[0]
    assert dropped == list(before.index[::5]) and renamed and not (tmp_path / "replaced" / ".pixels").is_symlink()
    assert set(after["id"]) == (set(before.index) - set(dropped) - set(renamed.values())) | set(renamed)
    for image_id, path in zip(after["id"], after["path"], strict=True):  # each id still has its own image
        original = before[renamed.get(image_id, image_id)]
        assert shapes.cv2.imread(path).tobytes() == shapes.cv2.imread(original).tobytes(), image_id


@pytest.mark.skipif(not namespaces_work(), reason="this system has no unprivileged namespaces")
def test_the_sandbox_has_no_network_and_read_only_inputs(tmp_path):
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "kept.txt").write_text("x")
    probe = (
        "import socket, pathlib, sys\n"
        "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2); print('network')\n"
        "except OSError as exc:\n    print('no network', exc.errno)\n"
        "try:\n    pathlib.Path(sys.argv[1], 'new.txt').write_text('y'); print('writable')\n"
        "except OSError:\n    print('read-only')\n"
    )
    command = namespace_command([sys.executable, "-c", probe, str(inputs)], [(inputs, inputs)])
    measured = run_measured(command, dict(os.environ), tmp_path, tmp_path / "log", 60)
    assert measured.returncode == 0 and measured.peak_bytes > 0
    assert (tmp_path / "log").read_text().split() == ["no", "network", "101", "read-only"]
    assert not (inputs / "new.txt").exists()


def test_a_read_only_copy_refuses_writes_and_a_run_past_its_limit_is_stopped(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    read_only_copy(tmp_path / "src", tmp_path / "copy")
    assert not os.access(tmp_path / "copy" / "a.txt", os.W_OK) or os.geteuid() == 0  # root writes anyway
    assert (tmp_path / "copy" / "a.txt").stat().st_mode & 0o222 == 0
    measured = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), tmp_path,
                            tmp_path / "log", 1)  # fmt: skip
    assert measured.returncode is None and measured.seconds < 10


UPLOAD = """\
import sys, time
from pathlib import Path
from comp.kaggle.client import create_session
from comp.kaggle.kernels import upload_dataset
print(upload_dataset(create_session("fake-comp"), Path(sys.argv[1]), sys.argv[2], "notes", 0.01, time.sleep))
"""


def test_the_first_upload_creates_the_dataset_and_the_next_adds_a_version(tmp_path):
    import hashlib

    from conftest import REPO
    from fake_kaggle import USERNAME, FakeKaggle

    dataset_id, folder = f"{USERNAME}/exp-comp-model", tmp_path / "dataset"
    folder.mkdir()
    metadata = {"id": dataset_id, "title": "comp exp model", "licenses": [{"name": "other"}]}
    (folder / "dataset-metadata.json").write_text(json.dumps(metadata))
    with FakeKaggle() as fake:
        env = fake.env(tmp_path / "home") | {"PYTHONPATH": str(REPO)}
        versions = []
        for weights in (b"first", b"second"):
            (folder / "weights.safetensors").write_bytes(weights)
            done = subprocess.run([sys.executable, "-c", UPLOAD, str(folder), dataset_id], env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr
            versions.append(done.stdout.split()[-1])
    assert versions == ["1", "2"] and fake.stray == []
    digests = [{"weights.safetensors": hashlib.sha256(w).hexdigest()} for w in (b"first", b"second")]
    assert fake.code.datasets[dataset_id].versions == digests
    assert sum("CreateDatasetVersion" in c for c in fake.calls) == 1


def test_pushing_a_kernel_of_the_offline_demo_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    from comp.errors import CompError
    from comp.kernel import kernel

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "some-key")
    with pytest.raises(CompError, match="'demo' is comp's offline competition") as err:
        kernel(load_config(None, ["data.competition=demo", "name=exp"]), push=True)
    assert "data.competition=SLUG" in err.value.hint and list(tmp_path.iterdir()) == []


def test_kaggle_log_error_lines_are_found_in_json_records_and_plain_text():
    records = [
        {"stream_name": "stdout", "time": 1, "data": "dataset found\n"},
        {"stream_name": "stderr", "time": 2, "data": "Traceback (most recent call last):\n  File x\n"},
        {"stream_name": "stderr", "time": 3, "data": "KernelFailed: the competition not found\n"},
    ]
    assert _error_lines(json.dumps(records)) == [
        "Traceback (most recent call last):",
        "KernelFailed: the competition not found",
    ]
    assert _error_lines("line one\nline two") == ["line one", "line two"]


def test_an_old_ledger_reads_with_empty_kernel_columns_and_kernel_rows_are_found(tmp_path):
    ledger = tmp_path / "ledger.csv"
    old = ["time", "file", "sha256", "message", "oof_score", "kaggle_ref", "status", "public_score"]
    ledger.write_text(",".join(old) + "\n2025-01-01,submissions/a.csv,abc,first,0.9,7,complete,0.91\n")
    table = read_ledger(ledger)
    assert list(table.columns) == COLUMNS and table["kernel"].tolist() == [""]
    append_entry({"file": "submission.csv", "kaggle_ref": "8", "kernel": "me/k", "kernel_version": 3}, ledger)
    assert find_kernel_submission("me/k", 3, "submission.csv", ledger)["kaggle_ref"] == "8"
    assert find_kernel_submission("me/k", 4, "submission.csv", ledger) is None


def test_the_notebook_token_is_found_only_inside_a_kaggle_notebook(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("KAGGLE_")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / "token"
    token.write_text("notebook-token-123\n")
    monkeypatch.setenv("KAGGLE_API_V1_TOKEN", str(token))
    assert find_credentials() is None  # outside a notebook the client ignores it too
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("KAGGLE_DATA_PROXY_URL", "http://proxy")
    found = find_credentials()
    assert "KAGGLE_API_V1_TOKEN" in found.source and "notebook-token-123" in found.secrets
