"""The official `kaggle` client behind `comp download`, `comp submit` and `comp submissions`.

Credentials are checked before the client is imported: importing `kaggle` authenticates at once
and, without credentials, prints its own help and exits. Every client call runs with the client's
printing silenced, and its HTTP errors become one clear CompError each. Keys never reach a message.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from comp.config import Config
from comp.data.survey import Survey, survey_competition
from comp.errors import CompError
from comp.io import sha256_file, write_json
from comp.kaggle.archive import extract_all
from comp.kaggle.ledger import append_entry, find_by_sha256, oof_by_ref, update_entry
from comp.runs import LEDGER

TOKEN_PAGE = "https://www.kaggle.com/settings/api"
CREDENTIAL_HELP = (
    f"Create an API token at {TOKEN_PAGE} ('Create New Token' downloads kaggle.json) and save it as "
    "~/.kaggle/kaggle.json (then chmod 600 ~/.kaggle/kaggle.json), or set the environment variables "
    "KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN for a new-style token)."
)
_AUTH_VALUE = re.compile(r"\b(Basic|Bearer)\s+\S+")
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
DOWNLOAD_RECORD = ".download.json"  # in data/<slug>/: the archive's name, sha256, size and date
POLL_INTERVAL = 10.0  # seconds before the first look at a new submission's score
POLL_BACKOFF = 1.5  # each wait is this much longer than the one before ...
POLL_MAX_INTERVAL = 60.0  # ... up to this
WAIT_LIMIT = 30 * 60.0  # seconds `--wait` waits for a score before leaving it to `comp submissions`


# ----------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    source: str  # where they were found, for messages
    secrets: tuple[str, ...]  # values that must never appear in output


def _config_dir() -> Path:
    """Where the client looks for kaggle.json (the same rule as kaggle.api.KaggleApi)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path("~/.kaggle").expanduser()
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()) / "kaggle"


def _read_kaggle_json(path: Path) -> dict[str, str]:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        values = None
    if not isinstance(values, dict) or not values.get("username") or not values.get("key"):
        raise CompError(
            f"{path} is not a valid Kaggle token: it must be JSON with 'username' and 'key'.",
            hint=f"Download a fresh one: {CREDENTIAL_HELP}",
        )
    return values


def _token_file() -> Path | None:
    for name in ("access_token", "access_token.txt"):
        path = Path("~/.kaggle").expanduser() / name
        if path.is_file() and path.read_text().strip():
            return path
    return None


def find_credentials() -> Credentials | None:
    """The credentials the client would use, in its own order, or None (nothing is imported)."""
    env = os.environ
    token = env.get("KAGGLE_API_TOKEN")
    if token:
        value = Path(token).read_text().strip() if Path(token).is_file() else token
        return Credentials("the KAGGLE_API_TOKEN environment variable", (token, value))
    if (path := _token_file()) is not None:
        return Credentials(str(path), (path.read_text().strip(),))
    kaggle_json = _config_dir() / "kaggle.json"
    stored = _read_kaggle_json(kaggle_json) if kaggle_json.is_file() else {}
    username = env.get("KAGGLE_USERNAME") or stored.get("username")
    key = env.get("KAGGLE_KEY") or stored.get("key")
    if username and key:
        source = "KAGGLE_USERNAME/KAGGLE_KEY" if env.get("KAGGLE_KEY") else str(kaggle_json)
        return Credentials(source, (key,))
    if username or key:
        present, absent = ("KAGGLE_USERNAME", "KAGGLE_KEY") if username else ("KAGGLE_KEY", "KAGGLE_USERNAME")
        raise CompError(f"{present} is set but {absent} is not.", hint=CREDENTIAL_HELP)
    oauth = Path("~/.kaggle/credentials.json").expanduser()  # written by `kaggle auth login`
    if oauth.is_file():
        return Credentials(str(oauth), ())
    return None


def require_credentials() -> Credentials:
    found = find_credentials()
    if found is None:
        places = dict.fromkeys([Path("~/.kaggle/kaggle.json").expanduser(), _config_dir() / "kaggle.json"])
        raise CompError(
            f"No Kaggle credentials found (looked for {' and '.join(map(str, places))}, and for KAGGLE_* "
            "environment variables).",
            hint=CREDENTIAL_HELP,
        )
    return found


def _redact(text: str, creds: Credentials) -> str:
    """Text without the secrets, nor an Authorization header's value (the client's verbose mode prints it)."""
    for secret in creds.secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _AUTH_VALUE.sub(r"\1 ***", text)


# ----------------------------------------------------------------------------- calling the client


def _status_code(exc: requests.HTTPError) -> int | None:
    """The HTTP status, or the code of Kaggle's JSON error body ({"code": 403, "message": ...})."""
    response = exc.response
    if response is None:
        return None
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        code = None
    return code if isinstance(code, int) and code >= 400 else response.status_code


def _http_error(exc: requests.HTTPError, action: str, slug: str, creds: Credentials) -> CompError:
    status = _status_code(exc) or 0
    page = f"https://www.kaggle.com/competitions/{slug}"
    if status == 401:
        message = f"Kaggle rejected the credentials from {creds.source} (HTTP 401) while {action}."
        hint = f"The key is wrong, expired or revoked: {CREDENTIAL_HELP}"
    elif status == 403:
        message = (
            f"Kaggle refused access to '{slug}' (HTTP 403) while {action}: the competition's rules "
            "have not been accepted with this account."
        )
        hint = f"Open {page}/rules, sign in, accept the rules ('Join Competition'), then run the command again."
    elif status == 404:
        message = f"Kaggle has no competition '{slug}' open to this account (HTTP 404) while {action}."
        hint = (
            "Check the slug: it is the last part of the competition's address, "
            "https://www.kaggle.com/competitions/<slug> (the SLUG argument, or data.competition)."
        )
    elif status == 429:
        message = f"Kaggle is limiting this account's requests (HTTP 429) while {action}."
        hint = (
            "Wait a few minutes, then run the command again; when submitting, today's submission "
            "limit may be used up (it resets at 00:00 UTC)."
        )
    elif status >= 500:
        message = f"Kaggle had a server error (HTTP {status}) while {action}."
        hint = "The problem is on Kaggle's side: try again in a few minutes."
    else:
        message = f"Kaggle answered HTTP {status} while {action}."
        hint = f"See {page} for the competition's status."
    return CompError(f"{message} Kaggle said: {_redact(str(exc), creds)}", hint=hint)


@contextmanager
def _calling(action: str, slug: str, creds: Credentials) -> Iterator[None]:
    """Run client code with its printing silenced; its errors become CompErrors that say the fix."""
    try:
        with redirect_stdout(io.StringIO()):
            yield
    except requests.HTTPError as exc:
        raise _http_error(exc, action, slug, creds) from None
    except requests.RequestException as exc:
        raise CompError(
            _redact(f"Could not reach Kaggle while {action}: {exc}", creds),
            hint="Check the internet connection (and HTTPS_PROXY, if you use a proxy), then try again.",
        ) from None


def _client(creds: Credentials, slug: str) -> Any:
    """An authenticated kaggle.api.KaggleApi (imported only now: importing it authenticates)."""
    with _calling("signing in", slug, creds):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
        except ImportError as exc:
            raise CompError(
                f"The official Kaggle client cannot be imported ({exc}).",
                hint="Install it: pip install kaggle six",
            ) from None
        except SystemExit:
            raise CompError(f"The Kaggle client could not sign in with {creds.source}.", hint=CREDENTIAL_HELP) from None
    return api


def check_slug(slug: str) -> str:
    if slug == "demo":
        raise CompError(
            "'demo' is comp's offline competition (`comp download demo` builds it), not one on Kaggle.",
            hint="Set data.competition to a Kaggle slug (in the config, or --set data.competition=SLUG).",
        )
    if not SLUG.fullmatch(slug or ""):
        raise CompError(
            f"'{slug}' is not a Kaggle competition slug.",
            hint="The slug is the last part of the competition's address: "
            "https://www.kaggle.com/competitions/<slug>, e.g. dogs-vs-cats-redux-kernels-edition.",
        )
    return slug


# ----------------------------------------------------------------------------- download


@dataclass
class DownloadResult:
    folder: Path
    downloaded: bool  # False: the files were already there (pass force to download again)
    record: dict[str, Any]  # data/<slug>/.download.json: archive name, sha256, bytes, date, files
    survey: Survey | None
    survey_error: CompError | None  # why the layout could not be detected

    def summary_lines(self, slug: str) -> list[str]:
        record = self.record
        if self.downloaded:
            head = (
                f"Downloaded {record['archive']} ({_size(record['bytes'])}, sha256 "
                f"{record['sha256'][:12]}) into {self.folder}/: {record['files']} files"
            )
        else:
            head = f"{self.folder}/ already holds the files: nothing downloaded (--force downloads again)"
        if self.survey is None:
            return [head, f"Layout not detected: {self.survey_error}"]
        return [
            head,
            *self.survey.summary_lines(),
            "Config lines for this competition:",
            *("  " + line for line in self.survey.config_lines(slug)),
        ]


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
    creds = require_credentials()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{slug}.", dir=dest.parent))
    try:
        api = _client(creds, slug)
        with _calling("downloading the competition's files", slug, creds):
            api.competition_download_files(slug, path=str(staging / "archive"), force=True, quiet=True)
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
                "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
    return DownloadResult(dest, downloaded, record, survey, problem)


# ----------------------------------------------------------------------------- submit


@dataclass
class SubmitResult:
    file: Path
    sha256: str
    ref: str  # Kaggle's id of the submission
    oof_score: float | None
    status: str  # pending | complete | error
    public_score: str | None
    warnings: list[str]  # validator warnings: Kaggle accepts the file, but it differs from the sample


def _describe(problem: Any) -> str:
    where = ", ".join(
        p
        for p in (
            f"line {problem.row}" if problem.row is not None else "",
            f"column '{problem.column}'" if problem.column else "",
        )
        if p
    )
    return f"{where + ': ' if where else ''}{problem.message} ({problem.fix})"


def _oof_score(csv_path: Path) -> float | None:
    """The OOF score `comp ensemble` recorded beside the submission (submissions/<name>.json)."""
    sidecar = csv_path.with_suffix(".json")
    try:
        score = json.loads(sidecar.read_text()).get("oof_score")
    except (OSError, ValueError, AttributeError):
        return None
    return float(score) if isinstance(score, (int, float)) else None


def _status_name(submission: Any) -> str:
    return getattr(submission.status, "name", str(submission.status)).rsplit("_", 1)[-1].lower()


def wait_for_score(
    api: Any,
    creds: Credentials,
    competition: str,
    ref: str,
    poll_interval: float = POLL_INTERVAL,
    max_wait: float = WAIT_LIMIT,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Poll a submission (politely, with backoff) until Kaggle scores it or max_wait seconds have passed."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetSubmissionRequest

    if poll_interval <= 0:
        raise ValueError("poll_interval must be positive")
    request = ApiGetSubmissionRequest()
    request.ref = int(ref)
    waited, interval = 0.0, poll_interval
    while True:
        with (
            _calling("reading the submission's score", competition, creds),
            api.build_kaggle_client() as client,
        ):
            submission = client.competitions.competition_api_client.get_submission(request)
        if _status_name(submission) != "pending" or waited >= max_wait:
            return submission
        sleep(interval)
        waited += interval
        interval = min(interval * POLL_BACKOFF, POLL_MAX_INTERVAL)


def _refuse_resubmission(csv_path: Path, sha256: str, ledger_path: Path) -> None:
    previous = find_by_sha256(sha256, ledger_path)
    if previous is not None:
        score = previous["public_score"] or previous["status"] or "unknown"
        raise CompError(
            f"{csv_path} was already submitted: the same content (sha256 {sha256[:12]}) went to Kaggle at "
            f"{previous['time']} as {previous['file']} (ref {previous['kaggle_ref']}, public score {score}).",
            hint="Each submission counts against Kaggle's daily limit; pass --force to submit it again.",
        )


def submit_file(
    csv_path: Path,
    message: str,
    competition: str,
    *,
    validate: Callable[[Path], list[str]] | None = None,
    force: bool = False,
    wait: bool = False,
    poll_interval: float = POLL_INTERVAL,
    max_wait: float = WAIT_LIMIT,
    ledger_path: Path = LEDGER,
    sleep: Callable[[float], None] = time.sleep,
) -> SubmitResult:
    """Send a file to Kaggle, record it in the ledger, and optionally wait for its score.

    Refuses a file whose content was submitted before (unless force), then runs `validate` (which
    raises CompError for an invalid file and returns its warnings) before anything is sent.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CompError(f"Submission file {csv_path} not found.", hint="Check the path (comp writes to submissions/).")
    sha256 = sha256_file(csv_path)
    if not force:
        _refuse_resubmission(csv_path, sha256, ledger_path)
    warnings = validate(csv_path) if validate is not None else []
    creds = require_credentials()
    api = _client(creds, competition)
    with _calling("submitting", competition, creds):
        response = api.competition_submit(str(csv_path), message, competition, quiet=True)
    # A failed upload is not an exception: the client answers with this message and ref 0.
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE or not response.ref:
        raise CompError(
            f"Kaggle did not take {csv_path}: {response.message or 'no submission was created'}.",
            hint="The upload failed, so nothing was recorded and the submission did not count: run the command again.",
        )
    ref, oof = str(response.ref), _oof_score(csv_path)
    append_entry(
        {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "file": csv_path.as_posix(),
            "sha256": sha256,
            "message": message,
            "oof_score": oof,
            "kaggle_ref": ref,
            "status": "pending",
            "public_score": None,
        },
        ledger_path,
    )
    result = SubmitResult(csv_path, sha256, ref, oof, "pending", None, warnings)
    if wait:
        scored = wait_for_score(api, creds, competition, ref, poll_interval, max_wait, sleep)
        result.status, result.public_score = _status_name(scored), scored.public_score
        update_entry(ref, {"status": result.status, "public_score": result.public_score}, ledger_path)
        if result.status == "error":
            raise CompError(
                f"Kaggle could not score submission {ref} ({csv_path}): "
                f"{scored.error_description or 'no reason given'}.",
                hint="Fix the file and submit again; the ledger records the error.",
            )
    return result


def _validate(csv_path: Path, config: Config) -> list[str]:
    """The validator's warnings for a submission; CompError listing its errors."""
    from comp.submission.formats import validate_with_config

    problems, _ = validate_with_config(csv_path, config)
    errors = [_describe(p) for p in problems if p.is_error]
    if errors:
        raise CompError(
            f"{csv_path} is not a valid submission for '{config.data.competition}', so it was not sent: "
            + "; ".join(errors),
            hint="Fix the file, or write it with `comp ensemble`, then submit again.",
        )
    return [_describe(p) for p in problems if not p.is_error]


def submit(
    config: Config,
    csv_path: Path,
    message: str,
    *,
    force: bool = False,
    wait: bool = False,
    poll_interval: float = POLL_INTERVAL,
) -> SubmitResult:
    """Submit a file to the configured competition, validated against its sample submission first."""
    return submit_file(
        csv_path,
        message,
        check_slug(config.data.competition),
        validate=lambda path: _validate(path, config),
        force=force,
        wait=wait,
        poll_interval=poll_interval,
    )


# ----------------------------------------------------------------------------- submissions


@dataclass
class SubmissionRow:
    ref: str
    date: str
    file_name: str
    description: str
    status: str
    public_score: str
    private_score: str
    oof_score: str  # from the ledger, when comp submitted this one


def list_submissions(competition: str, limit: int = 20, ledger_path: Path = LEDGER) -> list[SubmissionRow]:
    """The competition's recent submissions beside the ledger's OOF scores; new scores go into the ledger."""
    check_slug(competition)
    creds = require_credentials()
    api = _client(creds, competition)
    with _calling("listing submissions", competition, creds):
        found = api.competition_submissions(competition, page_size=limit) or []
    oof = oof_by_ref(ledger_path)
    rows = []
    for sub in found:
        ref = str(sub.ref)
        date = sub.date.strftime("%Y-%m-%d %H:%M") if sub.date else ""
        rows.append(
            SubmissionRow(
                ref,
                date,
                sub.file_name or "",
                sub.description or "",
                _status_name(sub),
                sub.public_score or "",
                sub.private_score or "",
                oof.get(ref, ""),
            )
        )
        update_entry(ref, {"status": rows[-1].status, "public_score": sub.public_score}, ledger_path)
    return rows
