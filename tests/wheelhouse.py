"""Wheels of the installed dependencies, repacked offline from the environment the tests run in.

comp's kernel installs its dependencies from wheels; the tests cannot download them, so each
installed distribution comp needs (and Kaggle's image lacks) is packed back into a wheel from its
RECORD: the files under site-packages plus a regenerated RECORD. Scripts (entries outside
site-packages) are left out. The result installs with pip like the wheel it came from.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import zipfile
from pathlib import Path

from comp.kernel.wheels import dependency_pins


def _tag(dist: metadata.Distribution) -> str:
    """The wheel's compressed tag set, e.g. py2.py3-none-any (a py2-only name would not install)."""
    wheel = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip().split("-") for line in wheel.splitlines() if line.startswith("Tag:")]
    parts = [list(dict.fromkeys(tag[i] for tag in tags)) for i in range(3)] if tags else [["py3"], ["none"], ["any"]]
    return "-".join(".".join(part) for part in parts)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(name: str, dest: Path) -> Path:
    """The installed distribution `name` as a wheel in dest."""
    dist = metadata.distribution(name)
    root = Path(str(dist.locate_file("")))
    files = [str(f) for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)]
    dist_info = next(f.split("/")[0] for f in files if f.split("/")[0].endswith(".dist-info"))
    record_name = f"{dist_info}/RECORD"
    stem = dist_info.removesuffix(".dist-info")
    path = dest / f"{stem}-{_tag(dist)}.whl"
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for name_in_wheel in files:
            source = root / name_in_wheel
            if name_in_wheel == record_name or not source.is_file():
                continue
            if name_in_wheel.endswith(("/INSTALLER", "/direct_url.json", "/REQUESTED")):
                continue
            data = source.read_bytes()
            wheel.writestr(name_in_wheel, data)
            rows.append((name_in_wheel, _digest(data), str(len(data))))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, (record_name, "", "")])
        wheel.writestr(record_name, text.getvalue())
    return path


def build_wheelhouse(dest: Path) -> list[Path]:
    """A wheel of every dependency comp's kernel packages, at the installed versions."""
    dest.mkdir(parents=True, exist_ok=True)
    return [repack(name, dest) for name in dependency_pins()]
