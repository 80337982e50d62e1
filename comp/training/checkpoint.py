"""What a fold folder keeps: best weights, resumable state (last.pt) and the run record (run.json).

last.pt is read with torch.load(weights_only=True), which refuses anything but tensors and plain
Python values, so a file planted there cannot run code. The random generators' states are
stored in those terms: Python's as a list, NumPy's key as a tensor.
"""

from __future__ import annotations

import json
import platform
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from comp import __version__
from comp.config import Config, flatten
from comp.data.pseudo import table_record
from comp.env import package_version
from comp.errors import CompError
from comp.io import atomic_path, sha256_file, write_json
from comp.runs import fold_number

RECORDED_PACKAGES = ("torch", "timm", "albumentations", "numpy")
# Keys that cannot change what training computes: they may differ when a fold is resumed.
NO_EFFECT_ON_TRAINING = (
    "predict.",
    "submission.",
    "data.cache",
    "train.num_workers",
    "train.pin_memory",
    "train.persistent_workers",
    "train.checkpoint_every_steps",
    "train.checkpoint_seconds",
    "train.tensorboard",
    "train.loggers",
)


# ----------------------------------------------------------------------------- weights and state


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, classes: list, epoch: int) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"classes": json.dumps(classes), "epoch": str(epoch)})


def snapshot(value: Any, memory_format: torch.memory_format = torch.preserve_format) -> Any:
    """A copy of a state (nested dicts, lists and tuples of tensors and plain values) that training can no longer
    change: every tensor copied to the CPU (in `memory_format`), every container rebuilt. It is then written while
    training goes on."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", memory_format=memory_format, copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item, memory_format) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item, memory_format) for item in value)
    return value


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, mmap: bool = False) -> dict[str, Any]:
    """last.pt, loaded without unpickling arbitrary objects (mmap: tensors left on disk until read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the same user-facing problem
        raise CompError(
            f"Cannot load {path} safely ({type(exc).__name__}): it is not a checkpoint written by comp, "
            "or it holds objects that would need unpickling (which could run code); nothing was loaded.",
            hint="Delete it and retrain the fold with --force.",
        ) from None


# ----------------------------------------------------------------------------- random generators


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's generator states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": numpy_state["state"]["pos"],
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- config changes


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every key that differs and can change what training computes."""
    old, new = flatten(saved), flatten(current)
    return [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not key.startswith(NO_EFFECT_ON_TRAINING)
    ]


# ----------------------------------------------------------------------------- the run record


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "comp": __version__,
        **{name: package_version(name) for name in RECORDED_PACKAGES},
    }


def git_state(folder: Path = Path(".")) -> dict[str, Any] | None:
    """The commit checked out where comp runs, and whether the tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None  # not a git repository, or no git


def new_record(config: Config, fold: int) -> dict[str, Any]:
    return {
        "fold": fold,
        "started": now(),
        "command": " ".join(sys.argv),
        "config": config.to_dict(),
        "fold_file": str(config.fold_file),
        "fold_file_sha256": sha256_file(config.fold_file),
        # which pseudo-label table joined the training rows (checked before training began), hard or soft
        **({"pseudo_labels": table_record(config.data.pseudo_labels)} if config.data.pseudo_labels else {}),
        "versions": package_versions(),
        "git": git_state(),
        "resumes": [],
        "finished": None,
        "trackers": {},  # tracker -> its run id for this fold, so that a resume continues that run
    }


def read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / "run.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_record(folder: Path, record: dict[str, Any]) -> None:
    write_json(folder / "run.json", record)


def record_resume(folder: Path, config: Config, epoch: int, batch: int, changes: list[str]) -> None:
    """Append this resume (and any config change it was forced through with) to run.json."""
    record = read_record(folder) or new_record(config, fold_number(folder))
    record["resumes"].append(
        {
            "at": now(),
            "command": " ".join(sys.argv),
            "epoch": epoch,
            "batch": batch,
            "changes": changes,
            "versions": package_versions(),
            "git": git_state(),
        }
    )
    if changes:
        record["config"] = config.to_dict()
    record["finished"] = None
    write_record(folder, record)


def tracker_run_id(folder: Path, tracker: str) -> str | None:
    """The id of the fold's run in `tracker` (wandb, mlflow), when one was started."""
    record = read_record(folder) or {}
    return record.get("trackers", {}).get(tracker)


def record_tracker_run(folder: Path, tracker: str, run_id: str) -> None:
    record = read_record(folder)
    record.setdefault("trackers", {})[tracker] = run_id
    write_record(folder, record)
