"""`comp kernel --rehearse`: the notebook run as Kaggle runs it, before anything is uploaded.

Twice, each in a fresh sandbox (comp.kernel.sandbox): once on the competition as it is, once on a
copy whose test folder and sample submission hold another set of images (some test ids dropped,
others renamed), as Kaggle's rerun on the hidden test set does. A case passes only when the
notebook ends well and /kaggle/working/submission.csv validates against that case's own sample.
Each case's log (and its submission, when it passed) is kept in kernels/<name>/rehearsal/<case>/.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from comp.config import Config
from comp.console import console
from comp.data.competition import detect_layout, load_classes, read_csv_text, read_sample, read_test_images
from comp.data.layouts import listed_id_column
from comp.data.pixels import CACHE as PIXEL_CACHE
from comp.errors import CompError
from comp.kernel.notebook import MANIFEST, SUBMISSION, notebook_source
from comp.kernel.sandbox import (
    add_socket_guard,
    clean_env,
    create_image_venv,
    importable,
    make_writable,
    namespace_command,
    namespaces_work,
    read_only_copy,
    run_measured,
)
from comp.submission.validate import validate_submission

Case = Literal["as-is", "replaced"]
TIME_LIMIT = 9 * 3600.0  # seconds: Kaggle stops a notebook after 9 hours


@dataclass
class CaseResult:
    case: Case
    n_test: int
    seconds: float
    peak_bytes: int
    submission: Path  # kept copy of /kaggle/working/submission.csv
    log: Path
    renamed: dict[str, str] = field(default_factory=dict)  # replaced case: new id -> original id
    dropped: list[str] = field(default_factory=list)


@dataclass
class Rehearsal:
    kernel: Path
    isolation: str  # how the network and the inputs were closed off
    comp_before_install: bool  # whether `import comp` worked before the install cell (it must not)
    cases: list[CaseResult]

    def __rich__(self) -> Group:
        table = Table("case", "test images", "run time", "peak memory", "submission.csv", title="rehearsal")
        for c in self.cases:
            detail = f" ({len(c.dropped)} dropped, {len(c.renamed)} renamed)" if c.case == "replaced" else ""
            table.add_row(
                c.case + detail, str(c.n_test), f"{c.seconds:.1f} s", f"{c.peak_bytes / 2**20:.0f} MiB", "valid"
            )
        notes = [
            Text(f"isolation: {self.isolation}; comp importable before the install cell: {self.comp_before_install}"),
            Text(f"Rehearsal passed: logs and submissions in {self.kernel / 'rehearsal'}", style="green"),
        ]
        return Group(table, *notes)


# ----------------------------------------------------------------------------- the replaced test set


def replaced_test_set(root: Path, dest: Path, config: Config) -> tuple[dict[str, str], list[str]]:
    """dest: the competition with every entry linked except the test images (the test folder, or the
    test pixel table), the sample and the test table, which hold a fifth fewer images and a third of
    the rest under new ids; returns (renamed: new id -> old id, dropped ids)."""
    data = config.data
    sample = read_sample(data, root)
    pixels = detect_layout(data) == "pixels"
    own = {data.sample_submission, *([data.test_csv] if data.test_csv else []), *([] if pixels else [data.test_dir])}
    dest.mkdir(parents=True)
    for entry in root.iterdir():
        if entry.name not in own and entry.name != PIXEL_CACHE:
            (dest / entry.name).symlink_to(entry.resolve())
    id_column = sample.columns[0]
    dropped = list(sample[id_column][::5])
    kept = ~sample[id_column].isin(dropped)
    renamed = {f"rehearsal_{old}": old for row, old in enumerate(sample[id_column][kept]) if row % 3 == 0}
    new_id = {old: new for new, old in renamed.items()}
    if not pixels:
        paths = read_test_images(data, root, sample).set_index("id")["path"]
        (dest / data.test_dir).mkdir(parents=True)
        for old in sample[id_column][kept]:
            image = Path(paths[old])
            shutil.copy2(image, dest / data.test_dir / image.name.replace(old, new_id.get(old, old), 1))
    replaced = sample[kept].copy()
    replaced[id_column] = replaced[id_column].map(lambda i: new_id.get(i, i))
    replaced.to_csv(dest / data.sample_submission, index=False)
    if data.test_csv:
        listed = read_csv_text(root / data.test_csv)
        if pixels and data.test_id_column is None:
            listed = listed[kept.to_numpy()]  # rows pair with the sample's ids by position
        else:
            column = listed_id_column(data, listed, root / data.test_csv)
            listed = listed[~listed[column].isin(dropped)].copy()
            listed[column] = listed[column].map(lambda i: new_id.get(i, i))
        listed.to_csv(dest / data.test_csv, index=False)
    return renamed, dropped


# ----------------------------------------------------------------------------- one case


def _classes(dataset: Path) -> list:
    manifest = json.loads((dataset / MANIFEST).read_text())
    flat = {rel: name for name, rel in manifest["files"].items()}
    return load_classes(dataset / flat[f"{manifest['run']}/classes.json"])


def _failure(case: Case, log: Path, code: int | None, seconds: float, time_limit: float) -> CompError:
    if code is None:
        return CompError(
            f"Rehearsal '{case}': the notebook ran past the time limit of {time_limit:.0f} s and was stopped "
            f"(log: {log}). No submission.csv.",
            hint="Kaggle stops notebooks at 9 hours: predict with fewer folds or TTA views, or a smaller image size.",
        )
    lines = log.read_text(errors="replace").strip().splitlines()
    reason = next((line for line in reversed(lines) if "KernelFailed:" in line), None)
    reason = reason or next((line for line in reversed(lines) if line.strip()), "no output")
    return CompError(
        f"Rehearsal '{case}': the notebook failed after {seconds:.1f} s: {reason.strip()} (log: {log}).",
        hint="On Kaggle this is 'Notebook Threw Exception': fix the cause, build the kernel again and rehearse.",
    )


def rehearse_case(
    case: Case, kernel: Path, competition: Path, config: Config, scratch: Path, namespaced: bool, time_limit: float
) -> tuple[CaseResult, bool]:
    """Run the notebook on one input set; (result, whether comp was importable before installing)."""
    dataset, slug = (kernel / "dataset").resolve(), config.data.competition
    root = scratch / case
    venv, home, working, inputs = root / "venv", root / "home", root / "working", root / "input"
    for folder in (home, working, inputs):
        folder.mkdir(parents=True)
    renamed, dropped, original = {}, [], competition
    if case == "replaced":
        renamed, dropped = replaced_test_set(competition, root / "replaced", config)
        competition = root / "replaced"
    python = create_image_venv(venv)
    dataset_slug = json.loads((kernel / "notebook" / "kernel-metadata.json").read_text())["dataset_sources"][0]
    mounts = {inputs / slug: competition, inputs / dataset_slug.split("/")[1]: dataset}
    env = clean_env(venv, home, {"COMP_KAGGLE_INPUT": str(inputs), "COMP_KAGGLE_WORKING": str(working)})
    before = importable(python, ["comp", "timm", "torch"], env)
    if before["comp"] or not before["torch"]:
        raise CompError(f"The rehearsal's fresh environment {venv} is not like Kaggle's: {before}.")
    script = root / "notebook.py"
    script.write_text(notebook_source(kernel / "notebook"))
    if namespaced:
        for point in mounts:
            point.mkdir(parents=True)
        # the original competition too: the replaced copy's links lead there
        folders = {dataset, original, competition, *competition.glob("*")}
        originals = [(p.resolve(), p.resolve()) for p in folders if p.is_dir()]
        command = namespace_command([str(python), str(script)], [*originals, *((s, p) for p, s in mounts.items())])
    else:
        add_socket_guard(venv)
        for point, source in mounts.items():
            read_only_copy(source, point)
        command = [str(python), str(script)]
    log_dir = kernel / "rehearsal" / case
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    log = log_dir / "notebook.log"
    with console.status(f"rehearsing the notebook ({case})"):
        measured = run_measured(command, env, working, log, time_limit)
    if not namespaced:
        make_writable(inputs)
    if measured.returncode != 0:
        raise _failure(case, log, measured.returncode, measured.seconds, time_limit)
    written = working / SUBMISSION
    if not written.is_file():
        raise CompError(
            f"Rehearsal '{case}': the notebook ended without writing {SUBMISSION} (log: {log}).",
            hint="On Kaggle this is 'Submission CSV Not Found'.",
        )
    problems = validate_submission(
        written,
        competition / config.data.sample_submission,
        _classes(dataset),
        config.submission.format,
        config.submission.positive_class,
    )
    errors = [p.describe() for p in problems if p.severity == "error"]
    if errors:
        raise CompError(
            f"Rehearsal '{case}': {SUBMISSION} does not fit this test set's sample: {'; '.join(errors)} (log: {log}).",
            hint="On Kaggle this is 'Submission Scoring Error'.",
        )
    kept = log_dir / SUBMISSION
    shutil.copy2(written, kept)
    n_test = len(pd.read_csv(competition / config.data.sample_submission, dtype=str))
    result = CaseResult(case, n_test, measured.seconds, measured.peak_bytes, kept, log, renamed, dropped)
    return result, before["comp"]


def rehearse(kernel: Path, config: Config, time_limit: float = TIME_LIMIT) -> Rehearsal:
    """Both cases; a CompError names the first that fails."""
    competition = Path(config.data.root).resolve()
    if not (competition / config.data.sample_submission).is_file():
        raise CompError(
            f"The rehearsal needs the competition in {competition}: {config.data.sample_submission} is not there.",
            hint=f"Run `comp download {config.data.competition}` first (or set data.root).",
        )
    namespaced = namespaces_work()
    isolation = (
        "network and mount namespaces (unshare -rmn), inputs mounted read-only"
        if namespaced
        else "socket guard, inputs copied without write permission"
    )
    cases, before = [], False
    scratch = Path(tempfile.mkdtemp(prefix="comp-rehearsal-"))
    try:
        for case in ("as-is", "replaced"):
            result, importable_before = rehearse_case(
                case, kernel, competition, config, scratch, namespaced, time_limit
            )
            cases.append(result)
            before = before or importable_before
    finally:
        if scratch.exists():
            make_writable(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
    return Rehearsal(kernel, isolation, before, cases)
