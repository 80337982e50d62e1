"""Weights from disk or timm's cache: local .safetensors/.pt files read safely, pretrained weights offline first."""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from comp.errors import CompError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- local weights

_NESTED_STATE_KEYS = ("state_dict", "model", "model_state_dict", "model_state")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a PyTorch file, never unpickling arbitrary objects."""
    if not path.is_file():
        raise CompError(f"model.weights file {path} not found.", hint="Fix the path, or set model.weights: null.")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CompError(f"model.weights {path} is not a readable safetensors file: {exc}.") from None
    else:
        state = _torch_state(path)
    return {_strip_wrappers(k): v for k, v in state.items()}


def _torch_state(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise CompError(
            f"Refusing to load model.weights {path}: it holds pickled Python objects"
            f"{f' ({culprit.group(1)})' if culprit else ''}, not only tensors, and unpickling them could run "
            "arbitrary code.",
            hint="Save a state dict instead (torch.save(model.state_dict(), path)) or a .safetensors file.",
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise CompError(f"model.weights {path} is not a readable PyTorch file: {exc}.") from None
    if isinstance(loaded, Mapping):
        for key in _NESTED_STATE_KEYS:  # training checkpoints nest the model's weights
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CompError(
            f"model.weights {path} holds no state dict (a mapping of parameter names to tensors).",
            hint="Save one with torch.save(model.state_dict(), path).",
        )
    return loaded


def _strip_wrappers(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`; a classifier sized for another class count is left freshly initialised."""
    own = model.state_dict()
    classifier = _classifier_keys(model)
    state = dict(state)
    resized = [k for k in classifier if k in state and state[k].shape != own[k].shape]
    if resized:
        log.warning(
            "model.weights %s: its classifier has shape %s, the model's %s (another class count); "
            "the classifier is re-initialised.",
            source,
            tuple(state[resized[0]].shape),
            tuple(own[resized[0]].shape),
        )
    for key in resized:
        del state[key]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and k not in classifier and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        problems = [
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (
                ("shape differs", mismatched),
                ("missing", missing),
                ("unexpected", unexpected),
            )
            if keys
        ]
        raise CompError(
            f"model.weights {source} does not fit model '{type(model).__name__}' ({'; '.join(problems)}).",
            hint="Use weights saved from the same model.name, model.kwargs and model.head.",
        )
    model.load_state_dict(state, strict=False)


def _classifier_keys(model: nn.Module) -> set[str]:
    classifier = model.get_classifier()
    ids = {id(t) for t in classifier.state_dict(keep_vars=True).values()}
    return {k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids}


# ----------------------------------------------------------------------------- timm's pretrained weights


# Everything a failed download raises: missing cache entries, offline mode, HTTP and connection errors.
_DOWNLOAD_ERRORS = (OSError, EntryNotFoundError)


def create_pretrained(name: str, kwargs: dict) -> nn.Module:
    """timm's pretrained weights: the local cache first (no network), then a download."""
    with contextlib.suppress(*_DOWNLOAD_ERRORS), _hub_offline():
        return timm.create_model(name, pretrained=True, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except _DOWNLOAD_ERRORS as exc:
        raise CompError(
            f"Cannot get timm's pretrained weights for model '{name}': not in the local cache and the "
            f"download failed ({type(exc).__name__}). Without internet (a Kaggle notebook), point "
            "model.weights at a local .safetensors or .pt file instead.",
            hint='Where there is internet, save them: python -c "import timm, safetensors.torch as s; '
            f"s.save_file(timm.create_model('{name}', pretrained=True).state_dict(), 'w.safetensors')\"",
        ) from None


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; its is_offline_mode() reads this constant.
    saved = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved
