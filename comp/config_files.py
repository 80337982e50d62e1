"""The config files: packaged configs, `--config NAME` resolution, and the starter config `comp init` writes.

A config's name is configs/NAME.yaml in the working folder when there is one (the user's own), else the
config NAME packaged with comp. The schema that validates them lives in comp/config.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from rich.text import Text

from comp.errors import CompError

DEFAULT_CONFIG = "default"
LOCAL_CONFIGS = Path("configs")
# A config's name, which is also what `comp init` takes: a Kaggle slug fits it.
CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def packaged_configs() -> dict[str, Traversable]:
    """The configs that ship inside comp, by name (the file name without .yaml), examples included."""
    found: dict[str, Traversable] = {}
    folders = [files("comp") / "configs"]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
            elif entry.name.endswith(".yaml"):
                found[entry.name.removesuffix(".yaml")] = entry
    return dict(sorted(found.items()))


def read_config_text(config: str | Path | None = None) -> tuple[str, str]:
    """(where it came from, YAML text) of `--config`: a file; or a name, configs/NAME.yaml here, else the
    packaged NAME. No config at all means the name `default`: the user's configs/default.yaml wins."""
    path = Path(config if config is not None else DEFAULT_CONFIG)
    if path.is_file():
        return str(path), path.read_text()
    names = packaged_configs()
    listing = f"Packaged configs: {', '.join(names)}."
    if not CONFIG_NAME.fullmatch(str(path)):
        raise CompError(
            f"Config file {path} not found.",
            hint=f"Pass an existing YAML file, or a config's name (-c NAME). {listing}",
        )
    local = LOCAL_CONFIGS / f"{path}.yaml"
    if local.is_file():
        return str(local), local.read_text()
    if str(path) in names:
        return f"comp's packaged {path}.yaml", names[str(path)].read_text(encoding="utf-8")
    raise CompError(
        f"No config named '{path}': no {local} here and none packaged with comp.",
        hint=f"{listing} Or pass a YAML file's path; `comp init` writes a starter {LOCAL_CONFIGS}/default.yaml.",
    )


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CompError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise CompError(f"{source} must be a YAML mapping of config keys, not {type(tree).__name__}.")
    return tree


@dataclass(frozen=True)
class StarterConfig:
    """What `comp init` wrote."""

    path: Path
    name: str

    def __rich__(self) -> Text:
        readers = "commands run in this folder" if self.name == DEFAULT_CONFIG else f"--config {self.name}"
        return Text(f"Wrote {self.path}: every key, its default and what it does; {readers} read it.")


def starter_config(slug: str | None = None, force: bool = False) -> tuple[StarterConfig, str]:
    """Where `comp init` writes and the text: the packaged default, pointed at the competition `slug`."""
    name = slug or DEFAULT_CONFIG
    if not CONFIG_NAME.fullmatch(name):
        raise CompError(
            f"'{slug}' is not a competition slug.",
            hint="The slug is the last part of the competition's address: "
            "https://www.kaggle.com/competitions/<slug>, e.g. dogs-vs-cats-redux-kernels-edition.",
        )
    path = LOCAL_CONFIGS / f"{name}.yaml"
    if path.exists() and not force:
        raise CompError(
            f"{path} already exists: comp init does not overwrite a config.",
            hint="Pass --force to replace it with a fresh starter, or move it aside first.",
        )
    text = packaged_configs()[DEFAULT_CONFIG].read_text(encoding="utf-8")
    if slug:
        text = _with_values(text, {"name": slug, "  competition": slug, "  root": f"data/{slug}"})
    return StarterConfig(path, name), text


def _with_values(text: str, values: dict[str, str]) -> str:
    """Replace the value of each `key: value  # comment` line (indent included in the key), keeping the
    comments aligned."""
    for key, value in values.items():
        scalar = value if yaml.safe_load(value) == value else json.dumps(value)  # quote 123, yes, null...

        def replace(match: re.Match[str], scalar: str = scalar) -> str:
            width = len(match.group(2)) + len(match.group(3))
            return f"{match.group(1)}{scalar}{' ' * max(1, width - len(scalar))}#"

        text, found = re.subn(rf"^({key}: )(\S+)( +)#", replace, text, count=1, flags=re.M)
        if not found:
            raise ValueError(f"the packaged default.yaml has no '{key}:' line")
    return text
