"""The wheels a kernel installs offline: comp's own, and each dependency Kaggle's image may lack.

Kaggle's image has torch and torchvision (and what they need); everything else comp needs is
packaged, at the versions installed here, so the notebook runs what was tested. The dependency
wheels come from a folder the user can pre-fill (`--wheels DIR`); the ones missing are fetched with
`pip download`, the one network call a kernel build makes, and only because it was asked for.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from comp.errors import CompError

ON_KAGGLE_IMAGE = ("torch", "torchvision")  # present on Kaggle's image: never packaged


def default_wheel_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "comp" / "wheels"


def _requirements(dist: metadata.Distribution, extras: frozenset[str]) -> list[Requirement]:
    found = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        markers = [{"extra": e} for e in extras or {""}]
        if requirement.marker is None or any(requirement.marker.evaluate(m) for m in markers):
            found.append(requirement)
    return found


def closure(roots: list[str]) -> dict[str, str]:
    """Every installed distribution the roots need, transitively: canonical name -> installed version."""
    found: dict[str, str] = {}
    pending = [Requirement(r) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: an optional platform dependency
        found[name] = dist.version
        pending += _requirements(dist, extras)
    return found


def dependency_pins() -> dict[str, str]:
    """comp's dependencies that Kaggle's image may lack: name -> the version installed here."""
    project = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]
    needed = closure(project["dependencies"])
    provided = closure(list(ON_KAGGLE_IMAGE))
    return {name: version for name, version in sorted(needed.items()) if name not in provided and name != "comp"}


def _wheels_in(folder: Path) -> dict[str, Path]:
    found = {}
    for path in folder.glob("*.whl") if folder.is_dir() else []:
        name, *_ = parse_wheel_filename(path.name)
        found[canonicalize_name(name)] = path
    return found


def _download(pins: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(folder)]
    result = subprocess.run(
        [*command, *(f"{name}=={version}" for name, version in pins.items())], capture_output=True, text=True
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip gave no reason"])[-1]
        raise CompError(
            f"pip could not download the wheels of {', '.join(pins)} into {folder}: {last}",
            hint="Check the internet connection, or fill the folder with those wheels yourself and pass --wheels DIR.",
        )


def dependency_wheels(folder: Path | None) -> list[Path]:
    """The wheel of each dependency in `folder` (the cache by default), downloading the missing ones."""
    folder = Path(folder) if folder is not None else default_wheel_cache()
    pins = dependency_pins()
    missing = {name: version for name, version in pins.items() if name not in _wheels_in(folder)}
    if missing:
        _download(missing, folder)
    wheels = _wheels_in(folder)
    still = [name for name in pins if name not in wheels]
    if still:
        raise CompError(
            f"{folder} has no wheel for {', '.join(still)}.",
            hint="Put a wheel of each (pip download NAME==VERSION --no-deps) in that folder, or pass --wheels DIR.",
        )
    return [wheels[name] for name in pins]


@dataclass(frozen=True)
class CompWheel:
    path: Path
    version: str


def project_root() -> Path:
    """The source tree comp is imported from: a wheel of it can only be built from there."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise CompError(
            f"comp is imported from {root}, which is not its source tree (no pyproject.toml): "
            "a wheel of comp cannot be built for the kernel.",
            hint="Install comp from a clone of its repository (pip install -e .), then build the kernel again.",
        )
    return root


def build_comp_wheel(dest: Path) -> CompWheel:
    """comp's own wheel, built without the network (no build isolation) from a clean copy of its
    source: a build/ folder left in the tree could slip stale modules into the wheel."""
    root = project_root()
    with tempfile.TemporaryDirectory(prefix="comp-wheel-") as scratch:
        source, out = Path(scratch) / "source", Path(scratch) / "wheels"
        shutil.copytree(root / "comp", source / "comp", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, source / name)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out)]
        result = subprocess.run([*command, str(source)], capture_output=True, text=True)
        built = list(out.glob("comp-*.whl"))
        if result.returncode != 0 or len(built) != 1:
            last = (result.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise CompError(f"Building comp's wheel failed: {last}", hint="Run `pip wheel --no-deps .` to see why.")
        _, version, *_ = parse_wheel_filename(built[0].name)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / built[0].name
        built[0].replace(target)
    return CompWheel(target, str(version))
