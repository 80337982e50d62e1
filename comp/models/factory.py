"""Models: any timm model by name (comp's own included), an optional MLP head, local weights, a size limit."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from timm.data import resolve_data_config
from torch import nn

from comp.config import ModelConfig
from comp.errors import CompError

# Importing architectures registers comp's own models in timm: every create_model caller can name them.
from comp.models.architectures import HeadedModel
from comp.models.weights import create_pretrained, load_weights, read_weights

# ----------------------------------------------------------------------------- building


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The configured model for `num_classes`: timm backbone, optional head, local weights, size limit."""
    model = _create_timm_model(cfg, num_classes)
    state = read_weights(Path(cfg.weights)) if cfg.weights else None
    headed_file = state is not None and any(k.startswith("backbone.") for k in state)
    if state is not None and not headed_file:
        load_weights(model, state, cfg.weights)
    if cfg.head.hidden:
        model = HeadedModel(model, num_classes, cfg.head.hidden, cfg.head.dropout)
    check_size(model, cfg)
    if headed_file:
        if not isinstance(model, HeadedModel):
            raise CompError(
                f"model.weights {cfg.weights} holds a model with an extra head, but model.head is not set.",
                hint="Set model.head as it was when these weights were trained.",
            )
        load_weights(model, state, cfg.weights)
    return model


def _create_timm_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    check_model_name(cfg.name)
    pretrained = cfg.pretrained and not cfg.weights  # a local file wins: no download needed
    if pretrained and not timm.is_model_pretrained(cfg.name):
        raise CompError(
            f"timm has no pretrained weights for model.name '{cfg.name}'.",
            hint="Set model.pretrained: false, or model.weights: PATH to a local weights file.",
        )
    try:
        kwargs = dict(num_classes=num_classes, drop_rate=cfg.drop_rate, **cfg.kwargs)
        return create_pretrained(cfg.name, kwargs) if pretrained else timm.create_model(cfg.name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CompError(
            f"model.name '{cfg.name}' does not accept model.kwargs {cfg.kwargs}: {exc}.",
            hint="Fix or remove the key in model.kwargs.",
        ) from None


def check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    suggestion = f" Did you mean {', '.join(close)}?" if close else ""
    raise CompError(
        f"Unknown model.name '{name}'.{suggestion}",
        hint="Any timm model works (python -c \"import timm; print(timm.list_models('*resnet*'))\"), "
        "plus comp's own resnet9 and resnet18_cifar.",
    )


def check_size(model: nn.Module, cfg: ModelConfig) -> None:
    total, _ = count_parameters(model)
    if cfg.max_params is not None and total > cfg.max_params:
        raise CompError(
            f"Model '{cfg.name}' has {total:,} parameters, over the limit model.max_params = {cfg.max_params:,}.",
            hint="Choose a smaller model (or smaller model.kwargs.widths / model.head.hidden), or raise the limit.",
        )


# ----------------------------------------------------------------------------- inspection


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head, backbone). The head is what two-stage fine-tuning trains first: the extra head when there
    is one, else the classifier; the backbone is every other parameter."""
    head_module = model.head if isinstance(model, HeadedModel) else model.get_classifier()
    head = list(head_module.parameters())
    in_head = {id(p) for p in head}
    return head, [p for p in model.parameters() if id(p) not in in_head]


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model's pretrained weights expect; timm's ImageNet defaults for anything else."""
    data_cfg = resolve_data_config({}, model=model)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])
