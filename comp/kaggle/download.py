"""`comp download`: a competition's archive fetched, extracted safely into data/<slug>/, and surveyed.

The archive is extracted into a staging folder beside the destination and swapped into place only
when complete, so an interrupted or refused download never leaves a half-written competition.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from comp.data.survey import Survey, survey_competition
from comp.errors import CompError
from comp.io import sha256_file, write_json
from comp.kaggle.archive import extract_all
from comp.kaggle.client import check_slug, create_session

DOWNLOAD_RECORD = ".download.json"  # in data/<slug>/: the archive's name, sha256, size and date


@dataclass
class DownloadResult:
    competition: str
    folder: Path
    downloaded: bool  # False: the files were already there (pass force to download again)
    record: dict[str, Any]  # data/<slug>/.download.json: archive name, sha256, bytes, date, files
    survey: Survey | None
    survey_error: CompError | None  # why the layout could not be detected

    def __rich__(self) -> Group:
        record = self.record
        if self.downloaded:
            head = (
                f"Downloaded {record['archive']} ({_size(record['bytes'])}, sha256 "
                f"{record['sha256'][:12]}) into {self.folder}/: {record['files']} files"
            )
        else:
            head = f"{self.folder}/ already holds the files: nothing downloaded (--force downloads again)"
        if self.survey is None:
            lines = [head, f"Layout not detected: {self.survey_error}"]
        else:
            lines = [
                head,
                *self.survey.summary_lines(),
                "Config lines for this competition:",
                *("  " + line for line in self.survey.config_lines(self.competition)),
            ]
        return Group(*map(Text, lines))


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


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


def _fetch(slug: str, dest: Path) -> None:
    """Download the competition's archive next to `dest`, extract it safely, then swap it into place."""
    session = create_session(slug)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}.", dir=dest.parent))
    try:
        with session.calling("downloading the competition's files"):
            session.api.competition_download_files(slug, path=str(staging / "archive"), force=True, quiet=True)
        archives = sorted((staging / "archive").glob("*")) if (staging / "archive").is_dir() else []
        if len(archives) != 1:
            raise CompError(
                f"Kaggle sent {len(archives)} files for '{slug}' where one archive was expected.",
                hint="Run the command again; if it persists, download the data from the website.",
            )
        archive, files = archives[0], staging / "files"
        extracted = extract_all(archive, files)
        write_json(
            files / DOWNLOAD_RECORD,
            {
                "competition": slug,
                "archive": archive.name,
                "sha256": sha256_file(archive),
                "bytes": archive.stat().st_size,
                "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": extracted.files,
                "inner_archives": extracted.inner_archives,
            },
        )
        _replace_folder(files, dest, staging / "previous")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_competition(slug: str, data_dir: Path = Path("data"), force: bool = False) -> DownloadResult:
    """Fetch a competition's files into data_dir/<slug>/ (unless already there), then survey them."""
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
    return DownloadResult(slug, dest, downloaded, record, survey, problem)
