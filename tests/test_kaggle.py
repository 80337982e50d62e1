"""The Kaggle round trip: download, safe extraction, layout survey, submit, ledger, errors.

The commands run in a subprocess with the real `kaggle` client, pointed at the fake server of
tests/fake_kaggle.py (the client reads KAGGLE_API_ENVIRONMENT once, when first imported, so a
fresh process is the clean way to set it), with HOME in a temporary folder.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import zipfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import competition_data, sets, write_csv_competition, write_folders_competition
from fake_kaggle import KEY, USERNAME, run_comp, run_python

from comp.data.survey import survey_competition
from comp.errors import CompError
from comp.kaggle.archive import extract_all, extract_zip
from comp.kaggle.credentials import find_credentials, require_credentials
from comp.kaggle.ledger import append_entry, find_by_sha256, read_ledger, update_entry
from comp.kaggle.submit import wait_for_score

SLUG = "fake-comp"


# ----------------------------------------------------------------------------- helpers


def zip_bytes(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip of name -> content, plus name -> target symbolic links."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def image_competition_zip(tmp_path: Path) -> bytes:
    """Shaped like Kaggle's dogs-vs-cats: the sample submission beside train.zip and test.zip."""
    source = tmp_path / "source"
    write_folders_competition(source, n_classes=12, per_class=3, n_test=8)
    return zip_bytes(
        {
            "sample_submission.csv": (source / "sample_submission.csv").read_bytes(),
            "train.zip": zip_bytes(folder_files(source / "train", "train/")),
            "test.zip": zip_bytes(folder_files(source / "test", "test/")),
        }
    )


def files_outside(root: Path, skip: set[str]) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.relative_to(root).parts[0] not in skip}


COMPETITION = sets(*competition_data(SLUG))


# ----------------------------------------------------------------------------- archives


def test_extract_writes_every_file_and_opens_inner_zips(tmp_path):
    archive = tmp_path / "comp.zip"
    archive.write_bytes(
        zip_bytes(
            {
                "train.csv": b"id,label\na,1\n",
                "images.zip": zip_bytes({"images/a.png": b"png"}),
                "docs/": b"",
            },
            links={"latest.csv": "train.csv"},
        )
    )
    result = extract_all(archive, tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "train.csv").read_bytes() == b"id,label\na,1\n"
    assert (out / "images" / "a.png").read_bytes() == b"png"
    assert not (out / "images.zip").exists()
    assert (out / "latest.csv").is_symlink() and (out / "latest.csv").read_bytes() == b"id,label\na,1\n"
    assert result.inner_archives == ["images.zip"]
    assert result.files == 3  # train.csv, images/a.png, latest.csv


@pytest.mark.parametrize(
    "files, links",
    [
        ({"ok.txt": b"x", "../evil.txt": b"x"}, {}),
        ({"ok.txt": b"x", "sub/../../evil.txt": b"x"}, {}),
        ({"/tmp/evil.txt": b"x"}, {}),
        ({"..\\evil.txt": b"x"}, {}),
        ({"C:/evil.txt": b"x"}, {}),
        ({"ok.txt": b"x"}, {"link": "../.."}),
        ({"ok.txt": b"x"}, {"link": "/etc"}),
        ({}, {"a/up": "..", "a/up/escape": "../evil"}),  # each link fine by name, the chain leaves
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "backslash",
        "drive",
        "link-up",
        "link-absolute",
        "link-chain",
    ],
)
def test_zip_slip_is_refused_and_nothing_lands_outside(tmp_path, files, links):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes(files, links))
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(CompError, match="zip-slip"):
        extract_zip(archive, dest)
    assert files_outside(tmp_path, skip={"a"}) == {"evil.zip"}
    assert files_outside(tmp_path / "a", skip={"b"}) == set()
    assert not (tmp_path / "a" / "b" / "evil").exists() and not (tmp_path / "a" / "b" / "evil.txt").exists()


# ----------------------------------------------------------------------------- survey


def render(result) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(result)
    return console.export_text()


def _loads_with(survey_config: dict) -> object:
    """The competition that comp's own loader reads with the surveyed config lines."""
    from comp.config import build_config
    from comp.data.competition import load_competition

    return load_competition(build_config({"data": survey_config}).data)


def test_survey_detects_a_folders_layout_below_a_wrapper_folder(tmp_path):
    write_folders_competition(tmp_path / "dl" / "plant-seedlings", n_classes=12, per_class=4, n_test=9)
    survey = survey_competition(tmp_path / "dl")
    assert survey.root == tmp_path / "dl" / "plant-seedlings"
    assert (survey.layout, survey.train_dir, survey.image_suffix) == ("folders", "train", ".png")
    assert list(survey.class_counts) == [str(i) for i in range(12)]  # 2 before 10: numeric order
    assert set(survey.class_counts.values()) == {4}
    assert survey.image_sizes == {(16, 16): 48}
    assert (survey.test_dir, survey.sample_submission, survey.n_test, survey.n_test_found) == (
        "test",
        "sample_submission.csv",
        9,
        9,
    )
    config = yaml.safe_load(yaml.safe_dump(survey.config("plant-seedlings")))  # as a config file holds it
    competition = _loads_with(config)
    assert len(competition.train) == 48 and len(competition.test) == 9


def test_survey_finds_the_train_csv_and_its_columns_by_content(tmp_path):
    root = tmp_path / "dog-breeds"
    write_csv_competition(root, n_classes=3, per_class=5)
    table = pd.read_csv(root / "train.csv", dtype=str)
    (root / "train.csv").unlink()
    (root / "train").rename(root / "train_images")
    (root / "test").rename(root / "test_images")
    (root / "sample_submission.csv").rename(root / "sampleSubmission.csv")
    labels = pd.DataFrame({"weight": "1", "image_name": table["id"], "breed": "b" + table["label"], "n": range(15)})
    labels.to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"x": ["1", "2"], "y": ["3", "4"]}).to_csv(root / "metadata.csv", index=False)

    survey = survey_competition(root)
    config = survey.config("dog-breeds")
    assert {
        k: config[k]
        for k in (
            "layout",
            "train_csv",
            "id_column",
            "label_column",
            "train_dir",
            "image_suffix",
            "test_dir",
            "sample_submission",
        )
    } == {
        "layout": "csv",
        "train_csv": "labels.csv",
        "id_column": "image_name",
        "label_column": "breed",
        "train_dir": "train_images",
        "image_suffix": ".png",
        "test_dir": "test_images",
        "sample_submission": "sampleSubmission.csv",
    }
    assert survey.class_counts == {"b0": 5, "b1": 5, "b2": 5}
    assert "3 classes" in render(survey)
    assert len(_loads_with(config).train) == 15


def test_survey_says_which_keys_to_set_when_it_cannot_tell(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "readme.txt").write_text("hello")
    with pytest.raises(CompError, match="Cannot tell the layout") as err:
        survey_competition(tmp_path / "odd")
    assert "data.layout" in err.value.hint


# ----------------------------------------------------------------------------- credentials, ledger, polling


@pytest.fixture
def clean_home(tmp_path, monkeypatch) -> Path:
    for name in [n for n in os.environ if n.startswith("KAGGLE_")] + ["XDG_CONFIG_HOME"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_credentials_are_found_where_the_client_looks_and_missing_ones_say_where_to_put_them(clean_home, monkeypatch):
    with pytest.raises(CompError, match="No Kaggle credentials") as err:
        require_credentials()
    assert "~/.kaggle/kaggle.json" in err.value.hint and "KAGGLE_USERNAME and KAGGLE_KEY" in err.value.hint

    (clean_home / ".kaggle").mkdir()
    (clean_home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": USERNAME, "key": KEY}))
    found = find_credentials()
    assert found.source == str(clean_home / ".kaggle" / "kaggle.json") and KEY in found.secrets

    (clean_home / ".kaggle" / "kaggle.json").write_text('{"username": "me"}')
    with pytest.raises(CompError, match="kaggle.json is not a valid Kaggle token"):
        find_credentials()

    (clean_home / ".kaggle" / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    with pytest.raises(CompError, match="KAGGLE_USERNAME is set but KAGGLE_KEY is not"):
        find_credentials()
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    assert find_credentials().source == "KAGGLE_USERNAME/KAGGLE_KEY"


def test_ledger_keeps_values_as_text_and_updates_rows_in_place(tmp_path):
    ledger = tmp_path / "submissions" / "ledger.csv"
    assert read_ledger(ledger).empty
    append_entry(
        {
            "time": "t1",
            "file": "a.csv",
            "sha256": "00ab",
            "message": "first",
            "oof_score": 0.5,
            "kaggle_ref": "0123",
            "status": "pending",
        },
        ledger,
    )
    append_entry({"time": "t2", "file": "b.csv", "sha256": "99cd", "message": "second", "kaggle_ref": "124"}, ledger)
    assert update_entry("0123", {"status": "complete", "public_score": "0.75"}, ledger)
    assert not update_entry("999", {"status": "complete"}, ledger)
    row = find_by_sha256("00ab", ledger)
    assert (row["kaggle_ref"], row["status"], row["public_score"], row["oof_score"]) == (
        "0123",
        "complete",
        "0.75",
        "0.5",
    )
    assert find_by_sha256("ffff", ledger) is None
    assert len(read_ledger(ledger)) == 2
    assert sorted(p.name for p in ledger.parent.iterdir()) == ["ledger.csv"]  # no temporary file left


class StubApi:
    """Just enough of KaggleApi for wait_for_score: GetSubmission answers the given statuses in turn."""

    def __init__(self, statuses: list[str]):
        self.statuses = iter(statuses)

    @contextmanager
    def build_kaggle_client(self):
        def get_submission(request):
            status = next(self.statuses)
            return SimpleNamespace(
                status=SimpleNamespace(name=status),
                ref=request.ref,
                public_score="0.9" if status == "COMPLETE" else None,
            )

        yield SimpleNamespace(
            competitions=SimpleNamespace(competition_api_client=SimpleNamespace(get_submission=get_submission))
        )


@pytest.mark.parametrize(
    "statuses, sleeps, final",
    [
        (["PENDING", "PENDING", "COMPLETE"], [1.0, 1.5], "COMPLETE"),
        (["PENDING"] * 10, [1.0, 1.5, 2.25, 3.375], "PENDING"),  # gives up once 5 s have been waited
    ],
)
def test_waiting_for_a_score_backs_off_and_is_bounded(statuses, sleeps, final):
    slept = []
    creds = SimpleNamespace(source="test", secrets=())
    scored = wait_for_score(StubApi(statuses), creds, SLUG, "7", poll_interval=1.0, max_wait=5.0, sleep=slept.append)
    assert slept == sleeps and scored.status.name == final


# ----------------------------------------------------------------------------- against the fake Kaggle


@pytest.mark.slow
def test_download_extracts_an_image_competition_and_surveys_it(project, fake, home, tmp_path):
    fake.archives[SLUG] = image_competition_zip(tmp_path)
    code, output = run_comp(fake, home, "download", SLUG)
    assert code == 0, output
    folder = project / "data" / SLUG
    assert len(list((folder / "train").glob("*/*.png"))) == 36 and len(list((folder / "test").glob("*.png"))) == 8
    assert not (folder / "train.zip").exists()
    record = json.loads((folder / ".download.json").read_text())
    assert record["sha256"] == hashlib.sha256(fake.archives[SLUG]).hexdigest()
    assert record["inner_archives"] == ["test.zip", "train.zip"]
    assert "layout: folders" in output and "train: 36 images in 12 classes" in output
    assert "16x16" in output and "test: 8 ids in sample_submission.csv, 8 images found in test/" in output
    assert "    layout: folders\n" in output and f"    root: data/{SLUG}\n" in output
    assert [p.name for p in (project / "data").iterdir()] == [SLUG]  # the staging folder is gone

    code, output = run_comp(fake, home, "download", SLUG)
    assert code == 0 and "nothing downloaded" in output
    assert sum("DownloadDataFiles" in call for call in fake.calls) == 1


@pytest.mark.slow
def test_download_refuses_a_zip_slip_archive(project, fake, home):
    fake.archives[SLUG] = zip_bytes({"train.csv": b"id,label\n", "../../outside.txt": b"gotcha"})
    before = files_outside(project, skip={"data"})
    code, output = run_comp(fake, home, "download", SLUG)
    assert code == 1 and "zip-slip" in output and "../../outside.txt" in output
    assert files_outside(project, skip={"data"}) == before
    assert not (project.parent / "outside.txt").exists()
    assert list((project / "data").iterdir()) == []  # no competition folder, no leftovers


@pytest.mark.slow
@pytest.mark.parametrize(
    "code, expected",
    [
        (
            401,
            [
                "rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY (HTTP 401)",
                "kaggle.com/settings/api",
            ],
        ),
        (
            403,
            [
                "(HTTP 403)",
                "rules have not been accepted",
                f"https://www.kaggle.com/competitions/{SLUG}/rules",
            ],
        ),
        (404, [f"no competition '{SLUG}'", "(HTTP 404)", "https://www.kaggle.com/competitions/<slug>"]),
        (429, ["(HTTP 429)", "Wait a few minutes"]),
        (503, ["server error (HTTP 503)", "Kaggle's side"]),
    ],
)
def test_http_errors_say_what_happened_and_what_to_do(project, fake, home, tmp_path, code, expected):
    env = {}
    if code == 401:
        env["KAGGLE_KEY"] = "wrong-key-abcdef"
    elif code != 404:  # 404: the fake has no such competition
        fake.errors["DownloadDataFiles"] = (code, f"kaggle says {code}")
    if code != 404:
        fake.archives[SLUG] = image_competition_zip(tmp_path)
    status, output = run_comp(fake, home, "download", SLUG, **env)
    assert status == 1
    for text in expected:
        assert text in output
    assert "wrong-key-abcdef" not in output
    assert not (project / "data" / SLUG).exists()


@pytest.mark.slow
def test_a_call_meant_for_the_real_kaggle_is_refused_and_reported(project, fake, home):
    code, output = run_comp(fake, home, "download", SLUG, KAGGLE_API_ENVIRONMENT="PROD")
    assert code == 1 and "Could not reach Kaggle while downloading" in output
    assert fake.stray == ["api.kaggle.com:443"]
    fake.stray.clear()  # seen and refused: the fixture's check is for calls nobody expected


@pytest.mark.slow
def test_no_credentials_says_where_to_put_them_before_the_client_runs(project, fake, home):
    code, output = run_comp(fake, home, "download", SLUG, credentials=False)
    assert code == 1 and "No Kaggle credentials found" in output
    assert "~/.kaggle/kaggle.json" in output and "KAGGLE_USERNAME and KAGGLE_KEY" in output
    assert "Authentication required" not in output  # the client's own help never printed: it was not imported
    assert fake.calls == []


def write_submission(project: Path, name: str, oof: float | None = None) -> Path:
    """A valid submission for the csv competition of write_csv_competition (ids x0..x5)."""
    path = project / "submissions" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("id,label\n" + "".join(f"x{i},{i % 4}\n" for i in range(6)))
    if oof is not None:
        path.with_suffix(".json").write_text(json.dumps({"oof_score": oof}))
    return path


@pytest.mark.slow
def test_round_trip_download_submit_wait_and_list(project, fake, home, tmp_path):
    write_csv_competition(tmp_path / "source")
    fake.archives[SLUG] = zip_bytes(folder_files(tmp_path / "source"))
    fake.pending_polls = 2
    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": USERNAME, "key": KEY}))
    run = lambda *args: run_comp(fake, home, *args, *COMPETITION, credentials=False)  # noqa: E731

    code, output = run("download")
    assert code == 0 and "layout: csv (train.csv: id column 'id', label column 'label')" in output, output

    submission = write_submission(project, "exp1", oof=0.8125)
    code, output = run("submit", "submissions/exp1.csv", "-m", "first try", "--wait", "--poll-interval", "0.05")
    assert code == 0, output
    assert "Kaggle ref 1000" in output and "Public score: 0.91250  (OOF 0.8125)" in output
    assert fake.submissions[0].content == submission.read_bytes()
    assert (fake.submissions[0].file_name, fake.submissions[0].description) == ("exp1.csv", "first try")
    assert sum("GetSubmission" in call for call in fake.calls) == 3  # pending, pending, complete
    ledger = read_ledger(project / "submissions" / "ledger.csv")
    assert ledger[["file", "message", "oof_score", "kaggle_ref", "status", "public_score"]].values.tolist() == [
        ["submissions/exp1.csv", "first try", "0.8125", "1000", "complete", "0.91250"]
    ]
    assert ledger["sha256"][0] == hashlib.sha256(submission.read_bytes()).hexdigest()

    (project / "submissions" / "copy.csv").write_bytes(submission.read_bytes())  # same content, other name
    code, output = run("submit", "submissions/copy.csv", "-m", "same again")
    assert code == 1 and "already submitted" in output and "as submissions/exp1.csv (ref 1000" in output
    assert "--force" in output
    assert len(fake.submissions) == 1 and len(read_ledger(project / "submissions" / "ledger.csv")) == 1

    code, output = run("submit", "submissions/exp1.csv", "-m", "same again", "--force")
    assert code == 0 and "Kaggle ref 1001" in output and "OOF 0.8125" in output
    assert len(read_ledger(project / "submissions" / "ledger.csv")) == 2

    code, output = run("submissions")
    assert code == 0, output
    rows = [line for line in output.splitlines() if "exp1.csv" in line]
    assert len(rows) == 2
    assert "1001" in rows[0] and "pending" in rows[0] and "0.8125" in rows[0]
    assert "1000" in rows[1] and "complete" in rows[1] and "0.91250" in rows[1] and "0.8125" in rows[1]

    fake.submissions[1].status, fake.submissions[1].public_score = "COMPLETE", "0.93750"  # scored since
    ledger_path = project / "submissions" / "ledger.csv"
    before = ledger_path.read_bytes()
    listing = f"from comp.kaggle.submissions import list_submissions; print(list_submissions({SLUG!r}).rows[0])"
    code, output = run_python(fake, home, "-c", listing, credentials=False)
    assert code == 0 and "0.93750" in output, output
    assert ledger_path.read_bytes() == before  # listing only reads
    code, output = run("submissions")
    assert code == 0 and "0.93750" in output, output
    assert read_ledger(ledger_path)[["kaggle_ref", "status", "public_score"]].values.tolist()[1] == [
        "1001",
        "complete",
        "0.93750",
    ]  # `comp submissions` records the scores Kaggle now knows


@pytest.mark.slow
def test_a_submission_kaggle_cannot_score_fails_with_its_reason_and_the_ledger_records_the_error(project, fake, home):
    write_csv_competition(project / "data" / SLUG)
    write_submission(project, "exp1")
    fake.scoring_error = "Submission has 5 rows, expected 6"
    code, output = run_comp(fake, home, "submit", "submissions/exp1.csv", "-m", "x", "--wait", *COMPETITION)
    assert code == 1, output
    assert "Kaggle could not score submission 1000 (submissions/exp1.csv): Submission has 5 rows, expected 6." in (
        " ".join(output.split())
    )
    ledger = read_ledger(project / "submissions" / "ledger.csv")
    assert ledger[["file", "kaggle_ref", "status", "public_score"]].values.tolist() == [
        ["submissions/exp1.csv", "1000", "error", ""]
    ]


@pytest.mark.slow
def test_failed_upload_is_reported_and_nothing_is_recorded(project, fake, home):
    write_csv_competition(project / "data" / SLUG)
    write_submission(project, "exp1")
    fake.upload_status = 400
    # VERBOSE makes the client print every request's headers: its Authorization must not leak either
    code, output = run_comp(fake, home, "submit", "submissions/exp1.csv", "-m", "try", *COMPETITION, VERBOSE="1")
    assert code == 1 and "Could not submit to competition" in output and "did not count" in output
    assert base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode() not in output
    assert not any("CreateSubmission" in call for call in fake.calls)
    assert not (project / "submissions" / "ledger.csv").exists()


def test_submit_refuses_an_invalid_file_before_anything_else(project, clean_home):
    from comp.config import load_config
    from comp.kaggle.submit import submit

    write_csv_competition(project / "data" / SLUG)
    bad = project / "submissions" / "bad.csv"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text("id,label\nx0,1\n")
    config = load_config("configs/default.yaml", competition_data(SLUG))
    with pytest.raises(CompError, match="not a valid submission for 'fake-comp', so it was not sent") as err:
        submit(config, bad, "bad")  # without credentials: validation came first, the client never ran
    assert "x1" in err.value.message  # names a missing id
    assert not (project / "submissions" / "ledger.csv").exists()
