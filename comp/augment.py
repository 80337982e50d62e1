"""Augmentation: named presets or albumentations transforms written in YAML, two phases.

`aug.phase1` / `aug.phase2` each hold a preset name (`none`, `light`, `standard`, `strong`) or
a list of albumentations transforms. A list item is written either way:

    - {name: HorizontalFlip, p: 0.5}       # name plus keyword arguments
    - Affine: {rotate: [-10, 10], p: 0.5}  # the name as the key, its arguments as the value
    - ToGray                               # the name alone: albumentations' defaults

Size arguments left out default to `data.image_size` (`size` of RandomResizedCrop, `height` and
`width` of Resize, RandomCrop, CenterCrop). Compositions nest: `{name: OneOf, transforms: [...]}`.
After the phase's transforms every image is resized to exactly image_size x image_size (unless
it already is) and stays uint8; `ModelInput` normalises whole batches with the model's mean/std
on its device, so a list holds neither Normalize nor ToTensorV2.

With `aug.device` on (the default), a phase that is a preset name runs on whole training batches on
the training device instead (BATCH_PRESETS, comp.augment_batch), and per image only the fit to
image_size remains; a list runs per image in the loader either way.
"""

from __future__ import annotations

import difflib
import inspect
import random
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from pydantic import ValidationError

from comp.augment_batch import (
    Affine,
    BatchAugment,
    BatchOps,
    BrightnessContrast,
    ColorJitter,
    Dropout,
    ResizedCrop,
)
from comp.config import AugConfig, AugSteps
from comp.errors import CompError
from comp.models.factory import normalization

FORMAT_HINT = "Write each transform as {name: HorizontalFlip, p: 0.5} (or HorizontalFlip: {p: 0.5})."

# Presets in the YAML list form. `light` has no flips: safe for digits, letters and other
# orientation-bearing images (the default competition is handwritten digits). `standard` and
# `strong` flip horizontally, as suits photographs of objects.
PRESETS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "light": [
        {"name": "Resize"},
        {
            "name": "Affine",
            "scale": [0.9, 1.1],
            "translate_percent": [-0.08, 0.08],
            "rotate": [-10, 10],
            "p": 0.5,
        },
        {"name": "RandomBrightnessContrast", "brightness_limit": 0.1, "contrast_limit": 0.1, "p": 0.3},
    ],
    # airbench's CIFAR-10 recipe: flips and shifts of up to 2 pixels at 28-32 px (zeros come in: a padded crop).
    "flip_shift": [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "Affine", "translate_percent": [-0.072, 0.072], "p": 1.0},
    ],
    "standard": [
        {"name": "RandomResizedCrop", "scale": [0.6, 1.0]},
        {"name": "HorizontalFlip", "p": 0.5},
        {
            "name": "Affine",
            "scale": [0.9, 1.1],
            "translate_percent": [-0.1, 0.1],
            "rotate": [-15, 15],
            "p": 0.5,
        },
        {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02, "p": 0.5},
    ],
    "strong": [
        {"name": "RandomResizedCrop", "scale": [0.35, 1.0]},
        {"name": "HorizontalFlip", "p": 0.5},
        {
            "name": "Affine",
            "scale": [0.8, 1.2],
            "translate_percent": [-0.15, 0.15],
            "rotate": [-25, 25],
            "shear": [-10, 10],
            "p": 0.7,
        },
        {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "p": 0.8},
        {
            "name": "CoarseDropout",
            "num_holes_range": [1, 3],
            "hole_height_range": [0.1, 0.3],
            "hole_width_range": [0.1, 0.3],
            "p": 0.5,
        },
    ],
}

# The presets as they run on the training device with aug.device on (comp.augment_batch): the same transforms
# with the same ranges, on whole batches; ColorJitter's hue is left out there.
BATCH_PRESETS: dict[str, BatchOps] = {
    "none": BatchOps(),
    "light": BatchOps(
        affine=Affine(p=0.5, scale=(0.9, 1.1), translate=(-0.08, 0.08), rotate=(-10, 10)),
        colour=BrightnessContrast(p=0.3, brightness=0.1, contrast=0.1),
    ),
    "flip_shift": BatchOps(flip=0.5, affine=Affine(p=1.0, translate=(-0.072, 0.072))),
    "standard": BatchOps(
        crop=ResizedCrop(scale=(0.6, 1.0)),
        flip=0.5,
        affine=Affine(p=0.5, scale=(0.9, 1.1), translate=(-0.1, 0.1), rotate=(-15, 15)),
        colour=ColorJitter(p=0.5, brightness=0.2, contrast=0.2, saturation=0.2),
    ),
    "strong": BatchOps(
        crop=ResizedCrop(scale=(0.35, 1.0)),
        flip=0.5,
        affine=Affine(p=0.7, scale=(0.8, 1.2), translate=(-0.15, 0.15), rotate=(-25, 25), shear=(-10, 10)),
        colour=ColorJitter(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4),
        dropout=Dropout(p=0.5, holes=(1, 3), height=(0.1, 0.3), width=(0.1, 0.3)),
    ),
}

# Added by comp after every phase: a list that repeats them would normalise twice.
_ADDED_BY_COMP = {"Normalize", "ToTensorV2"}


def _transform_classes() -> dict[str, type]:
    interfaces = {A.BasicTransform, A.DualTransform, A.ImageOnlyTransform, A.BaseCompose}
    return {
        name: obj
        for name, obj in vars(A).items()
        if inspect.isclass(obj)
        and issubclass(obj, (A.BasicTransform, A.BaseCompose))
        and obj not in interfaces
        and not name.startswith("_")
    }


_TRANSFORMS = _transform_classes()


# ----------------------------------------------------------------------------- public API


def create_train_transform(
    steps: AugSteps, image_size: int, where: str = "aug.phase1", on_device: bool = False
) -> Augment:
    """A phase's per-image transforms (a preset name or a list, module docstring) as an `Augment`; `where` names
    the config key in error messages. on_device (aug.device): a preset's transforms are left to the device."""
    if on_device and batch_ops(steps):
        steps = []  # the preset runs on the device; fit_size remains
    return Augment(create_transforms(steps, image_size, where), image_size)


def batch_ops(steps: AugSteps) -> BatchOps | None:
    """What of a phase can run on whole batches on the device: a preset name's BATCH_PRESETS (None for a list)."""
    return BATCH_PRESETS.get(steps) if isinstance(steps, str) else None


def create_batch_augments(aug: AugConfig, position: int = 0, count: int = 1) -> dict[int, BatchAugment]:
    """The phases (1, 2) that augment training batches on the device, for process `position` of `count` (DDP):
    those given as a preset other than none, when aug.device is on."""
    if not aug.device:
        return {}
    ops = {phase: batch_ops(getattr(aug, f"phase{phase}")) for phase in (1, 2)}
    return {phase: BatchAugment(o, position, count) for phase, o in ops.items() if o}


class Augment:
    """One phase's transforms applied to an image from a seed, then fitted to image_size (uint8 in, uint8 out).

    The same seed gives the same augmentation on any DataLoader worker and under any number of DDP
    processes: every transform draws from one numpy generator (the stream of np.random.Philox(key=seed))
    and one random.Random(seed), both reseeded in place per image. That costs about 12 µs an image,
    against 45 µs for new generators handed to every transform; and one stream for all transforms,
    where albumentations' Compose(seed=...) would give every transform an identical one.
    """

    def __init__(self, transforms: list, image_size: int):
        # Only `image` is passed, so the check that masks match its shape has nothing to compare (10 µs an image).
        self.compose = A.Compose(transforms, is_check_shapes=False) if transforms else None
        self.image_size = image_size
        self._numpy_bits, self._python = np.random.Philox(), random.Random()
        if self.compose is not None:
            self.compose.set_random_state(np.random.Generator(self._numpy_bits), self._python)

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        if self.compose is not None:
            self._numpy_bits.state = philox_state(seed)
            self._python.seed(seed)
            image = self.compose(image=image)["image"]
        return fit_size(image, self.image_size)


def philox_state(seed: int) -> dict:
    """The state np.random.Philox(key=seed) starts in, set without building a new generator."""
    start = {"counter": np.zeros(4, np.uint64), "key": np.array([seed, 0], np.uint64)}
    return {
        "bit_generator": "Philox",
        "state": start,
        "buffer": np.zeros(4, np.uint64),
        "buffer_pos": 4,
        "has_uint32": 0,
        "uinteger": 0,
    }


def fit_size(image: np.ndarray, size: int) -> np.ndarray:
    """The image at size x size: resized bilinearly (as albumentations' Resize does), unless it already is."""
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image


class ModelInput:
    """Loader batches (uint8, N x H x W x C) as a model's input: float N x C x H x W on its device, in its memory
    format, normalised with its mean and std.

    One op per batch replaces albumentations' Normalize and ToTensorV2 on every image (80 µs of the 250 µs
    a 28 px training image took on a CPU core), and batches travel to a GPU as uint8: a quarter of the bytes.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1 / (255 * std), -mean / std
        self.device, self.memory_format = device, memory_format

    @classmethod
    def of(
        cls, model: torch.nn.Module, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
    ) -> ModelInput:
        """The input of this model: normalised with the mean and std its weights were trained with."""
        return cls(*normalization(model), device, memory_format)

    def __call__(
        self, images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """`augment` (training batches: a seeded BatchAugment) runs on float pixels in [0, 255], before normalising."""
        images = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if augment is None:
            images = images.to(torch.float32, memory_format=self.memory_format)
        else:
            images = augment(images.float()).contiguous(memory_format=self.memory_format)
        return images.mul_(self.scale).add_(self.shift)


def validate_aug(aug: AugConfig, image_size: int) -> None:
    """Build both phases once, so a bad transform is a config error before any training starts."""
    create_transforms(aug.phase1, image_size, "aug.phase1")
    create_transforms(aug.phase2, image_size, "aug.phase2")


def phase_at(aug: AugConfig, epoch: int) -> int:
    """1 or 2: phase 2 runs from epoch `aug.phase2_epoch` on (never when it is null)."""
    return 2 if aug.phase2_epoch is not None and epoch >= aug.phase2_epoch else 1


# ----------------------------------------------------------------------------- building one phase


def create_transforms(steps: AugSteps, image_size: int, where: str) -> list[A.BasicTransform | A.BaseCompose]:
    """The transforms of a preset name or a YAML list, each checked; CompError names the bad item."""
    if isinstance(steps, str):
        if steps not in PRESETS:
            close = difflib.get_close_matches(steps, PRESETS, n=1)
            raise CompError(
                f"{where} = '{steps}' is not a preset.{f' Did you mean {close[0]}?' if close else ''}",
                hint=f"Presets: {', '.join(PRESETS)}; or a list of albumentations transforms. {FORMAT_HINT}",
            )
        steps = PRESETS[steps]
    if not isinstance(steps, list):
        raise CompError(f"{where} must be a preset name or a list of transforms, not {steps!r}.", hint=FORMAT_HINT)
    return [_create_one(item, image_size, f"{where}[{i}]") for i, item in enumerate(steps)]


def _create_one(item: Any, image_size: int, where: str) -> A.BasicTransform | A.BaseCompose:
    name, args = _parse_item(item, where)
    cls = _transform_class(name, where)
    args = _with_sizes(cls, dict(args), image_size)
    _check_argument_names(cls, args, where)
    if issubclass(cls, A.BaseCompose):
        args["transforms"] = create_transforms(args.get("transforms"), image_size, f"{where}.transforms")
    try:
        # strict: albumentations otherwise only warns about a bad argument and falls back to defaults
        return cls(**args, strict=True) if issubclass(cls, A.BasicTransform) else cls(**args)
    except (ValueError, TypeError) as exc:
        raise CompError(f"{where} ({name}): bad argument: {_describe(exc)}.", hint=_signature_hint(cls)) from None


def _describe(exc: Exception) -> str:
    """One line per bad argument, from albumentations' pydantic validation when that is the cause."""
    cause = exc.__cause__
    if not isinstance(cause, ValidationError):
        return str(exc)
    problems: dict[str, str] = {}
    for error in cause.errors():  # a union type reports each alternative: keep the first per argument
        problems.setdefault(str(error["loc"][0]) if error["loc"] else "arguments", error["msg"])
    return "; ".join(f"{key}: {msg}" for key, msg in problems.items())


def _parse_item(item: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and "name" in item:
        return str(item["name"]), {k: v for k, v in item.items() if k != "name"}
    if isinstance(item, dict) and len(item) == 1:
        ((name, args),) = item.items()
        if args is None or isinstance(args, dict):
            return str(name), args or {}
    raise CompError(f"{where} = {item!r} is not a transform.", hint=FORMAT_HINT)


def _transform_class(name: str, where: str) -> type:
    if name in _ADDED_BY_COMP:
        raise CompError(
            f"{where}: leave {name} out of the list; comp adds it after every phase, with the model's mean and std."
        )
    if name in _TRANSFORMS:
        return _TRANSFORMS[name]
    by_lower = {n.lower(): n for n in _TRANSFORMS}
    close = (
        [by_lower[name.lower()]]
        if name.lower() in by_lower
        else [by_lower[c] for c in difflib.get_close_matches(name.lower(), by_lower, n=1, cutoff=0.6)]
    )
    raise CompError(
        f"{where}: unknown albumentations transform '{name}'.{f' Did you mean {close[0]}?' if close else ''}",
        hint=f"Names are albumentations {A.__version__} class names, e.g. HorizontalFlip, Affine, "
        "RandomResizedCrop, ColorJitter, CoarseDropout.",
    )


def _with_sizes(cls: type, args: dict[str, Any], image_size: int) -> dict[str, Any]:
    required = {n for n, p in inspect.signature(cls.__init__).parameters.items() if p.default is p.empty}
    if "size" in required and "size" not in args:
        args["size"] = [image_size, image_size]
    for key in ("height", "width"):
        if key in required and key not in args:
            args[key] = image_size
    return args


def _check_argument_names(cls: type, args: dict[str, Any], where: str) -> None:
    params = inspect.signature(cls.__init__).parameters
    valid = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key in args:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            suggestion = f" Did you mean {close[0]}?" if close else ""
            raise CompError(
                f"{where} ({cls.__name__}): unknown argument '{key}'.{suggestion}",
                hint=_signature_hint(cls),
            )


def _signature_hint(cls: type) -> str:
    params = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    return f"{cls.__name__} takes: {', '.join(params)} (see albumentations {A.__version__}'s documentation)."
