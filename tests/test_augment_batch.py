"""Batch augmentation on the device: reproducible per batch, the same for any number of DDP processes, and
statistically the albumentations preset it stands for (where images land, how bright, how much is cut out)."""

from dataclasses import replace

import albumentations as A
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from comp.augment import (
    BATCH_PRESETS,
    PRESETS,
    Augment,
    ModelInput,
    create_batch_augments,
    create_train_transform,
    create_transforms,
)
from comp.augment_batch import BatchAugment, BatchOps, affine_grid, batch_seed
from comp.config import AugConfig

SIZE = 32
DRAWS = 2000  # images per distribution; KS tests at p > 0.001 (fixed seeds: the outcome is fixed too)
ACTIVE = [name for name, ops in BATCH_PRESETS.items() if ops]


def noise(n=8, seed=0):
    return torch.rand((n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed)) * 255


def off_centre_bar() -> np.ndarray:
    """A bright bar left of and above the centre: where it lands, how large and at what angle shows translation,
    scale, crop, flip and rotation."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[8:14, 4:18] = 255
    return image


def two_levels() -> np.ndarray:
    """Grey, half dark and half light: brightness moves its mean, contrast its spread (hue, saturation: no effect)."""
    image = np.full((SIZE, SIZE, 3), 64, np.uint8)
    image[:, SIZE // 2 :] = 160
    return image


def per_image(steps: list[dict], image: np.ndarray) -> np.ndarray:
    """DRAWS albumentations outputs of the preset items `steps` on `image`, as comp augments per image."""
    augment = Augment(create_transforms(steps, SIZE, "test"), SIZE)
    return np.stack([augment(image, seed) for seed in range(DRAWS)]).astype(np.float32)


def on_device(ops: BatchOps, image: np.ndarray) -> np.ndarray:
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float().repeat(DRAWS, 1, 1, 1)
    return BatchAugment(ops)(batch, batch_seed(0, 0, 1, 0)).permute(0, 2, 3, 1).numpy()


def items(preset: str, *names: str) -> list[dict]:
    return [item for item in PRESETS[preset] if item["name"] in names]


def assert_same_distribution(per_image_values: np.ndarray, device_values: np.ndarray, what: str) -> None:
    """Two samples from one distribution (values that are not numbers, such as the centre of nothing, left out)."""
    per_image_values, device_values = (
        per_image_values[~np.isnan(per_image_values)],
        device_values[~np.isnan(device_values)],
    )
    result = ks_2samp(per_image_values, device_values)
    assert result.pvalue > 1e-3, (
        f"{what}: per image {per_image_values.mean():.3f} ± {per_image_values.std():.3f}, "
        f"device {device_values.mean():.3f} ± {device_values.std():.3f}, KS p={result.pvalue:.2g}"
    )


# ----------------------------------------------------------------------------- reproducible, distinct streams


@pytest.mark.parametrize("preset", ACTIVE)
def test_the_same_batch_key_gives_the_same_images_another_key_other_images(preset):
    augment, images = BatchAugment(BATCH_PRESETS[preset]), noise()
    before = images.clone()
    out = augment(images, batch_seed(42, 0, 1, 3))
    assert torch.equal(images, before)  # the input is left as it was
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, BatchAugment(BATCH_PRESETS[preset])(images, batch_seed(42, 0, 1, 3)))
    for other in [(42, 0, 1, 4), (42, 0, 2, 3), (42, 1, 1, 3), (43, 0, 1, 3)]:  # batch, epoch, fold, seed
        assert not torch.equal(out, augment(images, batch_seed(*other)))


@pytest.mark.parametrize("preset", ACTIVE)
def test_ddp_processes_take_their_rows_of_the_global_batch(preset):
    """Each process augments its share as the rows of the whole batch: the same images for any process count,
    and distinct parameters on every rank."""
    ops, images, seed = BATCH_PRESETS[preset], noise(8), batch_seed(42, 0, 1, 0)
    whole = BatchAugment(ops)(images, seed)
    shares = [BatchAugment(ops, rank, 2)(images[rank * 4 : (rank + 1) * 4], seed) for rank in (0, 1)]
    assert torch.allclose(torch.cat(shares), whole, atol=1e-3)
    assert not torch.equal(BatchAugment(ops, 1, 2)(images[:4], seed), shares[0])


def test_batch_seeds_are_63_bit_and_do_not_repeat_across_a_run():
    seeds = {batch_seed(42, fold, epoch, batch) for fold in range(5) for epoch in range(1, 11) for batch in range(100)}
    assert len(seeds) == 5000 and all(0 <= s < 2**63 for s in seeds)


def test_the_global_generator_is_untouched():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    BatchAugment(BATCH_PRESETS["strong"])(noise(), 1)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- what runs where


def test_batch_presets_have_the_ranges_of_the_albumentations_presets():
    for name, ops in BATCH_PRESETS.items():
        transforms = {type(t).__name__: t for t in create_transforms(name, SIZE, name)}
        device_names = {"Resize", "RandomResizedCrop", "HorizontalFlip", "Affine"}
        device_names |= {"RandomBrightnessContrast", "ColorJitter", "CoarseDropout"}
        assert set(transforms) <= device_names, f"{name}: a transform with no device version"
        assert ("RandomResizedCrop" in transforms) == (ops.crop is not None)
        if ops.crop:
            crop = transforms["RandomResizedCrop"]
            assert [*crop.scale, *crop.ratio] == pytest.approx([*ops.crop.scale, *ops.crop.ratio])
        assert ops.flip == (transforms["HorizontalFlip"].p if "HorizontalFlip" in transforms else 0)
        affine = transforms.get("Affine")
        assert (affine is None) == (ops.affine is None)
        if affine:
            assert affine.p == ops.affine.p and affine.rotate == ops.affine.rotate
            assert affine.scale == {"x": ops.affine.scale, "y": ops.affine.scale} and not affine.keep_ratio
            assert affine.translate_percent == {"x": ops.affine.translate, "y": ops.affine.translate}
            assert affine.shear == {"x": ops.affine.shear, "y": ops.affine.shear}
        colour = transforms.get("RandomBrightnessContrast") or transforms.get("ColorJitter")
        assert (colour is None) == (ops.colour is None)
        if isinstance(colour, A.RandomBrightnessContrast):
            assert colour.p == ops.colour.p and colour.brightness_by_max
            assert colour.brightness_limit == (-ops.colour.brightness, ops.colour.brightness)
            assert colour.contrast_limit == (-ops.colour.contrast, ops.colour.contrast)
        if isinstance(colour, A.ColorJitter):
            assert colour.p == ops.colour.p
            for key in ("brightness", "contrast", "saturation"):
                v = getattr(ops.colour, key)
                assert list(getattr(colour, key)) == pytest.approx([1 - v, 1 + v])
        dropout = transforms.get("CoarseDropout")
        assert (dropout is None) == (ops.dropout is None)
        if dropout:
            assert dropout.p == ops.dropout.p and dropout.num_holes_range == ops.dropout.holes and dropout.fill == 0
            assert (dropout.hole_height_range, dropout.hole_width_range) == (ops.dropout.height, ops.dropout.width)


def test_a_preset_runs_on_the_device_and_a_list_per_image():
    image = np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8)
    on = create_train_transform("strong", SIZE, on_device=True)
    assert on.compose is None and on(image, 0).shape == (SIZE, SIZE, 3)  # only the fit to image_size
    listed = [{"name": "HorizontalFlip", "p": 0.5}]
    assert create_train_transform(listed, SIZE, on_device=True).compose is not None
    assert len(create_train_transform("strong", SIZE).compose.transforms) == len(PRESETS["strong"])

    both = create_batch_augments(AugConfig(phase1="light", phase2="strong"))
    assert {p: a.ops for p, a in both.items()} == {1: BATCH_PRESETS["light"], 2: BATCH_PRESETS["strong"]}
    assert set(create_batch_augments(AugConfig(phase1=listed, phase2="standard"))) == {2}
    assert create_batch_augments(AugConfig(phase1="none", phase2="none")) == {}
    assert create_batch_augments(AugConfig(phase1="light", phase2="strong", device=False)) == {}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_model_input_augments_pixels_in_0_255_before_normalising(memory_format):
    batch = torch.full((2, 8, 8, 3), 200, dtype=torch.uint8)
    seen = []

    def halve(images):
        seen.append(images)
        return images / 2

    out = ModelInput((0.5,) * 3, (0.25,) * 3, torch.device("cpu"), memory_format)(batch, halve)
    assert seen[0].dtype == torch.float32 and seen[0].shape == (2, 3, 8, 8) and float(seen[0].max()) == 200
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.allclose(out, torch.full_like(out, (100 / 255 - 0.5) / 0.25))
    assert torch.equal(batch, torch.full((2, 8, 8, 3), 200, dtype=torch.uint8))


# ----------------------------------------------------------------------------- the same transforms as per image


def placement(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: the bright bar's centre x and y, its area in pixels and the angle of its long axis (no centre or
    angle where it was cropped away)."""
    mass = images[..., 0] / 255
    area = mass.sum((1, 2))
    seen = np.where(area > 0, area, np.nan)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    x, y = (mass * xs).sum((1, 2)) / seen, (mass * ys).sum((1, 2)) / seen
    dx, dy = xs - x[:, None, None], ys - y[:, None, None]
    xx, yy, xy = ((mass * dx * dx).sum((1, 2)), (mass * dy * dy).sum((1, 2)), (mass * dx * dy).sum((1, 2)))
    angle = np.round(0.5 * np.arctan2(2 * xy, xx - yy), 3)  # to 1 mrad: a bar left level is level in both
    return {"centre x": x, "centre y": y, "area": area, "angle": angle}


def within_binomial_bound(happened: np.ndarray, p: float) -> bool:
    """The share of events is p within 4 standard errors."""
    return abs(happened.mean() - p) < 4 * np.sqrt(p * (1 - p) / len(happened))


def test_the_device_flips_half_the_images():
    out = on_device(BatchOps(flip=0.5), off_centre_bar())
    flipped = out[:, 10, SIZE - 10, 0] > 128
    assert np.array_equal(flipped, out[:, 10, 9, 0] < 128)  # mirrored exactly
    assert within_binomial_bound(flipped, 0.5)


@pytest.mark.parametrize("height, width", [(32, 32), (28, 40), (1, 5)])
def test_the_sample_points_are_torchs_affine_grid(height, width):
    """comp builds the grid with multiply-adds (faster on a CPU): the same points as F.affine_grid's."""
    maps = torch.randn(16, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.affine_grid(maps, [16, 1, height, width], align_corners=False)
    torch.testing.assert_close(affine_grid(maps, height, width), expected)


@pytest.mark.parametrize("always", [False, True], ids=["preset p", "affine always"])
@pytest.mark.parametrize("preset", ACTIVE)
def test_geometry_lands_where_the_per_image_preset_puts_it(preset, always):
    """Crop, flip and affine: where the bar's centre lands, how large it becomes and how it turns; with the preset's
    probability of the affine, and with the affine always applied (to see its ranges alone)."""
    geometric = items(preset, "RandomResizedCrop", "HorizontalFlip", "Affine")
    ops = BATCH_PRESETS[preset]
    affine = replace(ops.affine, p=1.0) if always else ops.affine
    geometric = [{**item, "p": 1.0} if always and item["name"] == "Affine" else item for item in geometric]
    device = placement(on_device(BatchOps(crop=ops.crop, flip=ops.flip, affine=affine), off_centre_bar()))
    reference = placement(per_image(geometric, off_centre_bar()))
    for what in reference:
        assert_same_distribution(reference[what], device[what], f"{preset} {what}")


@pytest.mark.parametrize("preset", ACTIVE)
def test_affine_colour_and_cutout_apply_with_their_own_probability(preset):
    ops, image = BATCH_PRESETS[preset], noise(1).permute(0, 2, 3, 1)[0].numpy().astype(np.uint8)
    for alone in (BatchOps(affine=ops.affine), BatchOps(colour=ops.colour), BatchOps(dropout=ops.dropout)):
        op = alone.affine or alone.colour or alone.dropout
        # A shift alone (flip_shift) can round to 0 pixels: its draws are checked against albumentations' instead.
        shift_only = (
            op is not None and op is ops.affine and op.scale == (1.0, 1.0) and op.rotate == op.shear == (0.0, 0.0)
        )
        if op and not shift_only:
            changed = np.abs(on_device(alone, image) - image).max((1, 2, 3)) > 0.5
            assert within_binomial_bound(changed, op.p), f"{preset}: {op}"


@pytest.mark.parametrize("preset", ACTIVE)
def test_brightness_and_contrast_match_the_per_image_preset(preset):
    colour = items(preset, "RandomBrightnessContrast", "ColorJitter")
    device = on_device(BatchOps(colour=BATCH_PRESETS[preset].colour), two_levels())
    reference = per_image(colour, two_levels())
    assert_same_distribution(reference.mean((1, 2, 3)), device.mean((1, 2, 3)), f"{preset} brightness (mean)")
    assert_same_distribution(reference.std((1, 2, 3)), device.std((1, 2, 3)), f"{preset} contrast (spread)")


def test_cutout_removes_as_much_as_coarse_dropout():
    white = np.full((SIZE, SIZE, 3), 255, np.uint8)
    device = on_device(BatchOps(dropout=BATCH_PRESETS["strong"].dropout), white)
    reference = per_image(items("strong", "CoarseDropout"), white)
    assert_same_distribution((reference == 0).mean((1, 2, 3)), (device == 0).mean((1, 2, 3)), "share cut out")
