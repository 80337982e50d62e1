"""A stand-in for Kaggle's notebook machine: a fresh Python where only torch and torchvision are installed,
no network, read-only inputs, a time limit; the run time and peak memory measured.

torch and torchvision (and what they need) are the current environment's own, exposed to the fresh
virtual environment through a .pth file: linking is instant where copying would move gigabytes.
Their metadata is copied without its RECORD, so a pip run in the sandbox can never uninstall (that
is, delete) the real files behind the links. Without network and mount namespaces (`unshare -rmn`),
a socket guard makes every connection an error and the inputs are copies without write permission.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from comp.errors import CompError
from comp.kernel.wheels import ON_KAGGLE_IMAGE, closure

SOCKET_GUARD = """\
import socket

def _refuse(self, address, *args):
    if self.family != socket.AF_UNIX:
        raise OSError(101, "Network is unreachable (comp's rehearsal has no network)")
    return _connect(self, address, *args)

_connect = socket.socket.connect
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
"""


def namespaces_work() -> bool:
    """Whether this system lets an unprivileged process have its own network and mount namespaces."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rmn", "true"], capture_output=True)
    return probe.returncode == 0


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def _expose(dist_name: str, exposed: Path) -> None:
    """Link a distribution's top-level files into `exposed`; copy its metadata, minus RECORD."""
    dist = metadata.distribution(dist_name)
    root = Path(str(dist.locate_file("")))
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in sorted(tops - {"__pycache__"}):
        source, target = root / top, exposed / top
        if target.exists() or target.is_symlink() or not source.exists():
            continue
        if top.endswith((".dist-info", ".egg-info")):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("RECORD", "INSTALLER", "direct_url.json"))
        else:
            target.symlink_to(source)


def create_image_venv(venv: Path) -> Path:
    """A fresh virtual environment in which only pip, torch, torchvision and what they need are
    importable, as on Kaggle's image; returns its python."""
    base = getattr(sys, "_base_executable", sys.executable)
    made = subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        raise CompError(f"Could not create a virtual environment in {venv}: {made.stderr.strip()[-300:]}")
    exposed = venv / "kaggle-image"
    exposed.mkdir()
    for name in closure([*ON_KAGGLE_IMAGE, "pip"]):
        _expose(name, exposed)
    (_site_packages(venv) / "_kaggle_image.pth").write_text(f"{exposed}\n")
    return venv / "bin" / "python"


def importable(python: Path, modules: list[str], env: dict[str, str]) -> dict[str, bool]:
    """Which modules `python` can find (run with env, from a neutral folder)."""
    code = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    done = subprocess.run([str(python), "-c", code, *modules], env=env, capture_output=True, text=True, cwd="/")
    return json.loads(done.stdout)


def add_socket_guard(venv: Path) -> None:
    (_site_packages(venv) / "sitecustomize.py").write_text(SOCKET_GUARD)


def read_only_copy(source: Path, target: Path) -> None:
    """A copy of `source` (links followed) with every write permission removed."""
    shutil.copytree(source, target, symlinks=False)
    for path in [target, *target.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(folder: Path) -> None:
    """Undo read_only_copy, so that the folder can be removed."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def namespace_command(command: list[str], read_only: list[tuple[Path, Path]]) -> list[str]:
    """`command` in new user, mount and network namespaces, each (source, mount point) bound read-only."""
    mounts = [
        f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(dst))} && "
        f"mount -o remount,bind,ro {shlex.quote(str(dst))}"
        for src, dst in read_only
    ]
    script = " && ".join([*mounts, 'exec "$@"'])
    return ["unshare", "-rmn", "sh", "-c", script, "sh", *command]


@dataclass
class Measured:
    returncode: int | None  # None: stopped at the time limit
    seconds: float
    peak_bytes: int  # the largest resident set of the process and everything it waited for


def run_measured(command: list[str], env: dict[str, str], cwd: Path, log: Path, time_limit: float) -> Measured:
    """Run `command` (its output into `log`), stopping its whole process group after time_limit seconds."""
    start = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(time_limit, stop)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    code = None if stopped.is_set() else process.returncode
    return Measured(code, time.monotonic() - start, usage.ru_maxrss * 1024)


def clean_env(venv: Path, home: Path, extra: dict[str, str]) -> dict[str, str]:
    """What the notebook sees: the fresh python first on PATH, no PYTHONPATH, proxies or Kaggle keys."""
    keep = {k: os.environ[k] for k in ("LANG", "LC_ALL", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    path = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {**keep, "PATH": path, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONNOUSERSITE": "1", **extra}
