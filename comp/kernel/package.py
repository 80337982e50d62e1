"""`comp kernel`: the Kaggle dataset and notebook that predict a run's test set offline on Kaggle.

    kernels/<name>/dataset/   dataset-metadata.json, comp-kernel.json (the manifest), comp's wheel and
                              its dependencies' wheels, the run's files (flat: Kaggle uploads no folders)
    kernels/<name>/notebook/  kernel-metadata.json, <slug>.ipynb
    kernels/<name>/kernel.json  what was packaged: runs, OOF score, ids, files and size

Only what prediction needs is packaged: each finished fold's best.safetensors and summary.json, the
run's config.yaml (with the model's pretrained download switched off: the packaged weights are the
weights), classes.json, cv.json, members.json for blends. Never last.pt, data/, credentials or any
other file of the working folder. The folder is built aside and swapped in whole.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Group
from rich.table import Table
from rich.text import Text

from comp.config import Config, load_config
from comp.errors import CompError
from comp.io import write_json, write_text
from comp.kaggle.credentials import find_username
from comp.kernel.notebook import MANIFEST, create_notebook
from comp.kernel.wheels import CompWheel, build_comp_wheel, dependency_wheels
from comp.runs import (
    KERNELS,
    RUNS,
    classes_file,
    config_file,
    cv_file,
    fold_dirs,
    fold_state,
    kernel_dir,
    members_file,
    read_cv,
    run_dir,
)

DATASET_LIMIT = 100 * 1000**3  # bytes: Kaggle's limit on one dataset
LICENSE = "other"  # a private dataset of the user's own model weights


@dataclass
class PackagedFile:
    name: str  # in the dataset folder
    size: int
    source: Path | str | None = None  # copied from this file, or this text written (None: written already)


@dataclass
class KernelBuild:
    folder: Path
    run: str
    competition: str
    dataset_id: str
    kernel_id: str
    oof_score: float | None
    files: list[PackagedFile] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def __rich__(self) -> Group:
        table = Table("file", "size", title=f"{self.folder / 'dataset'} ({self.dataset_id})")
        for f in sorted(self.files, key=lambda f: f.name):
            table.add_row(Text(f.name), f"{f.size / 1e6:.2f} MB" if f.size >= 10_000 else f"{f.size / 1e3:.1f} kB")
        lines = [
            Text(f"dataset: {len(self.files)} files, {self.size / 1e6:.1f} MB (limit {DATASET_LIMIT / 1e9:.0f} GB)"),
            Text(f"notebook: {self.folder / 'notebook'} ({self.kernel_id}): run {self.run} on {self.competition}"),
        ]
        return Group(table, *lines)


# ----------------------------------------------------------------------------- what a run needs


def _trained_files(run: Path, where: str) -> dict[str, Path]:
    """A trained run's files for test prediction (relative name -> source); unfinished folds refused."""
    config_path = config_file(run)
    if not config_path.is_file():
        raise CompError(f"{where} has no config.yaml in {run}.", hint="Train it with `comp train` first.")
    folds = fold_dirs(run)
    expected = load_config(config_path).folds.k
    unfinished = {k: fold_state(run, k) for k in range(expected) if fold_state(run, k) != "finished"}
    if not folds or unfinished:
        states = ", ".join(f"fold {k} {state}" for k, state in unfinished.items())
        raise CompError(
            f"{where} has unfinished folds ({states}): a kernel predicts with every fold of folds.k={expected}.",
            hint="Finish them first: comp train --fold all --resume (then comp predict).",
        )
    if "views" not in read_cv(run):
        raise CompError(
            f"{where} has no predictions yet ({cv_file(run)} records no TTA views).",
            hint="Run `comp predict` (or `comp predict --tta`) for it first: the kernel uses the views it chose.",
        )
    files = {path.name: path for path in (config_file(run), classes_file(run), cv_file(run))}
    for k, folder in folds.items():
        for name in ("best.safetensors", "summary.json"):
            files[f"fold{k}/{name}"] = folder / name
    return files


def _collect_run(run: Path, packaged: dict[str, Path | str], seen: dict[str, Path]) -> None:
    """Add `run` (and a blend's members, recursively) to `packaged`: runs/<folder name>/<file> -> its
    source file, or the text to write instead (configs without hub downloads, members as runs/<name>)."""
    where = f"Run '{run.name}'"
    if run.name in seen and seen[run.name].resolve() != run.resolve():
        raise CompError(
            f"Two runs in the kernel share the folder name '{run.name}' ({seen[run.name]} and {run}).",
            hint="Rename one run folder, blend again, then build the kernel.",
        )
    seen[run.name] = run
    inside = run_dir(run.name).as_posix()
    if members_file(run).is_file():
        record = json.loads(members_file(run).read_text())
        members = [_existing(m["run"], f"Member {m['run']} of blend {run}") for m in record["members"]]
        for member, folder in zip(record["members"], members, strict=True):
            member["run"] = run_dir(folder.name).as_posix()  # where the notebook finds it
        packaged[f"{inside}/{members_file(run).name}"] = json.dumps(record, indent=2)
        for path in (classes_file(run), cv_file(run)):
            packaged[f"{inside}/{path.name}"] = path
        for folder in members:
            _collect_run(folder, packaged, seen)
        return
    for name, source in _trained_files(run, where).items():
        packaged[f"{inside}/{name}"] = _offline_run_config(source) if source == config_file(run) else source


def _existing(run: str, where: str) -> Path:
    for candidate in (run_dir(run), Path(run)):
        if cv_file(candidate).is_file() or config_file(candidate).is_file():
            return candidate
    raise CompError(f"{where}: no run folder {run_dir(run)} or {run}.", hint=f"Check the name (ls {RUNS}).")


def _flat_name(relative: str) -> str:
    return relative.removeprefix(f"{RUNS.as_posix()}/").replace("/", "--")


# ----------------------------------------------------------------------------- metadata


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _owner(owner: str | None) -> str:
    owner = owner or find_username()
    if not owner:
        raise CompError(
            "The kernel's owner is unknown: no KAGGLE_USERNAME or kaggle.json names the Kaggle account.",
            hint="Pass --owner YOUR_KAGGLE_NAME (or set up the Kaggle credentials).",
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", owner):
        raise CompError(f"--owner {owner!r} is not a Kaggle user name.", hint="Use the name in your profile's address.")
    return owner


def _ids(name: str, owner: str) -> tuple[str, str, str]:
    """(dataset id, kernel id, kernel title): the kernel's slug must be its title's slug on Kaggle."""
    title = f"comp {name}"[:50]
    dataset = f"{owner}/{_slug(name)[:36]}-comp-model"
    return dataset, f"{owner}/{_slug(title)}", title


def _package_config(config: Config, run: str) -> str:
    """The kernel's config: this competition's data keys, the run's name, no local paths, no hub download."""
    tree = config.to_dict()
    tree["name"] = run
    tree["data"]["root"] = "."  # the notebook sets it to the competition's input folder
    tree["data"]["cache"] = "off"
    tree["model"].update(pretrained=False, weights=None)
    return yaml.safe_dump(tree, sort_keys=False)


def _offline_run_config(source: Path) -> str:
    """A run's config.yaml with the hub download off: a notebook without internet must never try one."""
    tree = yaml.safe_load(source.read_text()) or {}
    tree.setdefault("model", {}).update(pretrained=False, weights=None)
    return yaml.safe_dump(tree, sort_keys=False)


# ----------------------------------------------------------------------------- building


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,48}", name):
        raise CompError(
            f"--name {name!r} must be a plain folder name of letters, digits, '-', '_' or '.' (at most 49).",
            hint="E.g. --name exp1-kernel.",
        )
    return name


def _check_size(files: list[PackagedFile], max_bytes: int) -> None:
    total = sum(f.size for f in files)
    if total > max_bytes:
        largest = sorted(files, key=lambda f: -f.size)[:3]
        raise CompError(
            f"The kernel's dataset would hold {total / 1e9:.2f} GB, over Kaggle's limit of "
            f"{max_bytes / 1e9:.2f} GB (largest: "
            + ", ".join(f"{f.name} {f.size / 1e9:.2f} GB" for f in largest)
            + ").",
            hint="Package fewer or smaller folds (a smaller model, or a blend of fewer runs); nothing was written.",
        )


def _write_files(
    dataset: Path, packaged: dict[str, Path | str], wheels: Path | None, max_bytes: int
) -> tuple[list[PackagedFile], CompWheel]:
    """The wheels and the run's files, flat in `dataset`, refused before any copy when over the limit."""
    files = [PackagedFile(p.name, p.stat().st_size, p) for p in dependency_wheels(wheels)]
    for rel, source in packaged.items():
        size = len(source.encode()) if isinstance(source, str) else source.stat().st_size
        files.append(PackagedFile(_flat_name(rel), size, source))
    _check_size(files, max_bytes)
    comp_wheel = build_comp_wheel(dataset)
    files.append(PackagedFile(comp_wheel.path.name, comp_wheel.path.stat().st_size))
    for f in files:
        if isinstance(f.source, str):
            write_text(dataset / f.name, f.source)
        elif f.source is not None:
            shutil.copy2(f.source, dataset / f.name)
    return files, comp_wheel


def create_kernel(
    config: Config,
    runs: list[str] | None = None,
    *,
    name: str | None = None,
    owner: str | None = None,
    gpu: bool = False,
    wheels: Path | None = None,
    max_bytes: int = DATASET_LIMIT,
) -> KernelBuild:
    """Build kernels/<name>/ for one run (trained or blended): the dataset folder and the notebook."""
    runs = runs or [config.name]
    if len(runs) != 1:
        raise CompError(
            f"A kernel predicts with one run; {len(runs)} were given ({', '.join(runs)}).",
            hint=f"Blend them first: comp ensemble {' '.join(runs)} --name BLEND; then comp kernel BLEND.",
        )
    run = _existing(runs[0], f"Run '{runs[0]}'")
    name = _check_name(name or run.name)
    owner = _owner(owner)
    packaged: dict[str, Path | str] = {}
    _collect_run(run, packaged, {})
    dataset_id, kernel_id, title = _ids(name, owner)

    folder = kernel_dir(name)
    KERNELS.mkdir(parents=True, exist_ok=True)
    stage = KERNELS / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        dataset = stage / "dataset"
        dataset.mkdir(parents=True)
        files, comp_wheel = _write_files(dataset, packaged, wheels, max_bytes)
        manifest = {
            "comp": comp_wheel.version,
            "competition": config.data.competition,
            "run": run_dir(run.name).as_posix(),
            "sample_submission": config.data.sample_submission,
            "files": {_flat_name(rel): rel for rel in packaged},
        }
        write_json(dataset / MANIFEST, manifest)
        write_text(dataset / "comp-config.yaml", _package_config(config, run.name))
        write_json(
            dataset / "dataset-metadata.json",
            {"id": dataset_id, "title": f"{title} model"[:50], "licenses": [{"name": LICENSE}]},
        )
        for written in (MANIFEST, "comp-config.yaml"):
            files.append(PackagedFile(written, (dataset / written).stat().st_size))
        files = [PackagedFile(f.name, (dataset / f.name).stat().st_size) for f in files]  # sizes as packaged
        _check_size(files, max_bytes)
        create_notebook(stage / "notebook", kernel_id, title, config.data.competition, dataset_id, manifest, gpu)
        oof = read_cv(run).get("oof")
        build = KernelBuild(folder, run.name, config.data.competition, dataset_id, kernel_id, oof, files)
        write_json(
            stage / "kernel.json",
            {
                "run": str(run),
                "oof_score": oof,
                "competition": config.data.competition,
                "dataset_id": dataset_id,
                "kernel_id": kernel_id,
                "gpu": gpu,
                "size": build.size,
                "files": {f.name: f.size for f in files},
            },
        )
        _swap_in(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return build


def _swap_in(stage: Path, folder: Path) -> None:
    """Replace `folder` by the finished `stage`; the old build is removed only once the new one is whole."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        stage.rename(folder)
        shutil.rmtree(old)
    else:
        stage.rename(folder)
