"""Submissions in every sample-submission format, and the validator that checks them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import comp.submission.validate as validator
from comp.cli import app
from comp.errors import CompError
from comp.submission.checks import ROWS_SHOWN
from comp.submission.formats import create_submission, detect_format, read_sample_submission, write_submission
from comp.submission.validate import validate_submission

INT_CLASSES = list(range(12))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sample_from(tmp_path: Path, text: str) -> pd.DataFrame:
    return read_sample_submission(write(tmp_path / "sample_submission.csv", text))


def confident(ids: list[str], classes: list, winners: list) -> pd.DataFrame:
    """Predictions indexed by id: 0.9 on each row's winner, the rest spread evenly."""
    probs = np.full((len(ids), len(classes)), 0.1 / (len(classes) - 1))
    for row, winner in enumerate(winners):
        probs[row, classes.index(winner)] = 0.9
    return pd.DataFrame(probs, index=pd.Index(ids, name="id"), columns=[str(c) for c in classes])


def written(frame: pd.DataFrame, path: Path) -> list[str]:
    write_submission(frame, path)
    return path.read_text().splitlines()


# ----------------------------------------------------------------------------- formats


def test_integer_labels_stay_integers(tmp_path):
    sample = sample_from(tmp_path, "id,label\n007,0\n1,0\n2,0\n3,0\n")
    assert detect_format(sample, INT_CLASSES) == "label"
    probs = confident(["007", "1", "2", "3"], INT_CLASSES, [10, 11, 2, 0])
    lines = written(create_submission(sample, probs, INT_CLASSES), tmp_path / "sub.csv")
    assert lines == ["id,label", "007,10", "1,11", "2,2", "3,0"]


def test_string_labels_with_spaces_and_slashes_are_written_verbatim(tmp_path):
    classes = ["Black-grass", "Common Chickweed", "cat/dog", "Loose Silky-bent"]
    sample = sample_from(tmp_path, "file,species\na.png,Black-grass\nb.png,Black-grass\nc.png,Black-grass\n")
    probs = confident(["a.png", "b.png", "c.png"], classes, ["Common Chickweed", "cat/dog", "Loose Silky-bent"])
    lines = written(create_submission(sample, probs, classes), tmp_path / "sub.csv")
    assert lines == ["file,species", "a.png,Common Chickweed", "b.png,cat/dog", "c.png,Loose Silky-bent"]


def test_probability_columns_are_matched_by_name_clipped_and_renormalised(tmp_path):
    classes = ["a", "b", "c"]
    sample = sample_from(tmp_path, "id,c,a,b\nx,0.2,0.3,0.5\ny,0.2,0.3,0.5\n")
    assert detect_format(sample, classes) == "probabilities"
    probs = pd.DataFrame({"a": [0.2, 0.5], "b": [0.6, -0.1], "c": [0.2, 1.5]}, index=["x", "y"])
    out = create_submission(sample, probs, classes)
    assert list(out.columns) == ["id", "c", "a", "b"]
    assert out.loc[0, ["a", "b", "c"]].tolist() == pytest.approx([0.2, 0.6, 0.2])
    assert out.loc[1, ["a", "b", "c"]].tolist() == pytest.approx([0.5 / 1.5, 0.0, 1.0 / 1.5])
    write_submission(out, tmp_path / "sub.csv")
    assert validate_submission(tmp_path / "sub.csv", tmp_path / "sample_submission.csv", classes) == []


def test_binary_probability_keeps_ids_with_their_file_extension(tmp_path):
    sample = sample_from(tmp_path, "id,has_cactus\nimg_002.png,0.5\nimg_001.png,0.5\n")
    assert detect_format(sample, [0, 1]) == "binary"
    probs = pd.DataFrame({"0": [0.2, 0.7], "1": [0.8, 0.3]}, index=["img_001.png", "img_002.png"])
    lines = written(create_submission(sample, probs, [0, 1]), tmp_path / "sub.csv")
    assert lines == ["id,has_cactus", "img_002.png,0.3", "img_001.png,0.8"]
    negative = create_submission(sample, probs, [0, 1], positive_class=0)
    assert negative["has_cactus"].tolist() == pytest.approx([0.7, 0.2])


def test_binary_column_named_after_a_class_holds_that_class(tmp_path):
    sample = sample_from(tmp_path, "id,cat\nu,0.5\n")
    probs = pd.DataFrame({"cat": [0.9], "dog": [0.1]}, index=["u"])
    assert create_submission(sample, probs, ["cat", "dog"])["cat"].tolist() == pytest.approx([0.9])


def test_one_integer_column_with_two_classes_is_a_label_and_the_config_can_say_binary(tmp_path):
    sample = sample_from(tmp_path, "id,target\nu,0\n")
    assert detect_format(sample, [0, 1]) == "label"
    assert detect_format(sample, [0, 1], "binary") == "binary"


def test_output_follows_the_unsorted_sample_order(tmp_path):
    sample = sample_from(tmp_path, "id,label\nz9,0\na1,0\nm5,0\n")
    probs = confident(["a1", "m5", "z9"], INT_CLASSES, [1, 5, 9])
    lines = written(create_submission(sample, probs, INT_CLASSES), tmp_path / "sub.csv")
    assert lines == ["id,label", "z9,9", "a1,1", "m5,5"]


def test_sample_id_without_prediction_is_refused_with_count_and_examples(tmp_path):
    sample = sample_from(tmp_path, "id,label\na,0\nb,0\nc,0\n")
    with pytest.raises(CompError, match=r"2 of the sample submission's 3 ids have no prediction.*'b', 'c'"):
        create_submission(sample, confident(["a"], INT_CLASSES, [3]), INT_CLASSES)


def test_nan_predictions_are_refused(tmp_path):
    sample = sample_from(tmp_path, "id,label\na,0\n")
    probs = confident(["a"], INT_CLASSES, [3])
    probs.iloc[0, 4] = np.nan
    with pytest.raises(CompError, match="NaN or inf"):
        create_submission(sample, probs, INT_CLASSES)


def test_write_submission_refuses_missing_values_and_leaves_no_file(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "label": [1, None]})
    with pytest.raises(CompError, match="missing values"):
        write_submission(frame, tmp_path / "sub.csv")
    assert list(tmp_path.iterdir()) == []


def test_probability_columns_that_are_not_the_classes_are_listed(tmp_path):
    sample = sample_from(tmp_path, "id,cat,dog,cow\nu,0.3,0.3,0.4\n")
    with pytest.raises(CompError, match=r"no column for the classes 'bird'.*not classes 'cow'"):
        detect_format(sample, ["bird", "cat", "dog"])


def test_a_format_the_sample_cannot_hold_is_refused(tmp_path):
    sample = sample_from(tmp_path, "id,cat,dog\nu,0.5,0.5\n")
    with pytest.raises(CompError, match="label format has exactly one"):
        detect_format(sample, ["cat", "dog"], "label")
    with pytest.raises(CompError, match="not two"):
        detect_format(sample_from(tmp_path, "id,label\nu,1\n"), [0, 1, 2], "binary")


# ----------------------------------------------------------------------------- validator

LABEL_SAMPLE = "id,label\nb,0\na,0\nc,0\n"
PROBABILITY_SAMPLE = "id,cat,dog,cow\nu,0.2,0.3,0.5\nv,0.2,0.3,0.5\n"


def check(tmp_path: Path, text: str, sample_text: str = LABEL_SAMPLE, classes=INT_CLASSES, **kwargs):
    sample = write(tmp_path / "sample_submission.csv", sample_text)
    return validate_submission(write(tmp_path / "sub.csv", text), sample, classes, **kwargs)


def errors(problems) -> list:
    return [p for p in problems if p.is_error]


@pytest.mark.parametrize(
    ("sample_text", "classes"),
    [
        (LABEL_SAMPLE, INT_CLASSES),
        (LABEL_SAMPLE, None),
        (PROBABILITY_SAMPLE, ["cat", "cow", "dog"]),
        ("id,has_cactus\nimg_1.png,0.5\nimg_2.png,0.5\n", [0, 1]),
        ("file,species\nx.png,Common Chickweed\n", ["Black-grass", "Common Chickweed"]),
    ],
)
def test_the_sample_submission_itself_is_valid(tmp_path, sample_text, classes):
    assert check(tmp_path, sample_text, sample_text, classes) == []


def test_missing_and_misnamed_columns(tmp_path):
    problems = check(tmp_path, "id,Label\nb,1\na,1\nc,1\n")
    assert [(p.row, p.column) for p in problems] == [(1, "Label"), (1, "label")]
    assert problems[0].fix == "Rename it to 'label'."
    assert "missing" in problems[1].message


def test_extra_column(tmp_path):
    problems = check(tmp_path, "id,label,score\nb,1,3\na,1,3\nc,1,3\n")
    assert [(p.column, p.fix) for p in problems] == [("score", "Remove it: Kaggle refuses columns the sample lacks.")]


def test_duplicate_column(tmp_path):
    problems = check(tmp_path, "id,label,label\nb,1,1\na,1,1\nc,1,1\n")
    assert any(p.column == "label" and "appears 2 times" in p.message for p in errors(problems))


def test_column_order_is_a_warning(tmp_path):
    problems = check(tmp_path, "id,dog,cow,cat\nu,0.3,0.5,0.2\nv,0.3,0.5,0.2\n", PROBABILITY_SAMPLE, None)
    assert len(problems) == 1 and not problems[0].is_error and "order" in problems[0].message


def test_ids_not_in_the_sample_and_missing_ids(tmp_path):
    problems = check(
        tmp_path, "id,label\nimg_1,1\nimg_2,1\nzzz,1\n", "id,label\nimg_1.png,0\nimg_2.png,0\nimg_3.png,0\n"
    )
    unknown = [p for p in problems if "not in the sample" in p.message]
    assert [(p.row, p.fix) for p in unknown[:2]] == [
        (2, "Write the id exactly as the sample does: 'img_1.png'."),
        (3, "Write the id exactly as the sample does: 'img_2.png'."),
    ]
    assert unknown[2].row == 4 and unknown[2].fix.startswith("Remove the row")
    assert any("3 id(s) of the sample submission are missing" in p.message for p in problems)


def test_row_order_differing_from_the_sample_is_a_warning(tmp_path):
    problems = check(tmp_path, "id,label\na,1\nb,1\nc,1\n")
    assert [(p.row, p.severity) for p in problems] == [(2, "warning")]
    assert "order" in problems[0].message


def test_duplicate_ids(tmp_path):
    problems = check(tmp_path, "id,label\nb,1\na,1\na,2\nc,1\n")
    duplicate = [p for p in problems if "appears again" in p.message]
    assert [(p.row, p.message) for p in duplicate] == [(4, "Id 'a' appears again (first on line 3).")]


def test_row_count(tmp_path):
    problems = check(tmp_path, "id,label\nb,1\na,1\n")
    assert "The file has 2 rows; the sample submission has 3." in [p.message for p in problems]


def test_integer_labels_written_as_floats(tmp_path):
    problems = check(tmp_path, "id,label\nb,1\na,10.0\nc,1\n")
    assert [(p.row, p.column, p.fix) for p in problems] == [
        (3, "label", "Write integer labels without a decimal point (10, not 10.0).")
    ]


def test_non_numbers_in_a_probability_column(tmp_path):
    problems = check(tmp_path, "id,cat,dog,cow\nu,0.2,high,0.5\nv,0.2,0.3,0.5\n", PROBABILITY_SAMPLE, None)
    assert [(p.row, p.column, p.message) for p in problems] == [(2, "dog", "'high' is not a number.")]


def test_label_vocabulary_is_checked_when_classes_are_known(tmp_path):
    text = "id,label\nb,1\na,12\nc,1\n"
    problems = check(tmp_path, text)
    assert [(p.row, p.message) for p in problems] == [(3, "'12' is not one of the 12 class labels.")]
    assert check(tmp_path, text, classes=None) == []


def test_probabilities_outside_zero_one(tmp_path):
    problems = check(
        tmp_path,
        "id,has_cactus\nimg_1.png,1.2\nimg_2.png,-0.1\n",
        "id,has_cactus\nimg_1.png,0.5\nimg_2.png,0.5\n",
        [0, 1],
    )
    assert [(p.row, p.message) for p in problems] == [
        (2, "1.2 is outside [0, 1]."),
        (3, "-0.1 is outside [0, 1]."),
    ]


def test_probability_rows_must_sum_to_one(tmp_path):
    problems = check(tmp_path, "id,cat,dog,cow\nu,0.2,0.3,0.4\nv,0.2,0.3,0.5\n", PROBABILITY_SAMPLE, None)
    assert [(p.row, p.message) for p in problems] == [(2, "The row's probabilities sum to 0.9, not 1.")]


def test_nan_and_inf(tmp_path):
    problems = check(tmp_path, "id,cat,dog,cow\nu,nan,0.3,0.5\nv,0.2,inf,0.5\n", PROBABILITY_SAMPLE, None)
    assert [(p.row, p.column) for p in problems] == [(2, "cat"), (3, "dog")]
    assert all("not a finite number" in p.message for p in problems)
    labels = check(tmp_path, "id,label\nb,1\na,NaN\nc,1\n", classes=None)
    assert [(p.row, p.message) for p in labels] == [(3, "The label is a missing value ('NaN').")]


def test_empty_values(tmp_path):
    problems = check(tmp_path, "id,label\nb,1\n,1\nc,\n")
    assert [(p.row, p.column, p.message) for p in problems if "empty" in p.message] == [
        (3, "id", "The id is empty."),
        (4, "label", "The label is empty."),
    ]


def test_file_size_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(validator, "SIZE_WARNING_BYTES", 10)
    problems = check(tmp_path, LABEL_SAMPLE)
    assert len(problems) == 1 and problems[0].severity == "warning" and "MB" in problems[0].message


def test_ragged_rows_and_non_utf8_files(tmp_path):
    problems = check(tmp_path, "id,label\nb,1\na,Common, Chickweed\nc,1\n")
    assert [(p.row, p.message) for p in problems] == [(3, "The row has 3 field(s); the header has 2.")]
    (tmp_path / "latin.csv").write_bytes("id,label\nb,é\n".encode("latin-1"))
    problems = validate_submission(tmp_path / "latin.csv", tmp_path / "sample_submission.csv", INT_CLASSES)
    assert len(problems) == 1 and "not UTF-8" in problems[0].message


def test_many_bad_rows_are_listed_a_few_then_counted(tmp_path):
    ids = [f"i{n}" for n in range(50)]
    sample = "id,label\n" + "".join(f"{i},0\n" for i in ids)
    problems = check(tmp_path, "id,label\n" + "".join(f"{i},99\n" for i in ids), sample)
    assert len(problems) == ROWS_SHOWN + 1
    assert problems[-1].row is None and problems[-1].message.startswith("45 more row(s)")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A project folder with a tiny config and a label-format sample submission."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "sample_submission.csv", LABEL_SAMPLE)
    write(tmp_path / "cfg.yaml", "name: exp\ndata:\n  root: data\n")
    monkeypatch.setattr("comp.cli.console.width", 200)
    return tmp_path


def run_validate(file: str):
    return CliRunner().invoke(app, ["validate", file, "--config", "cfg.yaml"])


def test_cli_valid_file_exits_zero_and_says_so(workdir):
    result = run_validate(str(write(workdir / "sub.csv", LABEL_SAMPLE)))
    assert result.exit_code == 0, result.output
    assert "sub.csv is a valid submission" in result.output
    assert "label vocabulary was not checked" in result.output


def test_cli_bad_file_exits_one_with_each_problem(workdir):
    result = run_validate(str(write(workdir / "sub.csv", "id,label\nb,1\na,2.0\na,1\n")))
    assert result.exit_code == 1
    assert "not an integer label" in result.output and "appears again" in result.output
    assert "not a valid submission" in result.output


def test_cli_checks_the_vocabulary_from_the_runs_classes(workdir):
    (workdir / "runs" / "exp").mkdir(parents=True)
    (workdir / "runs" / "exp" / "classes.json").write_text(json.dumps([0, 1, 2]))
    result = run_validate(str(write(workdir / "sub.csv", "id,label\nb,1\na,7\nc,1\n")))
    assert result.exit_code == 1
    assert "'7' is not one of the 3 class labels" in result.output


def test_cli_missing_file_is_a_clean_error(workdir):
    result = run_validate("nope.csv")
    assert result.exit_code == 1
    assert "nope.csv not found" in result.output and "Traceback" not in result.output
