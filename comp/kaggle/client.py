"""The official `kaggle` client, signed in, with every call silenced and its HTTP errors explained.

Every Kaggle call goes through `Session.calling(action)`: the client's printing is silenced and its
HTTP and connection errors become one CompError each that says the fix, with the keys redacted.
A new kind of Kaggle call (a dataset, a kernel) opens a session the same way.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast

import requests

from comp.errors import CompError
from comp.kaggle.credentials import CREDENTIAL_HELP, Credentials, redact, require_credentials

SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
SubmissionStatus = Literal["pending", "complete", "error"]


def check_slug(slug: str) -> str:
    """The slug, or a CompError when it is comp's offline demo or not shaped like a Kaggle slug."""
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


def retry_after(exc: requests.HTTPError) -> float | None:
    """Seconds a 429 answer asks to wait (Retry-After: seconds or an HTTP date); None for other answers."""
    value = exc.response.headers.get("Retry-After") if exc.response is not None else None
    if _status_code(exc) != 429 or value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
    return CompError(f"{message} Kaggle said: {redact(str(exc), creds)}", hint=hint)


@contextmanager
def calling(action: str, slug: str, creds: Credentials) -> Iterator[None]:
    """Run client code with its printing silenced; its errors become CompErrors that say the fix."""
    try:
        with redirect_stdout(io.StringIO()):
            yield
    except requests.HTTPError as exc:
        raise _http_error(exc, action, slug, creds) from None
    except requests.RequestException as exc:
        raise CompError(
            redact(f"Could not reach Kaggle while {action}: {exc}", creds),
            hint="Check the internet connection (and HTTPS_PROXY, if you use a proxy), then try again.",
        ) from None


def _sign_in(creds: Credentials, slug: str) -> Any:
    """An authenticated kaggle.api.KaggleApi (imported only now: importing it authenticates)."""
    with calling("signing in", slug, creds):
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


@dataclass(frozen=True)
class Session:
    """A signed-in client for one competition."""

    api: Any  # kaggle.api.KaggleApi
    creds: Credentials
    slug: str

    def calling(self, action: str) -> AbstractContextManager[None]:
        """`calling` for this session: `with session.calling("submitting"): session.api...`."""
        return calling(action, self.slug, self.creds)


def create_session(slug: str) -> Session:
    """Find the credentials (a CompError says where to put missing ones), then sign the client in."""
    creds = require_credentials()
    return Session(_sign_in(creds, slug), creds, slug)


def status_name(submission: Any) -> SubmissionStatus:
    """A submission's status as a word (Kaggle's SUBMISSION_STATUS_PENDING is pending)."""
    return cast(SubmissionStatus, getattr(submission.status, "name", str(submission.status)).rsplit("_", 1)[-1].lower())
