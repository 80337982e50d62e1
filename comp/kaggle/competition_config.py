"""configs/<slug>.yaml written from a survey: the data keys, the suggested image size and group column,
the task, the submission format and the metric the files imply, each guess commented with what it is.

    files                                                   task        format         metric
    label cells of space-separated tags that recombine      multilabel  tags           f_beta {beta: 2}
    sample cells of k space-separated labels                multiclass  top_k          map_at_k {k: k}
    one-hot label columns, a probability column per class   multiclass  probabilities  mean_column_auc
    a label column, a probability column per class          multiclass  probabilities  log_loss
    two classes, one probability column                     binary      binary         roc_auc
    integer grades 0..G-1 in a column named like a grade    ordinal     label          quadratic_weighted_kappa
    integer grades 0..G-1, another label column             multiclass  label          (accuracy), ordinal offered
    other labels, a label column                            multiclass  label          (accuracy)

Integer labels alone do not say the grades are ordered (digit labels are integers too): a label column
named like a grade (aptos's `diagnosis`, diabetic-retinopathy's `level`, PANDA's `isup_grade`) makes the
task ordinal, scored by quadratic weighted kappa; any other integer label column stays multiclass and the
config offers `data.task: ordinal` in a comment."""

from __future__ import annotations

from dataclasses import dataclass, field
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
from comp.submission.formats import detect_format, positive_index, sample_k, value_columns


@dataclass
class CompetitionConfig:
    path: Path
    written: bool  # False: the file was there already and is left as it is
    text: str  # what was written, or would have been
    guesses: list[Guess] = field(default_factory=list)  # the task, metric and submission guesses (beyond the survey's)

    def __rich__(self) -> Group:
        detected = [Text(f"detected: {g.reason}  ({g.key})") for g in self.guesses]
        if not self.written:
            head = Text(f"{self.path} already exists: left as it is. The surveyed config would be:")
            return Group(*detected, head, *self._body())
        head = Text(f"Wrote {self.path} (edit any guess; the comment says what each one is):")
        return Group(*detected, head, *self._body())

    def _body(self) -> list[Text]:
        return [Text("  " + line) for line in self.text.splitlines()]


def submission_guesses(survey: Survey) -> tuple[dict[str, Any], list[Guess]]:
    """submission.format (and the binary column's class) from the sample submission's columns and the task."""
    competition = survey.competition
    sample, classes = competition.sample, competition.classes
    try:
        fmt = detect_format(sample, classes, task=competition.task)
    except CompError as exc:
        return {"format": "auto"}, [Guess("submission.format", "auto", f"submission format unclear: {exc.message}")]
    columns = value_columns(sample)
    if fmt == "binary":
        positive = classes[positive_index(classes, columns[0])]
        reason = f"submission: column '{columns[0]}' holds the probability of class {column_name(positive)!r}"
        return {"format": fmt, "positive_class": positive}, [Guess("submission.positive_class", positive, reason)]
    reason = {
        "label": f"submission: column '{columns[0]}' holds the class label",
        "probabilities": f"submission: one probability column per class ({len(columns)})",
        "tags": f"submission: column '{columns[0]}' holds each row's tags, space-separated",
        "top_k": f"submission: column '{columns[0]}' holds {sample_k(sample)} labels a row, best first",
    }[fmt]
    return {"format": fmt}, [Guess("submission.format", fmt, reason)]


def _grades(classes: list) -> bool:
    """Integer labels 0..G-1 (three or more, no gaps): they may be ordered grades."""
    return len(classes) >= 3 and classes == list(range(len(classes)))


# Words in the names of label columns that hold ordered grades: aptos's diagnosis, diabetic-retinopathy's
# level, PANDA's isup_grade.
GRADE_WORDS = ("grade", "level", "severity", "diagnosis", "stage", "rating")


def _named_like_grades(data: dict[str, Any]) -> bool:
    column = str(data.get("label_column") or "").lower()
    return any(word in column for word in GRADE_WORDS)


def task_guesses(survey: Survey, fmt: str) -> tuple[str, dict[str, Any], list[Guess]]:
    """data.task, and predict.metric (+ metric_params) where the label and submission formats imply one."""
    competition, data = survey.competition, survey.data
    task, classes = competition.task, competition.classes
    change = "change predict.metric if the competition scores otherwise"
    predict: dict[str, Any] = {}
    if task == "multilabel":
        reason = "labels: space-separated tags that recombine, so a row holds several classes (a sigmoid per tag)"
        predict = {"metric": "f_beta", "metric_params": {"beta": 2}}
        metric = f"mean F2 over the rows (planet's metric), the usual choice for tags; {change}"
    elif fmt == "top_k":
        k = sample_k(competition.sample)
        reason = "one label a row; the submission ranks several"
        predict = {"metric": "map_at_k", "metric_params": {"k": k}}
        metric = f"MAP@{k}: the sample's rows hold {k} labels, best first; {change}"
    elif fmt == "probabilities":
        one_hot = "label_columns" in data
        reason = "one-hot label columns, one 1 a row" if one_hot else "one label a row"
        predict = {"metric": "mean_column_auc" if one_hot else "log_loss"}
        metric = (
            f"mean column-wise ROC AUC, the usual score of one-hot probability columns; {change}"
            if one_hot
            else f"multi-class log loss, the usual score of a probability column per class; {change}"
        )
    elif fmt == "binary":
        reason = "two classes"
        predict = {"metric": "roc_auc"}
        metric = f"ROC AUC, the usual score of one probability column; {change} (log_loss, ...)"
    elif _grades(classes) and _named_like_grades(data):
        task, column = "ordinal", data["label_column"]
        reason = (
            f"integer grades 0..{classes[-1]} in column '{column}', a grade's name: ordered, each predicted as the "
            "expected grade with cut points fitted on the OOF rows; set data.task: multiclass (and "
            "predict.metric: accuracy) if they are unordered classes"
        )
        predict = {"metric": "quadratic_weighted_kappa"}
        metric = f"quadratic weighted kappa, the usual score of ordered grades (aptos's metric); {change}"
    elif _grades(classes):
        reason = (
            f"integer labels 0..{classes[-1]}: multiclass, but if they are ordered grades (as aptos's diagnosis) "
            "set data.task: ordinal and predict.metric: quadratic_weighted_kappa (the files cannot say the metric)"
        )
        metric = ""
    else:
        reason, metric = f"one label a row, {len(classes)} classes", ""
    guesses = [Guess("data.task", task, f"task {task}: {reason}")]
    if predict:
        guesses.append(Guess("predict.metric", predict["metric"], f"metric: {metric}"))
    return task, predict, guesses


ORDINAL_OFFER = "  # task: ordinal  # ordered grades: with predict.metric: quadratic_weighted_kappa (see above)"


def config_tree(survey: Survey, slug: str) -> tuple[dict[str, Any], list[Guess]]:
    submission, guesses = submission_guesses(survey)
    task, predict, task_reasons = task_guesses(survey, submission["format"])
    tree: dict[str, Any] = {
        "name": slug,
        "data": {**survey.config(slug), "task": task, "image_size": survey.suggested_image_size},
    }
    if survey.group_column:
        tree["folds"] = {"group_column": survey.group_column}
    if predict:
        tree["predict"] = predict
    tree["submission"] = submission
    return tree, survey.guesses + task_reasons + guesses


def commented_yaml(tree: dict[str, Any], guesses: list[Guess], header: str) -> str:
    """The tree as YAML, each guessed key's line followed by a comment saying what was detected (and, for integer
    grades, the ordinal task offered as a commented-out line)."""
    reasons = {g.key: g.reason for g in guesses}
    lines, section = [f"# {header}"], ""
    for line in yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, width=1000).splitlines():
        key = line.strip().split(":", 1)[0]
        section = key if not line.startswith(" ") else section
        dotted = f"{section}.{key}" if line.startswith(" ") else key
        lines.append(f"{line}  # {reasons[dotted]}" if dotted in reasons else line)
        if dotted == "data.task" and "data.task: ordinal" in reasons[dotted]:
            lines.append(ORDINAL_OFFER)
    return "\n".join(lines) + "\n"


def write_competition_config(survey: Survey, slug: str, folder: Path = LOCAL_CONFIGS) -> CompetitionConfig:
    """configs/<slug>.yaml from the survey, never over an existing file; checked to load before it is written."""
    tree, guesses = config_tree(survey, slug)
    build_config(tree, f"the surveyed config of {slug}")
    text = commented_yaml(tree, guesses, f"Written by `comp download {slug}` from the survey of {survey.root}.")
    path = Path(folder) / f"{slug}.yaml"
    beyond_survey = guesses[len(survey.guesses) :]
    if path.exists():
        return CompetitionConfig(path, False, text, beyond_survey)
    write_text(path, text)
    return CompetitionConfig(path, True, text, beyond_survey)
