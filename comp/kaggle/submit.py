"""`comp submit`: a file validated, sent to Kaggle once, recorded in the ledger, and optionally scored.

The ledger's sha256 column guards against sending the same content twice (each submission counts
against Kaggle's daily limit); the validator runs before credentials are even looked up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from comp.config import Config
from comp.errors import CompError
from comp.io import sha256_file
from comp.kaggle.client import Session, SubmissionStatus, calling, check_slug, create_session, status_name
from comp.kaggle.credentials import Credentials
from comp.kaggle.ledger import append_entry, find_by_sha256, find_kernel_submission, update_entry
from comp.runs import KERNELS, LEDGER
from comp.submission.validate import validate_with_config

POLL_INTERVAL = 10.0  # seconds before the first look at a new submission's score
POLL_BACKOFF = 1.5  # each wait is this much longer than the one before ...
POLL_MAX_INTERVAL = 60.0  # ... up to this
WAIT_LIMIT = 30 * 60.0  # seconds `--wait` waits for a score before leaving it to `comp submissions`


@dataclass
class SubmitResult:
    file: Path
    competition: str
    sha256: str
    ref: str  # Kaggle's id of the submission
    oof_score: float | None
    status: SubmissionStatus
    public_score: str | None
    warnings: list[str]  # validator warnings: Kaggle accepts the file, but it differs from the sample
    waited: bool = False  # whether the score was waited for
    ledger: Path = field(default=LEDGER)

    def __rich__(self) -> Group:
        oof = "n/a" if self.oof_score is None else f"{self.oof_score:.4f}"
        lines = [Text(f"warning: {warning}", style="yellow") for warning in self.warnings]
        lines.append(
            Text(
                f"Submitted {self.file} to {self.competition}: Kaggle ref {self.ref}, sha256 "
                f"{self.sha256[:12]}, OOF {oof}; recorded in {self.ledger.as_posix()}"
            )
        )
        if self.waited and self.status == "pending":
            lines.append(Text("Still pending after the wait: `comp submissions` shows the score later."))
        elif self.waited:
            lines.append(Text(f"Public score: {self.public_score}  (OOF {oof})"))
        return Group(*lines)


def _oof_score(csv_path: Path) -> float | None:
    """The OOF score `comp ensemble` recorded beside the submission (submissions/<name>.json)."""
    sidecar = csv_path.with_suffix(".json")
    try:
        score = json.loads(sidecar.read_text()).get("oof_score")
    except (OSError, ValueError, AttributeError):
        return None
    return float(score) if isinstance(score, (int, float)) else None


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
            calling("reading the submission's score", competition, creds),
            api.build_kaggle_client() as client,
        ):
            submission = client.competitions.competition_api_client.get_submission(request)
        if status_name(submission) != "pending" or waited >= max_wait:
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


def _record(
    file: str, sha256: str | None, message: str, oof: float | None, ref: str, ledger_path: Path, **kernel: object
) -> None:
    """The ledger's row for a submission Kaggle took (`kernel`: a code submission's notebook and data versions);
    its score comes later."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "file": file,
        "sha256": sha256,
        "message": message,
        "oof_score": oof,
        "kaggle_ref": ref,
        "status": "pending",
        "public_score": None,
        **kernel,
    }
    append_entry(entry, ledger_path)


def _await_score(
    session: Session,
    result: SubmitResult,
    poll_interval: float,
    max_wait: float,
    sleep: Callable[[float], None],
) -> str | None:
    """Wait for the submission's score and put it in `result` and the ledger; Kaggle's reason when it could not
    score the submission (the ledger records the error), else None."""
    scored = wait_for_score(session.api, session.creds, result.competition, result.ref, poll_interval, max_wait, sleep)
    result.status, result.public_score = status_name(scored), scored.public_score
    update_entry(result.ref, {"status": result.status, "public_score": result.public_score}, result.ledger)
    return (scored.error_description or "no reason given") if result.status == "error" else None


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
    session = create_session(competition)
    with session.calling("submitting"):
        response = session.api.competition_submit(str(csv_path), message, competition, quiet=True)
    # A failed upload is not an exception: the client answers with this message and ref 0.
    if response.message == session.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE or not response.ref:
        raise CompError(
            f"Kaggle did not take {csv_path}: {response.message or 'no submission was created'}.",
            hint="The upload failed, so nothing was recorded and the submission did not count: run the command again.",
        )
    ref, oof = str(response.ref), _oof_score(csv_path)
    _record(csv_path.as_posix(), sha256, message, oof, ref, ledger_path)
    result = SubmitResult(csv_path, competition, sha256, ref, oof, "pending", None, warnings, wait, ledger_path)
    if wait and (error := _await_score(session, result, poll_interval, max_wait, sleep)):
        raise CompError(
            f"Kaggle could not score submission {ref} ({csv_path}): {error}.",
            hint="Fix the file and submit again; the ledger records the error.",
        )
    return result


def _validate(csv_path: Path, config: Config) -> list[str]:
    """The validator's warnings for a submission; CompError listing its errors."""
    validation = validate_with_config(csv_path, config)
    if not validation.is_valid:
        raise CompError(
            f"{csv_path} is not a valid submission for '{config.data.competition}', so it was not sent: "
            + "; ".join(p.describe() for p in validation.errors),
            hint="Fix the file, or write it with `comp ensemble`, then submit again.",
        )
    return [p.describe() for p in validation.warnings]


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


# ----------------------------------------------------------------------------- code competitions

KERNEL_OUTPUT = "submission.csv"  # the file a code competition scores


@dataclass
class KernelTarget:
    """What `comp submit --kernel` sends: a notebook version, and what comp knows of it."""

    kernel: str  # owner/slug
    version: int | None
    competition: str
    oof_score: float | None
    dataset_version: str | None
    output_sha256: str | None


def _kernel_target(kernel: str, version: int | None, competition: str, kernels: Path) -> KernelTarget:
    """A built kernel's record (kernels/<name>/kernel.json and push.json), found by name or by owner/slug."""
    records = [
        p.parent for p in sorted(kernels.glob("*/kernel.json")) if kernel in (p.parent.name, _read(p).get("kernel_id"))
    ]
    if not records:
        if "/" not in kernel:
            raise CompError(
                f"No kernel '{kernel}': {kernels / kernel / 'kernel.json'} does not exist.",
                hint="Name a kernel built here (comp kernel RUN --name NAME --push), or give its OWNER/SLUG.",
            )
        return KernelTarget(kernel, version, competition, None, None, None)
    build, pushed = _read(records[0] / "kernel.json"), _read(records[0] / "push.json")
    if version is None and not pushed:
        raise CompError(
            f"Kernel {build['kernel_id']} has not been pushed from here, so its version is unknown.",
            hint="Push it first (comp kernel RUN --push), or pass --version N.",
        )
    same = version is None or version == pushed.get("kernel_version")
    return KernelTarget(
        build["kernel_id"],
        version if version is not None else pushed["kernel_version"],
        build["competition"],
        build.get("oof_score"),
        str(pushed.get("dataset_version") or "") if same else None,
        pushed.get("output_sha256") if same else None,
    )


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def submit_kernel(
    kernel: str,
    message: str,
    competition: str,
    *,
    version: int | None = None,
    force: bool = False,
    wait: bool = False,
    poll_interval: float = POLL_INTERVAL,
    max_wait: float = WAIT_LIMIT,
    ledger_path: Path = LEDGER,
    kernels: Path = KERNELS,
    sleep: Callable[[float], None] = time.sleep,
) -> SubmitResult:
    """Submit a notebook version's submission.csv to a code competition; recorded in the ledger like a file."""
    target = _kernel_target(kernel, version, competition, kernels)
    slug = check_slug(target.competition)
    if not force and target.version is not None:
        previous = find_kernel_submission(target.kernel, target.version, KERNEL_OUTPUT, ledger_path)
        if previous is not None:
            raise CompError(
                f"Version {target.version} of {target.kernel} was already submitted at {previous['time']} "
                f"(ref {previous['kaggle_ref']}, public score {previous['public_score'] or previous['status']}).",
                hint="Each submission counts against Kaggle's daily limit; pass --force to submit it again.",
            )
    session = create_session(slug)
    with session.calling("submitting the notebook"):
        response = session.api.competition_submit_code(
            KERNEL_OUTPUT, message, slug, kernel=target.kernel, kernel_version=target.version, quiet=True
        )
    if not response.ref:
        raise CompError(
            f"Kaggle did not take {target.kernel}: {response.message or 'no submission was created'}.",
            hint="Nothing was recorded and the submission did not count: check the kernel and version, then retry.",
        )
    ref = str(response.ref)
    notebook = {"kernel": target.kernel, "kernel_version": target.version, "dataset_version": target.dataset_version}
    _record(KERNEL_OUTPUT, target.output_sha256, message, target.oof_score, ref, ledger_path, **notebook)
    where = Path(f"{target.kernel} v{target.version or 'latest'}")
    result = SubmitResult(
        where, slug, target.output_sha256 or "", ref, target.oof_score, "pending", None, [], wait, ledger_path
    )
    if wait and (error := _await_score(session, result, poll_interval, max_wait, sleep)):
        raise CompError(
            f"Kaggle could not score the output of {where}: {error}.",
            hint="On Kaggle's page of the submission the rerun's log tells why; the ledger records the error.",
        )
    return result


def submit_any(
    config: Config,
    csv_path: Path | None,
    message: str,
    *,
    kernel: str | None = None,
    version: int | None = None,
    force: bool = False,
    wait: bool = False,
    poll_interval: float = POLL_INTERVAL,
) -> SubmitResult:
    """`comp submit`: a file (validated first), or with `kernel` a notebook's output to a code competition."""
    if not message.strip():
        raise CompError("A submission needs a description.", hint="Pass -m 'what changed'.")
    if kernel is None:
        if csv_path is None or version is not None:
            raise CompError(
                "Give the submission FILE (or --kernel NAME for a code competition); --version goes with --kernel.",
                hint="comp submit FILE -m MSG, or comp submit --kernel NAME [--version N] -m MSG",
            )
        return submit(config, csv_path, message, force=force, wait=wait, poll_interval=poll_interval)
    if csv_path is not None:
        raise CompError(
            f"A code competition scores the notebook's own submission.csv: FILE {csv_path} cannot go with --kernel.",
            hint="comp submit --kernel NAME [--version N] -m MSG",
        )
    return submit_kernel(
        kernel,
        message,
        config.data.competition,
        version=version,
        force=force,
        wait=wait,
        poll_interval=poll_interval,
    )
