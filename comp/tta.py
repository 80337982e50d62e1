"""Test-time augmentation views: each maps a normalised NCHW batch to another view of it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from comp.errors import CompError

View = Callable[[torch.Tensor], torch.Tensor]

VIEWS: dict[str, View] = {
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[3]),
    "vflip": lambda x: torch.flip(x, dims=[2]),
}


def resolve_views(names: list[str] | str, use_tta: bool) -> list[str]:
    """The views `comp predict` averages: `predict.tta` with --tta, the identity alone without."""
    if not use_tta:
        return ["identity"]
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in VIEWS]
    if unknown or not names:
        raise CompError(f"Unknown TTA view(s) {unknown} in predict.tta.", hint=f"Known views: {', '.join(VIEWS)}.")
    return names


def predict_views(model: torch.nn.Module, images: torch.Tensor, views: list[str]) -> torch.Tensor:
    """Mean class probabilities over the views, all views of the batch in one forward pass."""
    batch = torch.cat([VIEWS[name](images) for name in views])
    probs = model(batch).float().softmax(dim=1)
    return probs.view(len(views), len(images), -1).mean(dim=0)
