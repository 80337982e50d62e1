"""An installed comp runs anywhere: the wheel carries the default config and the recipes, and the
installed `comp demo` runs in an empty folder with nothing of the checkout in reach."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONFIGS = REPO / "comp/configs"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """comp's wheel, built offline from a copy of the sources (the checkout gets no build/ or egg-info)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "comp", source / "comp", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    built = subprocess.run([*command, "-w", str(work / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (work / "dist").glob("comp-*.whl")
    return path


def test_the_wheel_carries_the_default_config_and_every_recipe(wheel):
    expected = {f"comp/configs/{p.relative_to(CONFIGS)}": p.read_bytes() for p in CONFIGS.rglob("*.yaml")}
    assert {"comp/configs/default.yaml", "comp/configs/examples/resnet9_scratch.yaml"} <= set(expected)
    with zipfile.ZipFile(wheel) as archive:
        packed = {name: archive.read(name) for name in archive.namelist() if name.startswith("comp/configs/")}
    assert packed == expected


@pytest.mark.slow
def test_the_installed_comp_demo_runs_in_an_empty_folder(wheel, tmp_path):
    site, folder = tmp_path / "site", tmp_path / "empty"
    folder.mkdir()
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not the checkout's comp
    where = subprocess.run(
        [sys.executable, "-c", "import comp; print(comp.__file__)"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr

    fast = ["train.epochs=1", "folds.k=2", "predict.tta=[identity]"]
    demo = [str(site / "bin/comp"), "demo", *(arg for key in fast for arg in ("--set", key))]
    result = subprocess.run(demo, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test accuracy (held-back labels)" in result.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["data", "folds", "runs", "submissions"]
    assert (folder / "submissions/default.csv").exists() and (folder / "runs/default/cv.json").exists()
    assert (folder / "data/demo/train.csv").exists() and list((folder / "folds").glob("demo_k2_*.csv"))


def imported_modules(package: Path) -> set[str]:
    """The top-level names of every module that `package`'s sources import, their own package's excepted."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {package.name}


def test_every_package_comp_imports_is_declared():
    """pyproject names each distribution comp imports (in its dependencies, or the extra that needs it),
    not only what another package happens to pull in."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for name, extra in project["optional-dependencies"].items() if name != "dev" for r in extra]
    requirements = [*project["dependencies"], *extras]  # not dev's: what the tests need is not what comp needs
    declared = {canonicalize_name(Requirement(text).name) for text in requirements}
    distributions = packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in sorted(imported_modules(REPO / "comp"))
        if not declared & {canonicalize_name(name) for name in distributions.get(module, [])}
    }
    assert undeclared == {}, f"imported by comp, not in pyproject.toml (module: its distributions): {undeclared}"


def test_the_declared_kaggle_floor_has_what_comp_submit_compares_against():
    """kaggle before 2.2.4 lacks COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE: comp submit would raise
    AttributeError after Kaggle took the file, before the ledger row. kaggle >= 1.8 needs Python 3.11."""
    from kaggle.api.kaggle_api_extended import KaggleApi
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (kaggle,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "kaggle"]
    assert "2.2.4" in kaggle.specifier and "2.2.3" not in kaggle.specifier
    assert "3.10" not in SpecifierSet(project["requires-python"]) and "3.11" in SpecifierSet(project["requires-python"])
    assert isinstance(KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE, str)
