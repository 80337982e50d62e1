"""Test-time augmentation: named views of a normalised NCHW batch, all run in one forward pass.

A view is a name in `predict.tta`; it stands for one or more transformed copies of the batch:

    identity, hflip, vflip, hvflip      the image, mirrored left-right, top-bottom, or both
    rot90, rot180, rot270               quarter turns (images are square after the eval transform)
    scale, scale<f>                     enlarged by f (default 1.15), then centre-cropped back to its size
    fivecrop, fivecrop<r>               four corner crops and the centre crop of r x the side
                                        (default 0.875), each resized back: five copies

A view's probabilities are the mean over its copies, and TTA is the mean over the views, so
`[identity, hflip]` gives exactly the mean of the identity and the hflip predictions. The mean
is arithmetic, or geometric (`predict.tta_mean`: the normalised geometric mean, i.e. the softmax
of the mean log-probabilities). For a multi-label task every tag's probability is averaged on its
own (no softmax across the tags; geometric: the sigmoid of the mean logit). `predict.tta: auto`
chooses views on the OOF rows (`choose_views`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from comp.errors import CompError
from comp.metrics import is_better, score
from comp.tasks import log_probabilities

Copy = Callable[[torch.Tensor], torch.Tensor]
DEFAULT_SCALE = 1.15
DEFAULT_CROP = 0.875

_FIXED: dict[str, Copy] = {
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[3]),
    "vflip": lambda x: torch.flip(x, dims=[2]),
    "hvflip": lambda x: torch.flip(x, dims=[2, 3]),
    "rot90": lambda x: torch.rot90(x, 1, dims=[2, 3]),
    "rot180": lambda x: torch.rot90(x, 2, dims=[2, 3]),
    "rot270": lambda x: torch.rot90(x, 3, dims=[2, 3]),
}
_PARAMETRISED = re.compile(r"^(scale|fivecrop)(\d+(?:\.\d+)?)?$")
# What `predict.tta: auto` tries, each view with its default parameter.
AUTO_CANDIDATES = [*_FIXED, "scale", "fivecrop"]
VIEW_HELP = (
    "identity, hflip, vflip, hvflip, rot90, rot180, rot270, scale (or scale<factor> > 1, e.g. scale1.3), "
    "fivecrop (or fivecrop<ratio> < 1, e.g. fivecrop0.8)"
)


# ----------------------------------------------------------------------------- views


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def _scale(factor: float) -> Copy:
    def enlarge_and_centre_crop(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        big = _resize(x, round(h * factor), round(w * factor))
        top, left = (big.shape[-2] - h) // 2, (big.shape[-1] - w) // 2
        return big[..., top : top + h, left : left + w]

    return enlarge_and_centre_crop


def _five_crops(ratio: float) -> list[Copy]:
    def crop(corner: str) -> Copy:
        def crop_and_resize(x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            ch, cw = max(1, round(h * ratio)), max(1, round(w * ratio))
            top = {"t": 0, "b": h - ch, "c": (h - ch) // 2}[corner[0]]
            left = {"l": 0, "r": w - cw, "c": (w - cw) // 2}[corner[1]]
            return _resize(x[..., top : top + ch, left : left + cw], h, w)

        return crop_and_resize

    return [crop(corner) for corner in ("tl", "tr", "bl", "br", "cc")]


def view_copies(name: str) -> list[Copy]:
    """The transformed copies a view name stands for (CompError for a name that is not a view)."""
    if name in _FIXED:
        return [_FIXED[name]]
    match = _PARAMETRISED.match(name)
    if match:
        kind, value = match.group(1), match.group(2)
        if kind == "scale":
            factor = float(value) if value else DEFAULT_SCALE
            if factor > 1:
                return [_scale(factor)]
        else:
            ratio = float(value) if value else DEFAULT_CROP
            if 0 < ratio < 1:
                return _five_crops(ratio)
    close = difflib.get_close_matches(name, [*AUTO_CANDIDATES, "auto"], n=1)
    raise CompError(
        f"Unknown TTA view '{name}' in predict.tta.{f' Did you mean {close[0]}?' if close else ''}",
        hint=f"Views: {VIEW_HELP}; or predict.tta: auto to choose them on the OOF rows.",
    )


def resolve_views(setting: list[str] | str, use_tta: bool) -> list[str] | str:
    """The views `comp predict` uses: identity alone without --tta; `predict.tta` (checked) or "auto" with it."""
    if not use_tta:
        return ["identity"]
    if setting == "auto":
        return "auto"
    names = [setting] if isinstance(setting, str) else list(setting)
    if not names:
        raise CompError(
            "predict.tta is an empty list.", hint="List at least one view, e.g. [identity, hflip], or use auto."
        )
    for name in names:
        view_copies(name)
    if len(set(names)) < len(names):
        raise CompError(f"predict.tta lists a view twice: {names}.", hint="List each view once.")
    return names


# ----------------------------------------------------------------------------- averaging


def combine(log_probs: torch.Tensor, mean: str, dim: int = 0, task: str = "multiclass") -> torch.Tensor:
    """Log-probabilities of the mean over `dim` of per-view log-probabilities (arithmetic or geometric); per tag
    for a multi-label task."""
    if mean == "geometric" and task == "multilabel":
        logits = log_probs - torch.log(-torch.expm1(log_probs.clamp(max=-1e-7)))  # log p - log(1 - p)
        return F.logsigmoid(logits.mean(dim))
    if mean == "geometric":
        return torch.log_softmax(log_probs.mean(dim), dim=-1)
    return torch.logsumexp(log_probs, dim) - math.log(log_probs.shape[dim])


def view_log_probs(
    model: torch.nn.Module, images: torch.Tensor, views: list[str], mean: str, task: str = "multiclass"
) -> torch.Tensor:
    """Per-view log-probabilities (views x batch x classes), every copy of every view in one forward pass."""
    copies = [view_copies(name) for name in views]
    batch = torch.cat([copy(images) for view in copies for copy in view])
    logits = model(batch).float()
    log_probs = log_probabilities(logits, task).view(-1, len(images), logits.shape[1])
    out, start = [], 0
    for view in copies:
        out.append(combine(log_probs[start : start + len(view)], mean, task=task))
        start += len(view)
    return torch.stack(out)


# ----------------------------------------------------------------------------- choosing views on OOF rows


@dataclass
class ViewChoice:
    """What `predict.tta: auto` measured: each view alone, then each view tried in turn on top of the kept ones."""

    views: list[str]
    metric: str
    alone: dict[str, float]
    steps: list[dict]
    score: float


def choose_views(
    log_probs: np.ndarray,
    names: list[str],
    targets: np.ndarray,
    metric: str,
    mean: str = "arithmetic",
    task: str = "multiclass",
    params: dict | None = None,
) -> ViewChoice:
    """Greedy forward selection on the OOF rows: start from the best single view, then try the others,
    best alone first, keeping each one only if the metric (with `params`) strictly improves.

    `log_probs` is views x rows x classes, in the order of `names`.
    """
    stacked = torch.from_numpy(np.asarray(log_probs, dtype=np.float32))

    def measure(indices: list[int]) -> float:
        return score(metric, targets, combine(stacked[indices], mean, task=task).exp().numpy(), **(params or {}))

    alone = {name: measure([i]) for i, name in enumerate(names)}
    order = sorted(range(len(names)), key=lambda i: alone[names[i]], reverse=is_better(metric, 1.0, 0.0))
    kept, best = [order[0]], alone[names[order[0]]]
    steps = [{"view": names[order[0]], "score": best, "kept": True}]
    for i in order[1:]:
        candidate = measure([*kept, i])
        improved = is_better(metric, candidate, best)
        steps.append({"view": names[i], "score": candidate, "kept": improved})
        if improved:
            kept, best = [*kept, i], candidate
    views = [names[i] for i in sorted(kept)]
    return ViewChoice(views, metric, alone, steps, best)
