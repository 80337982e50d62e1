"""Models: any timm model by name, comp's own CIFAR-style ResNets, an optional MLP head, local weights.

Importing this module registers `resnet9` and `resnet18_cifar` in timm's registry, so
`timm.create_model("resnet9", num_classes=10)` builds them like any timm model.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.data import resolve_data_config
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from comp.config import ModelConfig
from comp.errors import CompError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- comp's own architectures


def conv_bn(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_chs),
    ]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ClassifierMixin:
    """timm's classifier interface over `global_pool` + `fc`, with dropout before `fc`."""

    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool_type)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _four_widths(widths: Sequence[int], model: str) -> list[int]:
    if len(widths) != 4 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"{model} needs widths of 4 positive integers, got {list(widths)}")
    return list(widths)


class ResNet9(ClassifierMixin, nn.Module):
    """The small ResNet of the fast CIFAR-10 trainers (Myrtle.ai, airbench): prep, 3 stages, pool, linear.

    Its max-pools round up, so that an odd-sized map keeps its last row and column: at 28 px (Fashion-MNIST)
    the last stage pools 7x7 to 4x4, where rounding down would drop the features along the bottom and right.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        drop_rate: float = 0.0,
        global_pool: str = "max",
    ):
        super().__init__()
        w = _four_widths(widths, "resnet9")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.stem = conv_bn(in_chans, w[0])
        self.layer1 = nn.Sequential(
            conv_bn(w[0], w[1]),
            nn.MaxPool2d(2, ceil_mode=True),
            Residual(nn.Sequential(conv_bn(w[1], w[1]), conv_bn(w[1], w[1]))),
        )
        self.layer2 = nn.Sequential(conv_bn(w[1], w[2]), nn.MaxPool2d(2, ceil_mode=True))
        self.layer3 = nn.Sequential(
            conv_bn(w[2], w[3]),
            nn.MaxPool2d(2, ceil_mode=True),
            Residual(nn.Sequential(conv_bn(w[3], w[3]), conv_bn(w[3], w[3]))),
        )
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=m)
            for c, r, m in zip(w, (1, 2, 4, 8), ("stem", "layer1", "layer2", "layer3"), strict=True)
        ]
        self.num_features = self.head_hidden_size = w[3]
        self.global_pool, self.fc = create_classifier(w[3], num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))


class BasicBlock(nn.Module):
    """Two 3x3 convs; a 1x1 conv + BN projects the shortcut when the shape changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(in_chs, out_chs, stride=stride)
        self.conv2 = conv_bn(out_chs, out_chs, act=False)
        needs_projection = stride != 1 or in_chs != out_chs
        self.shortcut = conv_bn(in_chs, out_chs, 1, stride, act=False) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetCifar(ClassifierMixin, nn.Module):
    """ResNet-18 for small images: 3x3 stem, no max-pool, BasicBlocks 2-2-2-2, global average pooling."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        w = _four_widths(widths, "resnet18_cifar")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.stem = conv_bn(in_chans, w[0])
        in_chs = w[0]
        for i, out_chs in enumerate(w):
            stride = 1 if i == 0 else 2
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(BasicBlock(in_chs, out_chs, stride), BasicBlock(out_chs, out_chs)),
            )
            in_chs = out_chs
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=f"layer{i + 1}")
            for i, (c, r) in enumerate(zip(w, (1, 2, 4, 8), strict=True))
        ]
        self.num_features = self.head_hidden_size = w[3]
        self.global_pool, self.fc = create_classifier(w[3], num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _cifar_cfg() -> dict:
    # No weights to download: `pretrained: true` is refused; normalisation stays timm's ImageNet default.
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "first_conv": "stem.0",
        "classifier": "fc",
    }


# timm's register_model reads this module-level name to attach each model's pretrained cfg.
default_cfgs = generate_default_cfgs(
    {"resnet9": _cifar_cfg(), "resnet9_tiny": _cifar_cfg(), "resnet18_cifar": _cifar_cfg()}
)
_FOUR_STAGES = {"out_indices": (0, 1, 2, 3)}  # features_only=True: one feature map per stage


@register_model
def resnet9(pretrained: bool = False, **kwargs) -> ResNet9:
    return build_model_with_cfg(ResNet9, "resnet9", pretrained, feature_cfg=_FOUR_STAGES, **kwargs)


@register_model
def resnet9_tiny(pretrained: bool = False, **kwargs) -> ResNet9:
    """ResNet9 at a quarter of the widths (0.4M parameters): the demo's model, seconds per epoch on a CPU."""
    kwargs.setdefault("widths", (16, 32, 64, 128))
    return build_model_with_cfg(ResNet9, "resnet9_tiny", pretrained, feature_cfg=_FOUR_STAGES, **kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> ResNetCifar:
    return build_model_with_cfg(ResNetCifar, "resnet18_cifar", pretrained, feature_cfg=_FOUR_STAGES, **kwargs)


# ----------------------------------------------------------------------------- the optional head


class HeadedModel(nn.Module):
    """A timm backbone without its classifier, then dropout, linear(hidden), ReLU, BN, dropout, linear."""

    def __init__(self, backbone: nn.Module, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        backbone.reset_classifier(0)  # timm's contract: forward now returns pooled features
        self.backbone = backbone
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})
        self.num_classes, self.num_features = num_classes, backbone.num_features
        in_features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        return f"head.{len(self.head) - 1}" if name_only else self.head[-1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.backbone.reset_classifier(0, global_pool)
        self.num_classes = num_classes
        self.head[-1] = nn.Linear(self.head[-1].in_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x)
        return self.head[:-1](x) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


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
        return _create_pretrained(cfg.name, kwargs) if pretrained else timm.create_model(cfg.name, **kwargs)
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


# Everything a failed download raises: missing cache entries, offline mode, HTTP and connection errors.
_DOWNLOAD_ERRORS = (OSError, EntryNotFoundError)


def _create_pretrained(name: str, kwargs: dict) -> nn.Module:
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


def check_size(model: nn.Module, cfg: ModelConfig) -> None:
    total, _ = count_parameters(model)
    if cfg.max_params is not None and total > cfg.max_params:
        raise CompError(
            f"Model '{cfg.name}' has {total:,} parameters, over the limit model.max_params = {cfg.max_params:,}.",
            hint="Choose a smaller model (or smaller model.kwargs.widths / model.head.hidden), or raise the limit.",
        )


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
