"""`comp download`: a competition's archive fetched, extracted safely into data/<slug>/, and surveyed.

The archive is fetched into data/.<slug>.partial/ (an interrupted fetch is continued from there by the
next `comp download`), extracted beside it and swapped into data/<slug>/ only when complete, so an
interrupted or refused download never leaves a half-written competition; once in place, the partial
folder is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.progress import Progress, TaskID
from rich.text import Text

from comp.config_files import LOCAL_CONFIGS
from comp.data.demo import DemoSummary, write_demo
from comp.data.survey import Survey, survey_competition
from comp.errors import CompError
from comp.io import sha256_file, write_json
from comp.kaggle.archive import UnsafeArchive, extract_all
from comp.kaggle.client import check_slug, create_session
from comp.kaggle.competition_config import CompetitionConfig, write_competition_config
from comp.kaggle.fetch import create_progress, fetch_archive, size_text

DATA = Path("data")  # data/<slug>/: each competition's files
DEMO = "demo"  # `comp download demo`: the offline demo competition, built rather than fetched
DOWNLOAD_RECORD = ".download.json"  # in data/<slug>/: the archive's name, sha256, size and date


@dataclass
class DownloadResult:
    competition: str
    folder: Path
    downloaded: bool  # False: the files were already there (pass force to download again)
    record: dict[str, Any]  # data/<slug>/.download.json: archive name, sha256, bytes, date, files
    survey: Survey | None
    survey_error: CompError | None  # why the layout could not be detected
    config_file: CompetitionConfig | None = None  # configs/<slug>.yaml, written from the survey

    def __rich__(self) -> Group:
        record = self.record
        if self.downloaded:
            head = (
                f"Downloaded {record['archive']} ({size_text(record['bytes'])}, sha256 "
                f"{record['sha256'][:12]}) into {self.folder}/: {record['files']} files"
            )
        else:
            head = f"{self.folder}/ already holds the files: nothing downloaded (--force downloads again)"
        if self.survey is None:
            return Group(Text(head), Text(f"Not surveyed, so no config written: {self.survey_error}"))
        return Group(Text(head), self.survey, self.config_file)


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _replace_folder(new: Path, dest: Path, trash: Path) -> None:
    """Put `new` at `dest`; a previous `dest` is moved aside first and put back if that fails."""
    if dest.exists():
        os.replace(dest, trash)
    try:
        os.replace(new, dest)
    except OSError:
        if trash.exists():
            os.replace(trash, dest)
        raise


def check_writable(data_dir: Path) -> None:
    """Refuse before anything is asked of Kaggle when data_dir cannot be created or written to."""
    try:
        if data_dir.exists() and not data_dir.is_dir():
            raise NotADirectoryError(0, "it is a file, not a folder")
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise CompError(
            f"Cannot write to {data_dir}/, where the competition's files go: {exc.strerror or exc}.",
            hint=f"Make {data_dir}/ a folder you can write to (check its owner and permissions, and that "
            "the disk is not mounted read-only), or run comp from another folder.",
        ) from None


def _remove_old_staging(data_dir: Path, slug: str) -> None:
    """Staging folders of comp versions before the partial folder (tempfile's `.<slug>.XXXXXXXX`)."""
    old = re.compile(re.escape(f".{slug}.") + r"[a-z0-9_]{8}")
    for folder in data_dir.iterdir():
        if old.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _Bar:
    """archive.Meter on a rich progress task."""

    progress: Progress
    task: TaskID

    def add_total(self, n: int) -> None:
        self.progress.update(self.task, total=(self.progress.tasks[self.task].total or 0) + n)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)


def _extract(archive: Path, partial: Path, progress: Progress) -> Path:
    """The archive's files extracted into partial/files; a refused archive is removed with its folder."""
    files = partial / "files"
    shutil.rmtree(files, ignore_errors=True)  # an extraction cut short
    bar = _Bar(progress, progress.add_task(f"extract {archive.name}", total=0))
    try:
        extracted = extract_all(archive, files, bar)
    except UnsafeArchive:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(files, ignore_errors=True)  # the archive is kept: the next try extracts it again
        raise
    write_json(
        files / DOWNLOAD_RECORD,
        {
            "competition": archive.name.rsplit(".", 1)[0],
            "archive": archive.name,
            "sha256": sha256_file(archive),
            "bytes": archive.stat().st_size,
            "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": extracted.files,
            "inner_archives": extracted.inner_archives,
        },
    )
    return files


def partial_folder(data_dir: Path, slug: str) -> Path:
    """Where an unfinished download of `slug` is kept until the next `comp download` finishes it."""
    return data_dir / f".{slug}.partial"


def _fetch(slug: str, dest: Path) -> None:
    """Download (or continue) the archive, extract it beside `dest`, then swap it into place."""
    check_writable(dest.parent)
    session = create_session(slug)
    _remove_old_staging(dest.parent, slug)
    partial = partial_folder(dest.parent, slug)
    archive = fetch_archive(session, partial)
    with create_progress() as progress:
        files = _extract(archive, partial, progress)
    _replace_folder(files, dest, partial / "previous")
    shutil.rmtree(partial, ignore_errors=True)


def download(slug: str, force: bool = False) -> DownloadResult | DemoSummary:
    """`comp download SLUG`: the competition from Kaggle; `comp download demo`: the offline demo, built here."""
    if slug == DEMO:
        return write_demo(DATA / DEMO, force)
    return download_competition(slug, DATA, force)


def download_competition(
    slug: str, data_dir: Path = DATA, force: bool = False, configs_dir: Path = LOCAL_CONFIGS
) -> DownloadResult:
    """Fetch a competition's files into data_dir/<slug>/ (unless already there), survey them and write
    configs_dir/<slug>.yaml from the survey (never over an existing one)."""
    dest = Path(data_dir) / check_slug(slug)
    downloaded = force or not _has_files(dest)
    if downloaded:
        _fetch(slug, dest)
    record_path = dest / DOWNLOAD_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    try:
        survey, problem = survey_competition(dest), None
    except CompError as exc:
        survey, problem = None, exc
    if survey is None:
        return DownloadResult(slug, dest, downloaded, record, None, problem)
    config_file = write_competition_config(survey, slug, configs_dir)
    return DownloadResult(slug, dest, downloaded, record, survey, None, config_file)
