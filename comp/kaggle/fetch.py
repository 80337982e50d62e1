"""A competition's archive streamed into its partial folder, continued where an interrupted fetch stopped.

The official client's `competition_download_files` can resume (a Range request, guarded by a
`.kaggle-partial` marker holding the archive's ETag), but it cannot do what `comp download` needs:
it writes before its caller learns the archive's size (so free space cannot be checked first), it
draws its own tqdm bar or none, and on a dropped connection it retries five times with sleeps of up
to a minute each, silently. So comp makes the client's own DownloadDataFiles call (signed in as the
client signs in; its answer is the archive's stream, the redirect followed) and writes the stream
itself; a resume is the Range request the client would make, with the headers of the client's request.

The partial folder `data/.<slug>.partial/` holds the archive as far as it came and `partial.json`
(its name, size and ETag): bytes are appended only to a partial of the very archive Kaggle serves now.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3
from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from comp.console import console
from comp.errors import CompError
from comp.kaggle.client import Session, retry_after
from comp.kaggle.credentials import redact

MARKER = "partial.json"  # in the partial folder: which archive the partial bytes belong to
MAX_WAITS = 5  # 429 answers waited out in one download, at most
MAX_WAIT_S = 600.0  # seconds of waiting for 429s in one download, at most
CHUNK = 1 << 20
TIMEOUTS = (30, 120)  # seconds to connect, and to wait for the next bytes of the archive
ACTION = "downloading the competition's files"
T = TypeVar("T")


def size_text(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


@dataclass(frozen=True)
class Identity:
    """What proves that bytes on disk are the start of the archive Kaggle serves now."""

    archive: str
    size: int | None
    validator: str | None  # the ETag, else Last-Modified


@dataclass(frozen=True)
class Remote:
    identity: Identity
    url: str
    headers: dict[str, str]  # of the client's request for the archive: a resume sends the same
    ranges: bool  # the server answers Range requests

    @classmethod
    def of(cls, response: requests.Response, slug: str) -> Remote:
        suffix = response.url.split("?")[0].rsplit(".", 1)[-1]
        length = response.headers.get("Content-Length")
        identity = Identity(
            f"{slug}.{suffix}",
            int(length) if length else None,
            response.headers.get("ETag") or response.headers.get("Last-Modified"),
        )
        ranges = response.headers.get("Accept-Ranges") == "bytes"
        return cls(identity, response.url, dict(response.request.headers), ranges)


@dataclass
class Waits:
    count: int = 0
    seconds: float = 0.0


def create_progress() -> Progress:
    """A progress bar in bytes: done and total, speed, time left."""
    columns = Progress.get_default_columns()[:2]
    return Progress(*columns, DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=console)


def _with_waits(session: Session, waits: Waits, call: Callable[[], T]) -> T:
    """`call()`, with each 429 that says how long to wait (Retry-After) waited out, within bounds."""
    while True:
        with session.calling(ACTION):
            try:
                return call()
            except requests.HTTPError as exc:
                delay = retry_after(exc)
                if delay is None:
                    raise
                if waits.count >= MAX_WAITS or waits.seconds + delay > MAX_WAIT_S:
                    raise CompError(
                        f"Kaggle is still limiting this account's requests (HTTP 429) while {ACTION}, after "
                        f"{waits.count} waits ({waits.seconds:.0f} s); it now asks for {delay:.0f} s more, beyond "
                        f"the {MAX_WAITS} waits and {MAX_WAIT_S:.0f} s comp waits at most.",
                        hint=f"Wait a while, then run `comp download {session.slug}` again; "
                        "what was already downloaded is kept.",
                    ) from None
        waits.count += 1
        waits.seconds += delay
        console.print(
            f"Kaggle is limiting requests (HTTP 429): waiting {delay:.0f} s as it asks "
            f"(wait {waits.count} of at most {MAX_WAITS})."
        )
        time.sleep(delay)


def _ask_for_archive(kaggle: Any, slug: str) -> requests.Response:
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

    request = ApiDownloadDataFilesRequest()
    request.competition_name = slug
    return kaggle.competitions.competition_api_client.download_data_files(request)


def _ask_for_rest(remote: Remote, kept: int) -> requests.Response:
    """The archive from byte `kept` on; If-Range makes a changed archive come whole (200) instead."""
    headers = remote.headers | {"Range": f"bytes={kept}-"}
    if remote.identity.validator:
        headers["If-Range"] = remote.identity.validator
    response = requests.get(remote.url, headers=headers, stream=True, timeout=TIMEOUTS)
    response.raise_for_status()
    return response


def _read_marker(folder: Path) -> Identity | None:
    try:
        return Identity(**json.loads((folder / MARKER).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def kept_bytes(folder: Path, remote: Remote) -> int:
    """Bytes of this archive already in `folder`; everything else there is removed (it is of no use)."""
    archive, identity = folder / remote.identity.archive, remote.identity
    kept = archive.stat().st_size if archive.is_file() else 0
    usable = (
        identity.validator is not None
        and identity.size is not None
        and _read_marker(folder) == identity
        and 0 < kept <= identity.size
        and (remote.ranges or kept == identity.size)
    )
    if not usable:
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    for path in folder.iterdir():
        if path.name not in (MARKER, archive.name):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return kept


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def check_space(data_dir: Path, remote: Remote, kept: int) -> None:
    """Refuse before writing when the rest of the archive and its extracted files will not fit."""
    size = remote.identity.size
    if size is None:
        return  # Kaggle always says; without it the extraction's own check is the only one
    needed, free = (size - kept) + size, free_bytes(data_dir)
    if needed > free:
        raise CompError(
            f"Not enough free space in {data_dir}/ to download {remote.identity.archive}: it needs "
            f"{size_text(needed)} ({size_text(size - kept)} of the archive still to fetch, and about "
            f"{size_text(size)} for its extracted files), and {size_text(free)} are free.",
            hint=f"Free some space, or move {data_dir}/ to a larger disk and link it "
            f"(ln -s /big/disk/data {data_dir}), then run the command again.",
        )


def _stream(session: Session, response: requests.Response, archive: Path, kept: int, size: int | None) -> None:
    """Write the answer's bytes after the `kept` ones, with a progress bar; a broken stream keeps them."""
    try:
        with create_progress() as progress, response, open(archive, "ab" if kept else "wb") as out:
            task = progress.add_task(f"download {archive.name}", total=size, completed=kept)
            # read1, not iter_content: a read that meets a broken connection drops what it had gathered
            # (up to a chunk), read1 returns each piece as it comes, so every byte received is kept.
            while chunk := response.raw.read1(CHUNK, decode_content=True):
                out.write(chunk)
                progress.advance(task, len(chunk))
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        have = archive.stat().st_size
        raise CompError(
            f"The download of {archive.name} stopped after {size_text(have)} of {size_text(size or have)}: "
            f"{redact(str(exc.args[0] if exc.args else exc), session.creds)}",
            hint=f"Run `comp download {session.slug}` again: it continues from the {size_text(have)} "
            f"kept in {archive.parent}/.",
        ) from None
    except OSError as exc:
        raise CompError(
            f"Writing {archive} failed: {exc.strerror or exc}.",
            hint="Free some space on that disk (or fix its permissions), then run the command again: "
            "the download continues from what is kept.",
        ) from None
    have = archive.stat().st_size
    if size is not None and have != size:
        raise CompError(
            f"Kaggle ended the download of {archive.name} after {size_text(have)} of {size_text(size)}.",
            hint=f"Run `comp download {session.slug}` again: it continues from the bytes kept in {archive.parent}/.",
        )


def fetch_archive(session: Session, folder: Path) -> Path:
    """The competition's archive, complete, in `folder`: fetched whole, continued, or already there."""
    waits = Waits()
    with session.api.build_kaggle_client() as kaggle:
        response = _with_waits(session, waits, lambda: _ask_for_archive(kaggle, session.slug))
        remote = Remote.of(response, session.slug)
        archive = folder / remote.identity.archive
        kept = kept_bytes(folder, remote)
        if kept and kept == remote.identity.size:
            response.close()
            return archive
        try:
            check_space(folder.parent, remote, kept)
        except CompError:
            response.close()
            raise
        if kept:
            # The client's answer starts at byte 0: dropped after its headers, the rest asked for instead.
            response.close()
            response = _with_waits(session, waits, lambda: _ask_for_rest(remote, kept))
            kept = kept if response.status_code == 206 and _starts_at(response, kept, folder) else 0
            console.print(
                f"Continuing {archive.name} from the {size_text(kept)} kept in {folder}/"
                if kept
                else f"Kaggle sent {archive.name} whole again: downloading it from the start"
            )
        if not kept:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MARKER).write_text(json.dumps(asdict(remote.identity)))
        _stream(session, response, archive, kept, remote.identity.size)
    return archive


def _starts_at(response: requests.Response, kept: int, folder: Path) -> bool:
    """Whether a 206 answer holds the bytes from `kept` on (Content-Range: bytes KEPT-END/SIZE)."""
    if response.headers.get("Content-Range", "").startswith(f"bytes {kept}-"):
        return True
    response.close()
    shutil.rmtree(folder, ignore_errors=True)
    raise CompError(
        f"Kaggle answered the request for the rest of the archive with bytes "
        f"{response.headers.get('Content-Range')!r} where bytes {kept}- were asked for; the partial "
        f"archive in {folder}/ was removed.",
        hint="Run the command again: it downloads the archive from the start.",
    )
