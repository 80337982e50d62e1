"""Augmentation: presets and YAML transform lists build, give exact-size images, normalise per batch, and fail
clearly."""

import random

import albumentations as A
import numpy as np
import pytest
import torch
import yaml

from comp.augment import (
    PRESETS,
    ModelInput,
    create_train_transform,
    create_transforms,
    fit_size,
    phase_at,
    validate_aug,
)
from comp.config import AugConfig, load_config
from comp.errors import CompError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
YAML_LIST = """
- {name: RandomCrop, pad_if_needed: true}   # size arguments default to data.image_size
- HorizontalFlip: {p: 0.5}
- ToGray
- {name: OneOf, p: 1.0, transforms: [{name: Blur, blur_limit: 3}, {name: Affine, rotate: [-10, 10]}]}
- {name: CoarseDropout, num_holes_range: [1, 2], p: 1.0}
"""


def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(20, 50, 3), (300, 200, 3), (32, 32, 3)]]


@pytest.mark.parametrize("steps", [*PRESETS, yaml.safe_load(YAML_LIST)])
def test_presets_and_yaml_lists_give_exact_size_uint8_images(steps):
    augment = create_train_transform(steps, 32)
    for image in images():
        for seed in range(3):
            out = augment(image, seed)
            assert out.dtype == np.uint8 and out.shape == (32, 32, 3)


def test_fit_size_resizes_only_what_needs_it():
    image = np.full((40, 24, 3), (255, 0, 128), dtype=np.uint8)
    assert np.array_equal(fit_size(image, 16), np.full((16, 16, 3), (255, 0, 128), dtype=np.uint8))
    sized = images()[2]
    assert fit_size(sized, 32) is sized


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_model_input_normalises_a_uint8_batch_with_the_given_statistics(memory_format):
    batch = torch.from_numpy(np.stack([np.full((16, 16, 3), (255, 0, 128), np.uint8), np.zeros((16, 16, 3), np.uint8)]))
    out = ModelInput(MEAN, STD, torch.device("cpu"), memory_format)(batch)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 16, 16)
    assert out.is_contiguous(memory_format=memory_format)
    for image, pixel in zip(out, ([255, 0, 128], [0, 0, 0]), strict=True):
        expected = (torch.tensor(pixel) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
        assert torch.allclose(image, expected[:, None, None].expand(3, 16, 16), atol=1e-5)


def test_light_preset_never_flips():
    """The default competition is digits: a mirrored 2 or 5 is not the same class."""
    transforms = create_transforms("light", 32, "aug.phase1")
    assert not any(isinstance(t, (A.HorizontalFlip, A.VerticalFlip, A.D4, A.Transpose)) for t in transforms)
    assert AugConfig().phase1 == "light"


def test_both_item_forms_come_through_the_config_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("aug:\n  phase1:\n    - {name: HorizontalFlip, p: 0.5}\n    - Affine: {rotate: [-5, 5]}\n")
    config = load_config(path, ["aug.phase2=[{name: RandomResizedCrop, scale: [0.5, 1.0]}]"])
    validate_aug(config.aug, 32)
    first, second = create_transforms(config.aug.phase1, 32, "aug.phase1")
    assert isinstance(first, A.HorizontalFlip) and first.p == 0.5
    assert isinstance(second, A.Affine)
    (crop,) = create_transforms(config.aug.phase2, 32, "aug.phase2")
    assert tuple(crop.size) == (32, 32)


@pytest.mark.parametrize(
    ("phase1", "message"),
    [
        ("lite", r"aug.phase1 = 'lite' is not a preset. Did you mean light\?"),
        (
            ["HorizontalFlip", {"name": "Horizontalflip"}],
            r"aug.phase1\[1\]: unknown .* 'Horizontalflip'. Did you mean HorizontalFlip\?",
        ),
        (
            [{"RandomBrightness": {"p": 0.2}}],
            r"aug.phase1\[0\]: unknown .* Did you mean RandomBrightnessContrast\?",
        ),
        (
            [{"name": "Affine", "rotation": 10}],
            r"aug.phase1\[0\] \(Affine\): unknown argument 'rotation'. Did you mean rotate\?",
        ),
        ([{"name": "Affine", "rotate": "a lot"}], r"aug.phase1\[0\] \(Affine\): bad argument: rotate"),
        (
            [{"name": "HorizontalFlip", "p": 2}],
            r"aug.phase1\[0\] \(HorizontalFlip\): bad argument: p: .*less than or equal to 1",
        ),
        (
            [{"name": "OneOf", "transforms": [{"name": "Blurr"}]}],
            r"aug.phase1\[0\].transforms\[0\]: .* Did you mean Blur\?",
        ),
        ([{"name": "Normalize"}], r"aug.phase1\[0\]: leave Normalize out"),
        ([{"p": 0.5, "q": 1}], r"aug.phase1\[0\] = .* is not a transform"),
    ],
)
def test_bad_transforms_are_config_errors_naming_the_item(phase1, message):
    with pytest.raises(CompError, match=message):
        validate_aug(AugConfig(phase1=phase1), 32)


def test_phase2_is_checked_too():
    with pytest.raises(CompError, match=r"aug.phase2\[0\]"):
        validate_aug(AugConfig(phase2=[{"name": "Nope"}]), 32)


def test_phase_switches_at_phase2_epoch():
    assert [phase_at(AugConfig(phase2_epoch=3), epoch) for epoch in range(1, 6)] == [1, 1, 2, 2, 2]
    assert {phase_at(AugConfig(), epoch) for epoch in range(1, 100)} == {1}


def _flips(augment, seeds):
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[0, 0] = 255
    outcomes = []
    for seed in seeds:
        out = augment(image, seed)[..., 0]
        outcomes.append((bool(out[0, -1] > 0 or out[-1, -1] > 0), bool(out[-1, 0] > 0 or out[-1, -1] > 0)))
    return outcomes


def test_a_seed_repeats_its_augmentation_and_the_transforms_draw_independently():
    steps = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}]
    seeds = list(range(300))
    first = _flips(create_train_transform(steps, 4), seeds)
    assert first == _flips(create_train_transform(steps, 4), seeds[::-1])[::-1]  # whatever came before
    assert first != _flips(create_train_transform(steps, 4), [s + 1000 for s in seeds])
    assert set(first) == {(False, False), (True, False), (False, True), (True, True)}


def test_an_augment_draws_the_streams_its_docstring_names():
    """The in-place reseeding gives exactly the generators a seed would build anew."""
    augment = create_train_transform([{"name": "HorizontalFlip", "p": 0.5}], 4)
    augment(np.zeros((4, 4, 3), np.uint8), 12345)
    fresh_numpy, fresh_python = np.random.Generator(np.random.Philox(key=12345)), random.Random(12345)
    fresh_python.random()  # the draws this image used: Compose's p, HorizontalFlip's p
    fresh_python.random()
    assert augment.compose.random_generator.random() == fresh_numpy.random()
    assert augment.compose.py_random.random() == fresh_python.random()
