"""Long downloads: progress, a resume after a dropped connection or a SIGKILL, 429 waits, disk checks.

As in test_kaggle, `comp download` runs in a subprocess with the real `kaggle` client pointed at the
fake server; here the server sends a few-MB archive in slow pieces and can break off half-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import REPO
from fake_kaggle import FakeKaggle, etag, run_comp, run_python
from test_kaggle import SLUG, zip_bytes

from comp.kaggle.client import retry_after

BIG = 3_000_000  # bytes of incompressible content in the archive


def big_archive() -> tuple[bytes, dict[str, bytes]]:
    """A zip of a few MB (random bytes do not compress) and the files it holds."""
    rng = random.Random(0)
    files = {
        "train.csv": b"id,label\n" + b"".join(b"x%d,%d\n" % (i, i % 3) for i in range(50)),
        "blobs/a.bin": rng.randbytes(BIG // 2),
        "blobs/b.bin": rng.randbytes(BIG // 2),
    }
    return zip_bytes(files), files


def flat(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def data_entries(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "data").iterdir())


def assert_extracted(project: Path, archive: bytes, files: dict[str, bytes]) -> None:
    folder = project / "data" / SLUG
    for name, content in files.items():
        assert (folder / name).read_bytes() == content, name
    record = json.loads((folder / ".download.json").read_text())
    assert record["sha256"] == hashlib.sha256(archive).hexdigest() and record["bytes"] == len(archive)
    assert data_entries(project) == [SLUG]  # no partial folder, no staging folder left behind


def resumed_requests(server: FakeKaggle) -> list:
    return [r for r in server.blob_requests if r.range]


@pytest.mark.slow
def test_a_dropped_download_continues_from_where_it_stopped(project, fake, home):
    archive, files = big_archive()
    fake.archives[SLUG] = archive
    fake.chunk_delay = 0.005
    fake.drop_after = len(archive) // 2 + 12_345

    code, output = run_comp(fake, home, "download", SLUG)
    output = flat(output)
    assert code == 1 and f"The download of {SLUG}.zip stopped after 1.5 MB of 3.0 MB" in output, output
    assert f"Run `comp download {SLUG}` again: it continues from the 1.5 MB" in output
    kept = project / "data" / f".{SLUG}.partial" / f"{SLUG}.zip"
    first = fake.blob_requests[0]
    assert kept.stat().st_size == first.sent == len(archive) // 2 + 12_345 and first.range is None
    assert kept.read_bytes() == archive[: first.sent]
    assert not (project / "data" / SLUG).exists()  # nothing half-extracted, nothing at all

    code, output = run_comp(fake, home, "download", SLUG)
    output = flat(output)
    assert code == 0, output
    assert f"Continuing {SLUG}.zip from the 1.5 MB kept in data/.{SLUG}.partial/" in output
    [rest] = resumed_requests(fake)
    assert rest.range == f"bytes={first.sent}-" and rest.status == 206
    assert rest.sent == len(archive) - first.sent  # the second attempt fetched only the rest
    assert "download fake-comp.zip" in output and "extract fake-comp.zip" in output and "3.0/3.0 MB" in output
    assert_extracted(project, archive, files)


@pytest.mark.slow
def test_a_killed_download_is_resumed_and_leaves_nothing_behind(project, fake, home):
    archive, files = big_archive()
    fake.archives[SLUG] = archive
    fake.chunk_size, fake.chunk_delay = 32 * 1024, 0.03  # about 3 s for the whole archive
    environ = fake.env(home) | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    kept = project / "data" / f".{SLUG}.partial" / f"{SLUG}.zip"
    process = subprocess.Popen([sys.executable, "-m", "comp", "download", SLUG], env=environ, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (kept.is_file() and kept.stat().st_size > len(archive) // 4) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    at_kill = kept.stat().st_size
    assert len(archive) // 4 < at_kill < len(archive) and not (project / "data" / SLUG).exists()

    fake.chunk_delay = 0.0
    code, output = run_comp(fake, home, "download", SLUG)
    output = flat(output)
    assert code == 0, output
    [rest] = resumed_requests(fake)
    assert rest.range == f"bytes={at_kill}-" and rest.sent == len(archive) - at_kill
    assert_extracted(project, archive, files)


def leave_partial(project: Path, archive: bytes, identity: dict) -> None:
    """What a download killed while extracting leaves in data/.<slug>.partial/: an archive with the identity
    it was fetched under, and an extraction cut short."""
    partial = project / "data" / f".{SLUG}.partial"
    (partial / "files" / "blobs").mkdir(parents=True)
    (partial / "files" / "blobs" / "a.bin").write_bytes(b"half")
    (partial / f"{SLUG}.zip").write_bytes(archive)
    (partial / "partial.json").write_text(json.dumps(identity))


@pytest.mark.slow
def test_what_an_earlier_download_left_is_removed(project, fake, home):
    """A partial of another archive, an extraction cut short, an old-style staging folder: all go."""
    archive, files = big_archive()
    fake.archives[SLUG] = archive
    leave_partial(project, b"bytes of an older archive", {"archive": f"{SLUG}.zip", "size": 999, "validator": '"old"'})
    (project / "data" / f".{SLUG}.k3x_9q2a" / "archive").mkdir(parents=True)
    (project / "data" / "other-comp").mkdir()

    code, output = run_comp(fake, home, "download", SLUG)
    output = flat(output)
    assert code == 0, output
    assert resumed_requests(fake) == []  # the older bytes were not appended to
    assert data_entries(project) == [SLUG, "other-comp"]
    assert (project / "data" / SLUG / "blobs" / "a.bin").read_bytes() == files["blobs/a.bin"]


@pytest.mark.slow
def test_a_download_killed_while_extracting_is_extracted_again_from_the_kept_archive(project, fake, home):
    archive, files = big_archive()
    fake.archives[SLUG] = archive
    leave_partial(project, archive, {"archive": f"{SLUG}.zip", "size": len(archive), "validator": etag(archive)})
    fake.chunk_delay = 0.01  # the opening request is closed long before the archive could be sent whole

    code, output = run_comp(fake, home, "download", SLUG)
    assert code == 0, output
    [opening] = fake.blob_requests  # the client's request, closed after its headers: nothing more asked
    assert opening.range is None and opening.sent < len(archive)
    assert_extracted(project, archive, files)


@pytest.mark.slow
def test_a_429_is_waited_out_as_the_server_asks(project, fake, home):
    archive, files = big_archive()
    fake.archives[SLUG] = archive
    fake.rate_limited = {"DownloadDataFiles": 1, "blob": 1}
    fake.retry_after = "1"
    code, output = run_comp(fake, home, "download", SLUG)
    output = flat(output)
    assert code == 0, output
    assert output.count("Kaggle is limiting requests (HTTP 429): waiting 1 s as it asks") == 2
    assert "(wait 1 of at most 5)" in output and "(wait 2 of at most 5)" in output
    assert sum("DownloadDataFiles" in call for call in fake.calls) == 3
    assert_extracted(project, archive, files)


@pytest.mark.slow
@pytest.mark.parametrize(
    "retry, expected",
    [
        ("0", "after 5 waits (0 s); it now asks for 0 s more"),
        ("100000", "after 0 waits (0 s); it now asks for 100000 s"),
    ],
)
def test_waiting_for_429s_is_bounded(project, fake, home, retry, expected):
    fake.archives[SLUG], _ = big_archive()
    fake.rate_limited = {"DownloadDataFiles": 50}
    fake.retry_after = retry
    code, output = run_comp(fake, home, "download", SLUG)
    output = flat(output)
    assert code == 1 and "Kaggle is still limiting this account's requests (HTTP 429)" in output
    assert expected in output and "beyond the 5 waits and 600 s comp waits at most" in output
    assert data_entries(project) == []


@pytest.mark.slow
def test_not_enough_free_space_is_refused_before_anything_is_written(project, fake, home):
    archive, _ = big_archive()
    fake.archives[SLUG] = archive
    script = (
        "import shutil; "
        "shutil.disk_usage = lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 2_000_000, 2_000_000); "
        "from comp.cli import main; main()"
    )
    code, output = run_python(fake, home, "-c", script, "download", SLUG)
    output = flat(output)
    assert code == 1, output
    assert f"Not enough free space in data/ to download {SLUG}.zip: it needs 6.0 MB" in output
    assert "(3.0 MB of the archive still to fetch, and about 3.0 MB for its extracted files)" in output
    assert "and 2.0 MB are free" in output and "Free some space" in output
    assert data_entries(project) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["a file in the way", "no permission"])
def test_an_unwritable_data_folder_is_refused_before_kaggle_is_asked(project, fake, home, how):
    fake.archives[SLUG], _ = big_archive()
    args = ["-m", "comp", "download", SLUG]
    if how == "a file in the way":
        (project / "data").write_text("not a folder")
    elif os.geteuid() != 0:
        (project / "data").mkdir(mode=0o555)
    else:  # root writes anywhere: the disk's refusal is played by os.open
        (project / "data").mkdir()
        script = (
            "import os; real = os.open\n"
            "def refuse(path, *a, **k):\n"
            "    if os.path.abspath(path).startswith(os.path.abspath('data')):\n"
            "        raise PermissionError(13, 'Permission denied', path)\n"
            "    return real(path, *a, **k)\n"
            "os.open = refuse\n"
            "from comp.cli import main; main()"
        )
        args = ["-c", script, "download", SLUG]
    code, output = run_python(fake, home, *args)
    output = flat(output)
    assert code == 1 and "Cannot write to data/, where the competition's files go" in output, output
    assert ("it is a file, not a folder" if how == "a file in the way" else "Permission denied") in output
    assert fake.calls == []


@pytest.mark.parametrize(
    "status, header, expected",
    [(429, "7", 7.0), (429, "-3", 0.0), (429, None, None), (503, "7", None), (429, "soon", None)],
)
def test_retry_after_reads_seconds_only_from_a_429(status, header, expected):
    response = requests.Response()
    response.status_code = status
    if header is not None:
        response.headers["Retry-After"] = header
    assert retry_after(requests.HTTPError(response=response)) == expected


def test_retry_after_reads_an_http_date():
    response = requests.Response()
    response.status_code = 429
    response.headers["Retry-After"] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after(requests.HTTPError(response=response)) <= 31
