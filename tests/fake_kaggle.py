"""A fake Kaggle API on 127.0.0.1 that the real `kaggle` client talks to, for tests without Kaggle.

The client has no base-URL setting: with KAGGLE_API_ENVIRONMENT=LOCALHOST (read when `kaggle` is
first imported) it calls http://localhost/api/v1/<Service>/<Method>, and with HTTP(S)_PROXY set to
this server every request arrives here, in absolute form. A stray production call (https) arrives
as a CONNECT, which is refused and recorded in `stray`.

What it serves (camelCase JSON, as Kaggle does): ListDataFiles; DownloadDataFiles (302 to a blob
URL ending in .zip); StartSubmissionUpload ({token, createUrl}), the PUT of the file to createUrl,
CreateSubmission; ListSubmissions; GetSubmission, which answers PENDING `pending_polls` times
before COMPLETE with `public_score`. `errors[Method] = (code, message)` makes a method fail the
way Kaggle fails: HTTP status `code` with a JSON body {"code": code, "message": message}.
Datasets, kernels and code submissions are `code` (tests/fake_kaggle_code.py).

Archives (the blob GET) come as a storage server sends them: ETag, Accept-Ranges, a Range request
answered 206 with Content-Range (If-Range honoured), in `chunk_size` pieces `chunk_delay` seconds
apart; `drop_after = n` breaks the next answer's connection after n bytes (once), and
`rate_limited[Method or "blob"] = n` answers the next n calls 429 with `Retry-After: retry_after`.
Each blob GET is logged in `blob_requests` with its Range and the bytes actually sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from fake_kaggle_code import FakeCode

API = "/api/v1/"  # then <service>/<Method>: the datasets, kernels and blobs services are fake_kaggle_code's
MAX_BODY = 16 * 1024**2  # bytes read from one request, at most
MAX_REQUESTS = 500  # after this many requests every answer is 503: a runaway loop ends quickly
USERNAME, KEY = "fake-user", "fake-key-5f1e0c2b9a7d4e3f"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class FakeSubmission:
    ref: int
    file_name: str
    description: str
    content: bytes
    polls: int = 0
    status: str = "PENDING"
    public_score: str | None = None
    error_description: str | None = None

    def as_json(self) -> dict:
        body = {
            "ref": self.ref,
            "fileName": self.file_name,
            "description": self.description,
            "date": "2025-03-01T12:00:00.000Z",
            "status": self.status,
            "totalBytes": len(self.content),
        }
        if self.public_score is not None:
            body["publicScore"] = self.public_score
        if self.error_description is not None:
            body["errorDescription"] = self.error_description
        return body


@dataclass
class BlobRequest:
    range: str | None  # the request's Range header
    status: int = 0
    sent: int = 0  # bytes of the archive written to the connection


@dataclass
class FakeKaggle:
    archives: dict[str, bytes] = field(default_factory=dict)  # slug -> the zip DownloadDataFiles serves
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # method -> (HTTP code, message)
    upload_status: int = 200  # what the PUT of a submission file answers
    pending_polls: int = 1  # GetSubmission answers PENDING this many times before COMPLETE
    public_score: str = "0.91250"
    scoring_error: str | None = None  # set: GetSubmission ends in ERROR with this description instead of a score
    submissions: list[FakeSubmission] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # "METHOD path" of every request, in order
    stray: list[str] = field(default_factory=list)  # CONNECT targets: calls meant for the real Kaggle
    uploads: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)  # token -> (file name, bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)
    code: FakeCode = field(default_factory=FakeCode)  # datasets, kernels and code submissions
    chunk_size: int = 64 * 1024  # an archive is sent in pieces of this size...
    chunk_delay: float = 0.0  # ...this many seconds apart
    drop_after: int | None = None  # the next blob answer breaks its connection after this many bytes
    rate_limited: dict[str, int] = field(default_factory=dict)  # method or "blob" -> 429s still to answer
    retry_after: str = "1"  # the 429s' Retry-After header
    blob_requests: list[BlobRequest] = field(default_factory=list)

    def __post_init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKaggle:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, home: Path, credentials: bool = True) -> dict[str, str]:
        """Environment for a process that runs the client against this server, with its own HOME."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KAGGLE_") and k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
        }
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            KAGGLE_API_ENVIRONMENT="LOCALHOST",
            HTTP_PROXY=self.proxy,
            HTTPS_PROXY=self.proxy,
            http_proxy=self.proxy,
            https_proxy=self.proxy,
            COLUMNS="200",
        )
        if credentials:
            env.update(KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=KEY)
        return env

    # ------------------------------------------------------------------------- the API

    def handle(self, method: str, body: dict) -> tuple[int, dict | None, str | None]:
        """(status, JSON body, redirect location) for one API call."""
        if method in self.errors:
            code, message = self.errors[method]
            return code, {"code": code, "message": message}, None
        slug = body.get("competitionName", "")
        if method == "ListDataFiles":
            return (
                200,
                {"files": [{"name": f"{slug}.zip", "totalBytes": len(self.archives.get(slug, b""))}]},
                None,
            )
        if method == "DownloadDataFiles":
            if slug not in self.archives:
                return 404, {"code": 404, "message": f"Competition {slug} not found"}, None
            return 302, None, f"http://localhost/blobs/{slug}.zip?sig=abc"
        if method == "StartSubmissionUpload":
            token = f"tok{len(self.uploads) + 1}"
            self.uploads[token] = (body.get("fileName", ""), None)
            return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}, None
        if method == "CreateSubmission":
            name, content = self.uploads.get(body.get("blobFileTokens", ""), ("", None))
            if content is None:
                return 400, {"code": 400, "message": "The file was not uploaded"}, None
            sub = FakeSubmission(1000 + len(self.submissions), name, body.get("submissionDescription", ""), content)
            self.submissions.append(sub)
            return 200, {"message": f"Successfully submitted to {slug}", "ref": sub.ref}, None
        if method == "ListSubmissions":
            return 200, {"submissions": [s.as_json() for s in reversed(self.submissions)]}, None
        if method == "GetSubmission":
            sub = next((s for s in self.submissions if s.ref == int(body.get("ref", 0))), None)
            if sub is None:
                return 404, {"code": 404, "message": "Submission not found"}, None
            sub.polls += 1
            if sub.polls > self.pending_polls and self.scoring_error is not None:
                sub.status, sub.error_description = "ERROR", self.scoring_error
            elif sub.polls > self.pending_polls:
                sub.status, sub.public_score = "COMPLETE", self.public_score
            return 200, sub.as_json(), None
        answer = self.code.handle(self, method, body)
        if answer is not None:
            return answer
        return 404, {"code": 404, "message": f"fake Kaggle has no method {method}"}, None

    def throttled(self, method: str) -> bool:
        """Whether this call is answered 429 (counting it off `rate_limited`)."""
        with self.lock:
            left = self.rate_limited.get(method, 0)
            if left:
                self.rate_limited[method] = left - 1
            return left > 0

    def take_drop(self) -> int | None:
        with self.lock:
            drop, self.drop_after = self.drop_after, None
            return drop


def etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:16] + '"'


def _range_start(header: str | None, if_range: str | None, tag: str, size: int) -> int | None:
    """Where a `Range: bytes=N-` answer starts, or None for the whole archive (no Range, changed ETag)."""
    if not header or not header.startswith("bytes=") or (if_range is not None and if_range != tag):
        return None
    start = int(header[len("bytes=") :].split("-")[0])
    return start if start < size else None


def _handler_for(fake: FakeKaggle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a connection may sit idle

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _answer(
            self,
            status: int,
            body: bytes = b"",
            content_type: str = "application/json",
            location: str | None = None,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if location:
                self.send_header("Location", location)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict | None, location: str | None = None) -> None:
            self._answer(status, json.dumps(obj or {}).encode(), location=location)

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length <= MAX_BODY else None

        def _begin(self) -> str | None:
            """Log the call; the path, or None when the request was already answered."""
            with fake.lock:
                fake.calls.append(f"{self.command} {self.path}")
                over = len(fake.calls) > MAX_REQUESTS
            if over:
                self._json(503, {"code": 503, "message": "fake Kaggle: too many requests in one test"})
                return None
            return urlsplit(self.path).path

        def do_CONNECT(self) -> None:
            with fake.lock:
                fake.stray.append(self.path)
            self._answer(403, b"fake Kaggle refuses to tunnel: this test tried to reach the real Kaggle", "text/plain")

        def do_POST(self) -> None:
            path = self._begin()
            if path is None:
                return
            body = self._body()
            if not path.startswith(API) or path.count("/") != 4 or body is None:
                return self._json(404 if body is not None else 413, {"code": 404, "message": "not found"})
            expected = "Basic " + base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._json(401, {"code": 401, "message": "Unauthenticated"})
            method = path.rsplit("/", 1)[1]
            if fake.throttled(method):
                return self._rate_limit()
            with fake.lock:
                status, obj, location = fake.handle(method, json.loads(body or b"{}"))
            self._json(status, obj, location)

        def do_GET(self) -> None:
            path = self._begin()
            if path is None:
                return
            if path.startswith("/outputs/") and (output := fake.code.output_file(path)) is not None:
                return self._answer(200, output, "application/octet-stream")
            slug = path.removeprefix("/blobs/").removesuffix(".zip")
            if not path.startswith("/blobs/") or slug not in fake.archives:
                return self._answer(404, b"no such blob", "text/plain")
            if fake.throttled("blob"):
                return self._rate_limit()
            self._send_blob(fake.archives[slug])

        def _rate_limit(self) -> None:
            body = {"code": 429, "message": "Too many requests"}
            self._answer(429, json.dumps(body).encode(), headers={"Retry-After": fake.retry_after})

        def _send_blob(self, content: bytes) -> None:
            """The archive, or the part a Range asks for, in slow pieces; maybe cut off on purpose."""
            record = BlobRequest(self.headers.get("Range"))
            with fake.lock:
                fake.blob_requests.append(record)
            tag, size = etag(content), len(content)
            start = _range_start(record.range, self.headers.get("If-Range"), tag, size)
            record.status = 200 if start is None else 206
            start = start or 0
            self.send_response(record.status)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", tag)
            self.send_header("Last-Modified", "Sat, 01 Mar 2025 12:00:00 GMT")
            if record.status == 206:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            drop = fake.take_drop()
            end = size if drop is None else min(size, start + drop)
            try:
                for at in range(start, end, fake.chunk_size):
                    piece = content[at : min(at + fake.chunk_size, end)]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    record.sent += len(piece)
                    time.sleep(fake.chunk_delay)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (killed, or it closed the stream)
                return
            if drop is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # a dropped connection, mid-archive

        def do_PUT(self) -> None:
            path = self._begin()
            if path is None:
                return
            token = path.removeprefix("/upload/")
            with fake.lock:
                if fake.code.receive(token, self.rfile, int(self.headers.get("Content-Length") or 0)):
                    return self._answer(200, b"", "text/plain")
            body = self._body()
            if token not in fake.uploads or body is None:
                return self._answer(404, b"no such upload", "text/plain")
            if fake.upload_status in (200, 201):
                with fake.lock:
                    fake.uploads[token] = (fake.uploads[token][0], body)
            self._answer(fake.upload_status, b"", "text/plain")

    return Handler


def run_python(fake: FakeKaggle, home: Path, *args: str, credentials: bool = True, **env: str) -> tuple[int, str]:
    """`python ARGS` in a fresh process (cwd: this one's) whose kaggle client talks to `fake`: exit code, output.
    The output never holds the key or a traceback."""
    environ = fake.env(home, credentials) | env
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, *args], env=environ, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert KEY not in output and "Traceback" not in output, output
    return result.returncode, output


def run_comp(fake: FakeKaggle, home: Path, *args: str, credentials: bool = True, **env: str) -> tuple[int, str]:
    """`comp ARGS` in a fresh process talking to `fake` (run_python)."""
    return run_python(fake, home, "-m", "comp", *args, credentials=credentials, **env)
