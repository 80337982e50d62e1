"""Kaggle credentials: found where the official client looks, before the client is imported.

Importing `kaggle` authenticates at once and, without credentials, prints its own help and exits;
so comp finds them first and says where to put missing ones. Keys never reach a message: `redact`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from comp.errors import CompError

TOKEN_PAGE = "https://www.kaggle.com/settings/api"
CREDENTIAL_HELP = (
    f"Create an API token at {TOKEN_PAGE} ('Create New Token' downloads kaggle.json) and save it as "
    "~/.kaggle/kaggle.json (then chmod 600 ~/.kaggle/kaggle.json), or set the environment variables "
    "KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN for a new-style token)."
)
_AUTH_VALUE = re.compile(r"\b(Basic|Bearer)\s+\S+")


@dataclass(frozen=True)
class Credentials:
    source: str  # where they were found, for messages
    secrets: tuple[str, ...]  # values that must never appear in output


def _config_dir() -> Path:
    """Where the client looks for kaggle.json (the same rule as kaggle.api.KaggleApi)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path("~/.kaggle").expanduser()
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()) / "kaggle"


def _read_kaggle_json(path: Path) -> dict[str, str]:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        values = None
    if not isinstance(values, dict) or not values.get("username") or not values.get("key"):
        raise CompError(
            f"{path} is not a valid Kaggle token: it must be JSON with 'username' and 'key'.",
            hint=f"Download a fresh one: {CREDENTIAL_HELP}",
        )
    return values


def _token_file() -> Path | None:
    for name in ("access_token", "access_token.txt"):
        path = Path("~/.kaggle").expanduser() / name
        if path.is_file() and path.read_text().strip():
            return path
    return None


def _notebook_token() -> Credentials | None:
    """Inside a Kaggle notebook, the token file KAGGLE_API_V1_TOKEN names (the client reads it first there)."""
    env = os.environ
    in_notebook = env.get("KAGGLE_KERNEL_RUN_TYPE") is not None and env.get("KAGGLE_DATA_PROXY_URL") is not None
    path = Path(env.get("KAGGLE_API_V1_TOKEN") or "")
    if in_notebook and env.get("KAGGLE_API_V1_TOKEN") and path.is_file() and path.read_text().strip():
        return Credentials("the KAGGLE_API_V1_TOKEN file of this Kaggle notebook", (path.read_text().strip(),))
    return None


def find_credentials() -> Credentials | None:
    """The credentials the client would use, in its own order, or None (nothing is imported)."""
    env = os.environ
    if (notebook := _notebook_token()) is not None:
        return notebook
    token = env.get("KAGGLE_API_TOKEN")
    if token:
        value = Path(token).read_text().strip() if Path(token).is_file() else token
        return Credentials("the KAGGLE_API_TOKEN environment variable", (token, value))
    if (path := _token_file()) is not None:
        return Credentials(str(path), (path.read_text().strip(),))
    kaggle_json = _config_dir() / "kaggle.json"
    stored = _read_kaggle_json(kaggle_json) if kaggle_json.is_file() else {}
    username = env.get("KAGGLE_USERNAME") or stored.get("username")
    key = env.get("KAGGLE_KEY") or stored.get("key")
    if username and key:
        source = "KAGGLE_USERNAME/KAGGLE_KEY" if env.get("KAGGLE_KEY") else str(kaggle_json)
        return Credentials(source, (key,))
    if username or key:
        present, absent = ("KAGGLE_USERNAME", "KAGGLE_KEY") if username else ("KAGGLE_KEY", "KAGGLE_USERNAME")
        raise CompError(f"{present} is set but {absent} is not.", hint=CREDENTIAL_HELP)
    oauth = Path("~/.kaggle/credentials.json").expanduser()  # written by `kaggle auth login`
    if oauth.is_file():
        return Credentials(str(oauth), ())
    return None


def find_username() -> str | None:
    """The account name the key-style credentials name (KAGGLE_USERNAME or kaggle.json), without a network call."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    kaggle_json = _config_dir() / "kaggle.json"
    return _read_kaggle_json(kaggle_json)["username"] if kaggle_json.is_file() else None


def require_credentials() -> Credentials:
    """The credentials, or a CompError that says where to put them."""
    found = find_credentials()
    if found is None:
        places = dict.fromkeys([Path("~/.kaggle/kaggle.json").expanduser(), _config_dir() / "kaggle.json"])
        raise CompError(
            f"No Kaggle credentials found (looked for {' and '.join(map(str, places))}, and for KAGGLE_* "
            "environment variables).",
            hint=CREDENTIAL_HELP,
        )
    return found


def redact(text: str, creds: Credentials) -> str:
    """Text without the secrets, nor an Authorization header's value (the client's verbose mode prints it)."""
    for secret in creds.secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _AUTH_VALUE.sub(r"\1 ***", text)
