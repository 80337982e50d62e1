"""`comp kernel --push`: the kernel's dataset created (or versioned) on Kaggle, its notebook pushed and run.

Every call is the official client's (dataset_create_new / dataset_create_version / dataset_status,
kernels_push / kernels_status / kernels_output) through a signed-in Session, so HTTP errors become
CompErrors that say the fix. Waiting is bounded: the dataset until it is ready, the notebook's run
until it ends. A run that fails has its log fetched and its error lines shown. What was pushed is
recorded in kernels/<name>/push.json, which `comp submit --kernel` reads.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from comp.console import console
from comp.errors import CompError
from comp.io import sha256_file, write_json
from comp.kaggle.client import Session, check_slug, create_session

POLL_INTERVAL = 10.0  # seconds between looks at the dataset or the notebook's run
DATASET_WAIT = 30 * 60.0  # seconds the dataset may take to become ready
RUN_WAIT = 10 * 3600.0  # seconds a notebook's run is followed: Kaggle stops it at 9 hours
ERROR_WORDS = ("Error", "Exception", "KernelFailed", "Traceback")
PUSH_RECORD = "push.json"


@dataclass
class PushResult:
    kernel_id: str
    kernel_version: int
    dataset_id: str
    dataset_version: int | None
    status: str  # the notebook run's last status: complete, or running/queued when the wait ran out
    url: str
    output_sha256: str | None  # of the submission.csv the run wrote

    def __rich__(self) -> Text:
        dataset = f"{self.dataset_id} version {self.dataset_version}"
        return Text(
            f"Pushed {self.kernel_id} version {self.kernel_version} (dataset {dataset}): run {self.status}; {self.url}"
        )


def _status_word(value: Any) -> str:
    return getattr(value, "name", str(value)).lower()


def _refused(exc: requests.HTTPError, what: str, name: str) -> CompError | None:
    """A 403 or 404 on the user's own dataset or kernel: the slug belongs to someone else (or is mistyped)."""
    code = exc.response.status_code if exc.response is not None else None
    if code == 403:
        return CompError(
            f"Kaggle refused access to the {what} {name} (HTTP 403): it belongs to another account, or these "
            "credentials may not write to it.",
            hint="Build the kernel with --owner set to the account of your credentials (or another --name).",
        )
    return None


def _dataset_exists(api: Any, dataset_id: str) -> bool:
    try:
        api.dataset_status(dataset_id)
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return False
        raise
    return True


def _poll(
    read: Callable[[], Any], word: Callable[[Any], str], finished: tuple[str, ...], label: str, interval, limit, sleep
):
    """read() every `interval` seconds, with a spinner showing its status word, until it is one of
    `finished` or `limit` seconds have passed; the last answer."""
    waited = 0.0
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label)
        while True:
            answer = read()
            bar.update(task, description=f"{label}: {word(answer)}")
            if word(answer) in finished or waited >= limit:
                return answer
            sleep(interval)
            waited += interval


def upload_dataset(session: Session, folder: Path, dataset_id: str, notes: str, interval: float, sleep) -> int | None:
    """Create the dataset or add a version; wait until Kaggle has it ready; its version number."""
    api = session.api
    try:
        with session.calling(f"uploading the dataset {dataset_id}"):
            try:
                if _dataset_exists(api, dataset_id):
                    response = api.dataset_create_version(str(folder), notes, quiet=True, dir_mode="skip")
                else:
                    response = api.dataset_create_new(str(folder), public=False, quiet=True, dir_mode="skip")
            except requests.HTTPError as exc:
                raise _refused(exc, "dataset", dataset_id) or exc from None
    except ValueError as exc:  # the client's own checks, and a failed blob upload
        raise CompError(f"The dataset {dataset_id} was not uploaded: {exc}", hint="Run the command again.") from None
    if getattr(response, "error", None):
        raise CompError(
            f"Kaggle did not take the dataset {dataset_id}: {response.error}", hint="Fix it, then push again."
        )

    def read() -> dict:
        with session.calling(f"waiting for the dataset {dataset_id}"):
            return json.loads(api.dataset_status(dataset_id, format="json"))

    finished = ("ready", "failed", "deleted")
    state = _poll(read, lambda s: s["status"], finished, "dataset", interval, DATASET_WAIT, sleep)
    if state["status"] != "ready":
        raise CompError(
            f"Kaggle's copy of the dataset {dataset_id} is {state['status']}, not ready; nothing was pushed.",
            hint="See the dataset's page on Kaggle; push again once it is ready.",
        )
    return state.get("current_version_number")


def _error_lines(log_text: str) -> list[str]:
    """The lines of a Kaggle run log (JSON records of stream and data, or plain text) that tell the error."""
    try:
        records = json.loads(log_text)
        text = "".join(r.get("data", "") for r in records if isinstance(r, dict))
    except ValueError:
        text = log_text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [line for line in lines if any(word in line for word in ERROR_WORDS)][-10:] or lines[-5:]


def fetch_output(session: Session, kernel_ref: str, dest: Path) -> tuple[list[Path], str]:
    """The run's output files (into dest) and its log text."""
    dest.mkdir(parents=True, exist_ok=True)
    with session.calling(f"fetching the output of {kernel_ref}"):
        try:
            files, _ = session.api.kernels_output(kernel_ref, str(dest), force=True, quiet=True)
        except ValueError as exc:
            raise CompError(f"Kaggle would not give the output of {kernel_ref}: {exc}") from None
    paths = [Path(f) for f in files]
    logs = [p for p in paths if p.suffix == ".log"]
    return [p for p in paths if p.suffix != ".log"], logs[0].read_text(errors="replace") if logs else ""


def push_kernel(
    folder: Path, notes: str = "comp kernel", poll_interval: float = POLL_INTERVAL, sleep=time.sleep
) -> PushResult:
    """Upload kernels/<name>/dataset, push kernels/<name>/notebook, follow its run; record push.json."""
    build = json.loads((folder / "kernel.json").read_text())
    kernel_id, dataset_id = build["kernel_id"], build["dataset_id"]
    session = create_session(check_slug(build["competition"]))
    dataset_version = upload_dataset(session, folder / "dataset", dataset_id, notes, poll_interval, sleep)
    with session.calling(f"pushing the notebook {kernel_id}"):
        try:
            pushed = session.api.kernels_push(str(folder / "notebook"))
        except requests.HTTPError as exc:
            raise _refused(exc, "notebook", kernel_id) or exc from None
        except ValueError as exc:
            raise CompError(f"The notebook {kernel_id} was not pushed: {exc}") from None
    if pushed.error:
        raise CompError(
            f"Kaggle did not take the notebook {kernel_id}: {pushed.error}", hint="Fix it, then push again."
        )
    version = int(pushed.version_number or 0)

    def read() -> Any:
        with session.calling(f"following the run of {kernel_id}"):
            return session.api.kernels_status(kernel_id)

    finished = ("complete", "error", "cancel_acknowledged")
    state = _poll(read, lambda s: _status_word(s.status), finished, "notebook run", poll_interval, RUN_WAIT, sleep)
    status = _status_word(state.status)
    with tempfile.TemporaryDirectory(prefix="comp-kernel-output-") as scratch:
        outputs, log = fetch_output(session, kernel_id, Path(scratch)) if status in finished else ([], "")
        if status in ("error", "cancel_acknowledged"):
            lines = _error_lines(log) or [state.failure_message or "no log"]
            raise CompError(
                f"The notebook {kernel_id} version {version} failed on Kaggle ({status}): " + " | ".join(lines),
                hint="Rehearse it (comp kernel RUN --rehearse), fix the cause, then push again. Nothing was submitted.",
            )
        csv = next((p for p in outputs if p.name == "submission.csv"), None)
        digest = sha256_file(csv) if csv else None
    result = PushResult(kernel_id, version, dataset_id, dataset_version, status, pushed.url or "", digest)
    write_json(folder / PUSH_RECORD, {**asdict(result), "time": datetime.now(UTC).isoformat(timespec="seconds")})
    return result
