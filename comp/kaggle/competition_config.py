"""configs/<slug>.yaml written from a survey: the data keys, the suggested image size and group column,
and the submission format the sample submission implies, each guess commented with what it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Group
from rich.text import Text

from comp.config import build_config
from comp.config_files import LOCAL_CONFIGS
from comp.data.competition import column_name
from comp.data.survey import Guess, Survey
from comp.errors import CompError
from comp.io import write_text
from comp.submission.formats import detect_format, positive_index, value_columns


@dataclass
class CompetitionConfig:
    path: Path
    written: bool  # False: the file was there already and is left as it is
    text: str  # what was written, or would have been

    def __rich__(self) -> Group:
        if not self.written:
            return Group(
                Text(f"{self.path} already exists: left as it is. The surveyed config would be:"), *self._body()
            )
        return Group(Text(f"Wrote {self.path} (edit any guess; the comment says what each one is):"), *self._body())

    def _body(self) -> list[Text]:
        return [Text("  " + line) for line in self.text.splitlines()]


def submission_guesses(survey: Survey) -> tuple[dict[str, Any], list[Guess]]:
    """submission.format (and the binary column's class) from the sample submission's columns."""
    competition = survey.competition
    sample, classes = competition.sample, competition.classes
    try:
        fmt = detect_format(sample, classes)
    except CompError as exc:
        return {"format": "auto"}, [Guess("submission.format", "auto", f"submission format unclear: {exc.message}")]
    columns = value_columns(sample)
    if fmt == "binary":
        positive = classes[positive_index(classes, columns[0])]
        reason = f"submission: column '{columns[0]}' holds the probability of class {column_name(positive)!r}"
        return {"format": fmt, "positive_class": positive}, [Guess("submission.positive_class", positive, reason)]
    reason = (
        f"submission: column '{columns[0]}' holds the class label"
        if fmt == "label"
        else f"submission: one probability column per class ({len(columns)})"
    )
    return {"format": fmt}, [Guess("submission.format", fmt, reason)]


def config_tree(survey: Survey, slug: str) -> tuple[dict[str, Any], list[Guess]]:
    submission, guesses = submission_guesses(survey)
    tree: dict[str, Any] = {
        "name": slug,
        "data": {**survey.config(slug), "image_size": survey.suggested_image_size},
    }
    if survey.group_column:
        tree["folds"] = {"group_column": survey.group_column}
    tree["submission"] = submission
    return tree, survey.guesses + guesses


def commented_yaml(tree: dict[str, Any], guesses: list[Guess], header: str) -> str:
    """The tree as YAML, each guessed key's line followed by a comment saying what was detected."""
    reasons = {g.key: g.reason for g in guesses}
    lines, section = [f"# {header}"], ""
    for line in yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=1000).splitlines():
        key = line.strip().split(":", 1)[0]
        section = key if not line.startswith(" ") else section
        dotted = f"{section}.{key}" if line.startswith(" ") else key
        lines.append(f"{line}  # {reasons[dotted]}" if dotted in reasons else line)
    return "\n".join(lines) + "\n"


def write_competition_config(survey: Survey, slug: str, folder: Path = LOCAL_CONFIGS) -> CompetitionConfig:
    """configs/<slug>.yaml from the survey, never over an existing file; checked to load before it is written."""
    tree, guesses = config_tree(survey, slug)
    build_config(tree, f"the surveyed config of {slug}")
    text = commented_yaml(tree, guesses, f"Written by `comp download {slug}` from the survey of {survey.root}.")
    path = Path(folder) / f"{slug}.yaml"
    if path.exists():
        return CompetitionConfig(path, False, text)
    write_text(path, text)
    return CompetitionConfig(path, True, text)
