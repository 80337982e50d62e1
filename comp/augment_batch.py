"""Augmentation of whole training batches on the training device: one affine resampling, colour, cutout.

With `aug.device` on (the default), a phase given as a preset name runs its transforms here, on each
training batch after the copy to the device, instead of per image in the loader; the loader then only fits
images to image_size. comp.augment.BATCH_PRESETS says what each preset runs, with the ranges of its
albumentations version. Pixels are float in [0, 255], before normalisation (comp.augment.ModelInput).

- Geometry is one grid of sample points + F.grid_sample per batch: each image's random resized crop, horizontal
  flip and Affine (x and y scales drawn apart, rotation, shear, translation in whole pixels: as
  albumentations draws them) compose into one 2 x 3 matrix. Bilinear; zeros beyond the image (Affine's
  constant-0 border). Where an Affine follows a crop, what it moves in from beyond the crop fades to zero
  as it does when the two resample one after the other.
- Colour: RandomBrightnessContrast (x * (1 + c) + 255 * b), or ColorJitter's brightness, contrast
  (about the grey mean) and saturation (a blend with grey), in that order; albumentations shuffles the
  order per image, and ColorJitter's hue is left out here (a colour-space round trip for a small shift).
- Cutout: CoarseDropout's 1..k boxes of zeros per image, from a mask built with aranges.
Each transform applies to each image with its own probability.

Against the per-image version: the crop takes from the image already fitted to image_size, where
albumentations crops the decoded image and then resizes (sharper when images are larger than image_size).

Randomness: every parameter comes from a torch.Generator on the batch's device, seeded from (train seed,
fold, epoch, batch index) alone (`batch_seed`), so a resumed epoch repeats its batches' augmentation
exactly with no state saved, and torch's global generator is never touched. Under DDP the parameters are
drawn for the whole global batch and each process takes the rows of its share, so ranks draw distinct
parameters and an image is augmented the same for any number of processes (on one kind of device).
kornia.augmentation would be the field's library, but it draws from torch's global generator, whose
state then depends on everything else that draws from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

Range = tuple[float, float]

# cv2.COLOR_RGB2GRAY's weights, as albumentations' ColorJitter uses them.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ResizedCrop:
    """RandomResizedCrop: a box of `scale` of the area and aspect ratio in `ratio`, resized to the whole image."""

    scale: Range
    ratio: Range = (3 / 4, 4 / 3)
    attempts: int = 10  # then the whole image, as albumentations falls back on a square image


@dataclass(frozen=True)
class Affine:
    """Affine: scale (x and y apart), rotate and shear in degrees, translate as a share of the size."""

    p: float
    scale: Range = (1.0, 1.0)
    translate: Range = (0.0, 0.0)
    rotate: Range = (0.0, 0.0)
    shear: Range = (0.0, 0.0)


@dataclass(frozen=True)
class BrightnessContrast:
    """RandomBrightnessContrast: x * (1 + c) + 255 * b, c in [-contrast, contrast], b in [-brightness, brightness]."""

    p: float
    brightness: float
    contrast: float


@dataclass(frozen=True)
class ColorJitter:
    """ColorJitter without hue: brightness, contrast and saturation factors in [1 - v, 1 + v]."""

    p: float
    brightness: float
    contrast: float
    saturation: float


@dataclass(frozen=True)
class Dropout:
    """CoarseDropout: holes[0]..holes[1] boxes of zeros, each side a share of the image's in height / width."""

    p: float
    holes: tuple[int, int]
    height: Range
    width: Range


@dataclass(frozen=True)
class BatchOps:
    """One phase's transforms on the device, applied in this order (None / 0: not at all)."""

    crop: ResizedCrop | None = None
    flip: float = 0.0  # probability of a horizontal flip
    affine: Affine | None = None
    colour: BrightnessContrast | ColorJitter | None = None
    dropout: Dropout | None = None

    def __bool__(self) -> bool:
        return any((self.crop, self.flip, self.affine, self.colour, self.dropout))


def batch_seed(seed: int, fold: int, epoch: int, batch: int) -> int:
    """The generator seed of one training batch (63 bits), from its place in the run alone."""
    return int(np.random.SeedSequence([seed, fold, epoch, batch]).generate_state(1, np.uint64)[0]) >> 1


class BatchAugment:
    """One phase's BatchOps on float N x C x H x W batches in [0, 255]; `position` of `count` processes (DDP)."""

    def __init__(self, ops: BatchOps, position: int = 0, count: int = 1):
        self.ops, self.position, self.count = ops, position, count

    def seeded(self, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """This augmentation drawn from `seed` (batch_seed), as a function of the batch."""
        return partial(self, seed=seed)

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """The batch augmented (a new tensor, same shape and dtype, in [0, 255]); `images` is left as it is."""
        ops, draw = self.ops, Draws(images, seed, self.position, self.count)
        if ops.crop or ops.flip or ops.affine:
            images = resample(images, ops, draw)
        else:
            images = images.clone()  # colour and cutout work in place
        if isinstance(ops.colour, BrightnessContrast):
            brightness_contrast(images, ops.colour, draw)
        elif isinstance(ops.colour, ColorJitter):
            color_jitter(images, ops.colour, draw)
        if ops.dropout:
            dropout(images, ops.dropout, draw)
        return images


class Draws:
    """Uniform draws for this process's rows of the global batch, in a fixed order from one seeded generator."""

    def __init__(self, images: torch.Tensor, seed: int, position: int, count: int):
        n = len(images)
        self.device, self.total, self.rows = images.device, n * count, slice(position * n, (position + 1) * n)
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def uniform(self, low: float = 0.0, high: float = 1.0, *shape: int) -> torch.Tensor:
        """One value per image (or `shape` of them), uniform in [low, high)."""
        u = torch.rand((self.total, *shape), generator=self.generator, device=self.device)[self.rows]
        return low + (high - low) * u

    def happens(self, p: float) -> torch.Tensor:
        """Per image: whether a transform of probability p applies."""
        return self.uniform() < p


# ----------------------------------------------------------------------------- geometry


def resample(images: torch.Tensor, ops: BatchOps, draw: Draws) -> torch.Tensor:
    """Crop, flip and affine as one bilinear resampling. Coordinates are grid_sample's: -1..1 across the image.

    Each output pixel reads the affine's source point q (inverse), flipped, in the crop."""
    n, _, height, width = images.shape
    outer = crop_matrix(ops.crop, draw, height, width) if ops.crop else identity(n, images.device)
    if ops.flip:
        outer[:, :, 0] *= torch.where(draw.happens(ops.flip), -1.0, 1.0)[:, None]
    inner = affine_inverse(ops.affine, draw, height, width) if ops.affine else identity(n, images.device)
    if not (ops.crop and ops.affine):
        return F.grid_sample(images, affine_grid(compose(outer, inner), height, width), align_corners=False)
    q = affine_grid(inner, height, width)  # N x H x W x 2, points of the crop's output
    out = F.grid_sample(images, moved(outer, q[..., 0], q[..., 1]), align_corners=False)
    return out.mul_(coverage(q, height, width)[:, None])


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.affine_grid(theta, (N, 1, height, width), align_corners=False): each output pixel's centre, moved."""
    x = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=theta.device)
    y = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=theta.device)
    return moved(theta, x[None, None, :], y[None, :, None])


def moved(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The points (x, y), broadcast to N x H x W, through the N x 2 x 3 maps: N x H x W x 2. Multiply-adds: on a
    CPU, a batched matrix product this thin (N x HW x 3 by N x 3 x 2) costs more than the resampling itself."""
    theta = theta[:, None, None]
    return theta[..., 0] * x[..., None] + theta[..., 1] * y[..., None] + theta[..., 2]


def identity(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).repeat(n, 1, 1)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """outer after inner, both N x 2 x 3 affine maps."""
    return torch.cat([outer[:, :, :2] @ inner[:, :, :2], outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]], dim=2)


def crop_matrix(crop: ResizedCrop, draw: Draws, height: int, width: int) -> torch.Tensor:
    """The map from crop output to image: albumentations' box (whole pixels: the first of `attempts` draws that
    fits, else the whole image), its centre plus half its extent times the output coordinate."""
    area = height * width
    target = draw.uniform(crop.scale[0] * area, crop.scale[1] * area, crop.attempts)
    ratio = torch.exp(draw.uniform(math.log(crop.ratio[0]), math.log(crop.ratio[1]), crop.attempts))
    w, h = torch.round(torch.sqrt(target * ratio)), torch.round(torch.sqrt(target / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # the first that fits (0 when none does: replaced below)
    any_fits = fits.any(1)
    w = torch.where(any_fits, w.gather(1, first)[:, 0], width)
    h = torch.where(any_fits, h.gather(1, first)[:, 0], height)
    x0 = torch.floor((width - w + 1) * draw.uniform())
    y0 = torch.floor((height - h + 1) * draw.uniform())
    matrix = torch.zeros(len(w), 2, 3, device=w.device)
    matrix[:, 0, 0], matrix[:, 1, 1] = w / width, h / height
    matrix[:, 0, 2], matrix[:, 1, 2] = (2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1
    return matrix


def affine_inverse(affine: Affine, draw: Draws, height: int, width: int) -> torch.Tensor:
    """The map from output to source of albumentations' Affine (about the image centre, translation truncated to
    whole pixels); the identity for images it skips."""
    applies = draw.happens(affine.p)

    def drawn(bounds: Range, neutral: float) -> torch.Tensor:  # `neutral` for the images the affine skips
        return torch.where(applies, draw.uniform(*bounds), neutral)

    scale_x, scale_y = drawn(affine.scale, 1.0), drawn(affine.scale, 1.0)
    tx = torch.trunc(drawn(affine.translate, 0.0) * width)
    ty = torch.trunc(drawn(affine.translate, 0.0) * height)
    angle = torch.deg2rad(drawn(affine.rotate, 0.0))
    shear_x, shear_y = (torch.tan(torch.deg2rad(-drawn(affine.shear, 0.0))) for _ in range(2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # In pixels, dst = A src + t with A = shear @ rotate @ scale, as albumentations composes them.
    a = cos * scale_x - shear_x * sin * scale_x
    b = sin * scale_y + shear_x * cos * scale_y
    c = (shear_y * cos - sin) * scale_x
    d = (shear_y * sin + cos) * scale_y
    # In -1..1 coordinates (x halved by width / 2, y by height / 2): off-diagonals scale by the aspect.
    b, c = b * height / width, c * width / height
    tx, ty = 2 * tx / width, 2 * ty / height
    inverse = torch.stack([d, -b, -c, a], 1).view(-1, 2, 2) / (a * d - b * c)[:, None, None]
    shift = -(inverse @ torch.stack([tx, ty], 1)[:, :, None])
    return torch.cat([inverse, shift], dim=2)


def coverage(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x H x W: how much of each bilinear read at `points` falls inside the image (1 inside, fading to 0 in
    the half pixel beyond its edge): what a resampling with zeros beyond the edge keeps of a white image."""

    def along(coordinate: torch.Tensor, size: int) -> torch.Tensor:
        pixel = ((coordinate + 1) * size - 1) / 2
        return torch.minimum(pixel + 1, size - pixel).clamp_(0, 1)

    return along(points[..., 0], width) * along(points[..., 1], height)


# ----------------------------------------------------------------------------- colour and cutout


def per_image(values: torch.Tensor) -> torch.Tensor:
    return values[:, None, None, None]


def grey(images: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luminance of RGB images (the image itself when it has one channel)."""
    if images.shape[1] == 1:
        return images
    red, green, blue = GREY_WEIGHTS  # Python numbers: a tensor of them would be a copy to the device every batch
    return images[:, 0:1] * red + images[:, 1:2] * green + images[:, 2:3] * blue


def brightness_contrast(images: torch.Tensor, op: BrightnessContrast, draw: Draws) -> None:
    applies = draw.happens(op.p)
    alpha = torch.where(applies, 1 + draw.uniform(-op.contrast, op.contrast), 1.0)
    beta = torch.where(applies, 255 * draw.uniform(-op.brightness, op.brightness), 0.0)
    images.mul_(per_image(alpha)).add_(per_image(beta)).clamp_(0, 255)


def color_jitter(images: torch.Tensor, op: ColorJitter, draw: Draws) -> None:
    applies = draw.happens(op.p)

    def factor(v: float) -> torch.Tensor:
        return per_image(torch.where(applies, draw.uniform(max(0.0, 1 - v), 1 + v), 1.0))

    brightness, contrast, saturation = factor(op.brightness), factor(op.contrast), factor(op.saturation)
    images.mul_(brightness).clamp_(0, 255)
    mean = grey(images).mean((2, 3), keepdim=True)
    images.mul_(contrast).add_(mean * (1 - contrast)).clamp_(0, 255)
    grey_part = grey(images) * (1 - saturation)
    images.mul_(saturation).add_(grey_part).clamp_(0, 255)


def dropout(images: torch.Tensor, op: Dropout, draw: Draws) -> None:
    """Zero each image's holes: the union of up to holes[1] boxes, as a mask from aranges (no loop over images)."""
    _, _, height, width = images.shape
    most = op.holes[1]
    applies = draw.happens(op.p)
    count = op.holes[0] + torch.floor(draw.uniform() * (most - op.holes[0] + 1))
    used = torch.arange(most, device=images.device) < count[:, None]  # N x most
    hole_h = torch.trunc(height * draw.uniform(*op.height, most))
    hole_w = torch.trunc(width * draw.uniform(*op.width, most))
    top = torch.floor(draw.uniform(0, 1, most) * (height - hole_h + 1))
    left = torch.floor(draw.uniform(0, 1, most) * (width - hole_w + 1))
    ys = torch.arange(height, device=images.device)
    xs = torch.arange(width, device=images.device)
    rows = (ys >= top[..., None]) & (ys < (top + hole_h)[..., None])  # N x most x H
    cols = (xs >= left[..., None]) & (xs < (left + hole_w)[..., None])  # N x most x W
    boxes = rows[..., :, None] & cols[..., None, :] & used[..., None, None]
    images.masked_fill_((boxes.any(1) & applies[:, None, None])[:, None], 0)
