"""No network call that was not asked for: comp's offline commands send nothing through a proxy.

albumentations asks PyPI for a newer version at import unless NO_ALBUMENTATIONS_UPDATE is set; comp
sets it before albumentations can load. The commands run with every proxy variable pointing at a
logging proxy on loopback, and without NO_ALBUMENTATIONS_UPDATE of their own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, sets

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


class LoggingProxy:
    """Accepts connections on 127.0.0.1, records each one's first line, answers nothing and closes it.
    Bounded: at most `limit` connections recorded, and it stops itself after `lifetime` seconds."""

    def __init__(self, limit: int = 50, lifetime: float = 600.0):
        self.requests: list[str] = []
        self.limit, self.deadline = limit, time.monotonic() + lifetime
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        with self.server:
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                try:
                    connection, _ = self.server.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.settimeout(2)
                    try:
                        first = connection.recv(1024).decode("latin-1").split("\r\n")[0]
                    except OSError:
                        first = "(connected, sent nothing)"
                    if len(self.requests) < self.limit:
                        self.requests.append(first)

    def __enter__(self) -> LoggingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


@pytest.mark.slow
def test_download_demo_folds_and_train_make_no_request(tmp_path):
    with LoggingProxy() as proxy:
        env = {k: v for k, v in os.environ.items() if k not in ("NO_ALBUMENTATIONS_UPDATE", "NO_PROXY", "no_proxy")}
        env.update(dict.fromkeys(PROXY_VARIABLES, proxy.url), PYTHONPATH=str(REPO))
        tiny = sets("folds.k=2", "train.epochs=1", "train.batch_size=64", "train.num_workers=0")
        for command in (["download", "demo"], ["folds", *tiny], ["train", "--fold", "0", *tiny]):
            done = subprocess.run(
                [sys.executable, "-m", "comp", *command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "runs/default/fold0/summary.json").exists()
    assert proxy.requests == []
