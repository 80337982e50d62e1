"""Safe zip extraction: an archive that would write outside its folder (zip-slip) is refused whole.

Every entry is checked before anything is written: absolute paths, drive letters and `..` parts
are refused, and so are symbolic links whose target leaves the folder. A second check at write
time resolves each path on disk, so a chain of in-folder links cannot lead outside either.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from comp.errors import CompError

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchive(CompError):
    """An archive refused whole (zip-slip, or not a zip): keeping it for another try would not help."""


class Meter(Protocol):
    """A progress bar's two moves: more bytes to write (an inner archive found), bytes written."""

    def add_total(self, n: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _NoMeter:
    def add_total(self, n: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass
class Extracted:
    files: int
    bytes: int
    inner_archives: list[str]


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _parts(name: str) -> list[str]:
    """An entry name's parts; a backslash counts as a separator too (archives made on Windows)."""
    return [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]


def _unsafe_name(name: str) -> str | None:
    """Why this entry name could land outside the folder, or None when it cannot."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "an absolute path"
    if ".." in _parts(name):
        return "a '..' part"
    return None


def _link_leaves(name: str, target: str) -> bool:
    """Whether a link stored at `name` pointing to `target` resolves outside the folder (by name alone)."""
    if target.startswith(("/", "\\")) or _DRIVE.match(target):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname("/".join(_parts(name))), target.replace("\\", "/")))
    return joined == ".." or joined.startswith("../")


def _refuse(archive: Path, name: str, reason: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"Refused to extract {archive}: entry '{name}' is {reason}, which would write outside the "
        f"destination folder (a 'zip-slip' archive). Nothing was extracted.",
        hint="Download it again from the competition's data page; if it happens again, report it to Kaggle.",
    )


def check_entries(archive: Path, zf: zipfile.ZipFile) -> None:
    """Refuse the archive if any entry's name or link target leaves the folder."""
    for info in zf.infolist():
        reason = _unsafe_name(info.filename)
        if reason is None and _is_symlink(info):
            target = zf.read(info).decode("utf-8", errors="replace")
            if _link_leaves(info.filename, target):
                reason = f"a link to '{target}'"
        if reason is not None:
            raise _refuse(archive, info.filename, reason)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _write_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, archive: Path, meter: Meter) -> int:
    parts = _parts(info.filename)
    if not parts:
        return 0
    root = dest.resolve()
    target = dest.joinpath(*parts)
    parent = target.parent.resolve()
    if not _inside(parent, root) or target.is_symlink():
        raise _refuse(archive, info.filename, "reached through a link")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return 0
    parent.mkdir(parents=True, exist_ok=True)
    if _is_symlink(info):
        link = zf.read(info).decode("utf-8").replace("\\", "/")
        if not _inside((parent / link).resolve(), root):
            raise _refuse(archive, info.filename, f"a link to '{link}'")
        os.symlink(link, parent / target.name)
        return 0
    with zf.open(info) as source, open(parent / target.name, "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
            meter.advance(len(chunk))
    return info.file_size


def _check_space(archive: Path, zf: zipfile.ZipFile, dest: Path) -> int:
    """The bytes the archive's files hold, once checked that they fit on the disk."""
    needed = sum(info.file_size for info in zf.infolist())
    free = shutil.disk_usage(dest if dest.exists() else dest.parent).free
    if needed > free:
        raise CompError(
            f"Not enough disk space to extract {archive}: it holds {needed / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB are free.",
            hint="Free some space (or move data/ to a larger disk and link it), then run the command again.",
        )
    return needed


def extract_zip(archive: Path, dest: Path, meter: Meter | None = None) -> Extracted:
    """Extract `archive` into `dest` after checking every entry; returns what was written."""
    meter = meter or _NoMeter()
    archive, dest = Path(archive), Path(dest)
    if not zipfile.is_zipfile(archive):
        raise UnsafeArchive(
            f"{archive} is not a zip archive (it may be truncated).",
            hint="Run `comp download` again: an archive refused this way is downloaded afresh.",
        )
    dest.mkdir(parents=True, exist_ok=True)
    files = size = 0
    with zipfile.ZipFile(archive) as zf:
        check_entries(archive, zf)
        meter.add_total(_check_space(archive, zf, dest))
        for info in zf.infolist():
            size += _write_entry(zf, info, dest, archive, meter)
            files += not info.is_dir()
    return Extracted(files, size, [])


def extract_all(archive: Path, dest: Path, meter: Meter | None = None) -> Extracted:
    """Extract `archive`, then each zip it contained (one level, beside itself, which is then removed).

    Kaggle often ships `train.zip` and `test.zip` inside the competition's archive.
    """
    result = extract_zip(archive, dest, meter)
    for inner in sorted(Path(dest).rglob("*.zip")):
        if inner.is_symlink() or not zipfile.is_zipfile(inner):
            continue
        found = extract_zip(inner, inner.parent, meter)
        result.files += found.files - 1
        result.bytes += found.bytes - inner.stat().st_size
        result.inner_archives.append(inner.relative_to(dest).as_posix())
        inner.unlink()
    return result
