"""The Docker image, checked without a Docker engine: hadolint, and the Dockerfile against its docs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKER_DOCS = REPO / "docs" / "docker.md"
MOUNTED = ("data", "runs", "folds", "submissions", "configs")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


def shell_commands(script: str) -> list[str]:
    """The commands of a shell snippet: one per line or `&&` part, comments dropped, spaces normalised."""
    script = re.sub(r"\\\n", " ", script)
    commands = []
    for line in script.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line)
        commands += [" ".join(part.split()) for part in line.split("&&") if part.strip()]
    return commands


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", markdown, flags=re.S)


def pip_installs(commands: list[str]) -> list[str]:
    return [command for command in commands if command.startswith("pip install")]


def dockerfile_commands() -> list[str]:
    return [
        cmd
        for keyword, args in instructions(DOCKERFILE.read_text())
        if keyword == "RUN"
        for cmd in shell_commands(args)
    ]


def docs_commands() -> list[str]:
    return [cmd for block in code_blocks(DOCKER_DOCS.read_text()) for cmd in shell_commands(block)]


def last(keyword: str) -> str:
    return [args for kw, args in instructions(DOCKERFILE.read_text()) if kw == keyword][-1]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: install the dev extras (pip install -e '.[dev]')"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_the_project_as_documented():
    installs = pip_installs(dockerfile_commands())
    assert installs == pip_installs(docs_commands())
    # Installed from the project's own pyproject.toml (".") with its dependencies, then the code alone.
    assert [shlex.split(cmd)[-1] for cmd in installs] == [".", "."]
    assert "--no-deps" not in installs[0] and "--no-deps" in installs[1]


def test_dependency_layer_is_built_before_the_source_is_copied():
    steps = instructions(DOCKERFILE.read_text())
    copy_pyproject = steps.index(("COPY", "pyproject.toml ./"))
    first_install = next(i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "pip install" in args)
    copy_source = next(i for i, (kw, args) in enumerate(steps) if kw == "COPY" and args.startswith("comp/"))
    assert copy_pyproject < first_install < copy_source


def test_base_images_are_official_pytorch_runtimes_inside_the_torch_range():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    torch_req = next(r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "torch")
    tag = re.compile(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime")
    steps = instructions(DOCKERFILE.read_text())
    assert ("FROM", "${BASE_IMAGE}") in steps
    default = next(args.removeprefix("BASE_IMAGE=") for kw, args in steps if kw == "ARG" and "BASE_IMAGE=" in args)
    assert tag.fullmatch(default), default
    # The default and every tag the Dockerfile and its docs suggest.
    for version in tag.findall(DOCKERFILE.read_text() + DOCKER_DOCS.read_text()):
        assert torch_req.specifier.contains(version), f"base image torch {version} is outside {torch_req}"


def test_image_runs_comp_as_a_non_root_user_in_workspace():
    user = last("USER").split(":")[0]
    assert user not in ("root", "0"), user
    assert json.loads(last("ENTRYPOINT")) == ["comp"]
    assert last("WORKDIR") == "/workspace"


def test_documented_run_mounts_every_project_folder_into_workspace():
    runs = [cmd for cmd in docs_commands() if cmd.startswith("docker run") and "--gpus all" in cmd]
    assert runs, "docs/docker.md shows no GPU docker run command"
    for command in runs:
        assert "--ipc=host" in command
        args = shlex.split(command)
        targets = {args[i + 1].split(":")[1] for i, arg in enumerate(args) if arg == "-v"}
        assert {f"/workspace/{name}" for name in MOUNTED} <= targets, command
        assert args[args.index("comp") + 1 :][:1] == ["train"], "comp must be the image, then its command"


def test_build_command_is_documented():
    assert "docker build -t comp ." in docs_commands()


def test_credentials_are_never_baked_into_the_image():
    text = DOCKERFILE.read_text()
    for keyword, args in instructions(text):
        if keyword in ("ENV", "ARG"):
            assert "KAGGLE" not in args.upper(), args
        if keyword in ("COPY", "ADD"):
            assert "kaggle" not in args.lower(), args


def test_dockerignore_keeps_data_runs_history_and_credentials_out():
    patterns = {
        line.strip().strip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"data", "runs", ".git", "**/kaggle.json"} <= patterns
