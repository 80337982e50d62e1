"""comp's own architectures, registered in timm, and the optional MLP head over any timm backbone.

Importing this module registers `resnet9`, `resnet9_tiny` and `resnet18_cifar` in timm's registry, so
`timm.create_model("resnet9", num_classes=10)` builds them like any timm model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

# ----------------------------------------------------------------------------- CIFAR-style ResNets


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
