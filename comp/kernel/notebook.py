"""The kernel's notebook: plain Python cells that install comp offline, predict the test set, check it.

No shell magics: the same cells run as a script in the rehearsal. The input root and the working
folder come from COMP_KAGGLE_INPUT and COMP_KAGGLE_WORKING (defaults: Kaggle's), and the dataset and
the competition are found below the input root whichever way Kaggle mounts them. Anything wrong
stops the notebook with one line: `KernelFailed: what happened and what to do`.
"""

from __future__ import annotations

import json
from pathlib import Path

from comp.io import write_json

MANIFEST = "comp-kernel.json"
SUBMISSION = "submission.csv"

SETUP = '''\
# comp kernel {kernel_id}: predicts run {run} on {competition} offline (comp {version}).
import json, os, shutil, subprocess, sys, tempfile
from pathlib import Path

os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # no version check: this notebook has no internet
INPUT = Path(os.environ.get("COMP_KAGGLE_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("COMP_KAGGLE_WORKING", "/kaggle/working"))
COMPETITION, DATASET_SLUG, MANIFEST = {competition!r}, {dataset_slug!r}, {manifest!r}
SAMPLE = {sample!r}


class KernelFailed(Exception):
    """What went wrong, in one line."""


def find(patterns, what):
    for pattern in patterns:
        found = sorted(INPUT.glob(pattern))
        if found:
            return found[0].parent
    looked = ", ".join(patterns)
    raise KernelFailed(f"{{what}} not found under {{INPUT}} (looked for {{looked}}): add it as an input.")


# Kaggle mounts inputs at /kaggle/input/<slug> or deeper (competitions/<slug>, datasets/<owner>/<slug>).
DATASET = find([f"{{'*/' * depth}}{{DATASET_SLUG}}/{{MANIFEST}}" for depth in (0, 1, 2)], "comp's dataset")
DATA = find([f"{{'*/' * depth}}{{COMPETITION}}/{{SAMPLE}}" for depth in (0, 1, 2)], "The competition")
manifest = json.loads((DATASET / MANIFEST).read_text())
print(f"dataset {{DATASET}}, competition {{DATA}}")
'''

INSTALL = """\
# comp and the packages Kaggle's image lacks, from the dataset's wheels: no index, no internet.
command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(DATASET), "--quiet"]
command += ["--no-warn-script-location", f"comp=={manifest['comp']}"]
done = subprocess.run(command, capture_output=True, text=True)
if done.returncode != 0:
    reason = (done.stderr.strip().splitlines() or ["pip gave no reason"])[-1]
    raise KernelFailed(f"pip could not install comp {manifest['comp']} offline from {DATASET}: {reason}")
import importlib

importlib.invalidate_caches()
"""

PREDICT = """\
# The run's files laid out as comp expects them (links into the read-only dataset), then test-only prediction.
work = Path(tempfile.mkdtemp(prefix="comp-kernel-"))
for flat, relative in manifest["files"].items():
    (work / relative).parent.mkdir(parents=True, exist_ok=True)
    (work / relative).symlink_to(DATASET / flat)
os.chdir(work)

from comp.config import load_config
from comp.console import console
from comp.errors import CompError
from comp.predict_test import predict_test_set

try:
    config = load_config(DATASET / "comp-config.yaml", [f"data.root={DATA}"])
    prediction = predict_test_set(config, work / "submission.csv")
except CompError as exc:
    raise KernelFailed(" ".join(filter(None, [exc.message, exc.hint]))) from None
console.print(prediction)
"""

VALIDATE = """\
# submission.csv is written only once it validates against the sample submission.
from comp.submission.validate import validate_with_config

check = validate_with_config(work / "submission.csv", config)
if not check.is_valid:
    raise KernelFailed(f"The predicted submission is not valid: {'; '.join(p.describe() for p in check.errors)}")
WORKING.mkdir(parents=True, exist_ok=True)
shutil.copyfile(work / "submission.csv", WORKING / "submission.csv")
print(f"Wrote {WORKING / 'submission.csv'}")
"""


def code_cells(kernel_id: str, competition: str, dataset_id: str, manifest: dict) -> list[str]:
    setup = SETUP.format(
        kernel_id=kernel_id,
        run=manifest["run"],
        competition=competition,
        version=manifest["comp"],
        dataset_slug=dataset_id.split("/")[1],
        manifest=MANIFEST,
        sample=manifest["sample_submission"],
    )
    return [setup, INSTALL, PREDICT, VALIDATE]


def _cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}


def create_notebook(
    folder: Path, kernel_id: str, title: str, competition: str, dataset_id: str, manifest: dict, gpu: bool
) -> Path:
    """notebook/<slug>.ipynb and its kernel-metadata.json."""
    slug = kernel_id.split("/")[1]
    notebook = {
        "cells": [_cell(source) for source in code_cells(kernel_id, competition, dataset_id, manifest)],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.ipynb"
    path.write_text(json.dumps(notebook, indent=1) + "\n")
    write_json(
        folder / "kernel-metadata.json",
        {
            "id": kernel_id,
            "title": title,
            "code_file": path.name,
            "language": "python",
            "kernel_type": "notebook",
            "is_private": True,
            "enable_gpu": gpu,
            "enable_tpu": False,
            "enable_internet": False,
            "dataset_sources": [dataset_id],
            "competition_sources": [competition],
            "kernel_sources": [],
            "model_sources": [],
        },
    )
    return path


def notebook_source(folder: Path) -> str:
    """The notebook's code cells as one script, as the rehearsal runs them."""
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    notebook = json.loads((folder / metadata["code_file"]).read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    return "\n\n".join(cells)
