"""Augmentation: presets and YAML transform lists build, give exact-size tensors, and fail clearly."""

import random

import albumentations as A
import numpy as np
import pytest
import torch
import yaml

from comp.augment import (
    PRESETS,
    build_eval_transform,
    build_steps,
    build_train_transform,
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
    return [
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(20, 50, 3), (300, 200, 3), (32, 32, 3)]
    ]


@pytest.mark.parametrize("steps", [*PRESETS, yaml.safe_load(YAML_LIST)])
def test_presets_and_yaml_lists_give_exact_size_float_tensors(steps):
    transform = build_train_transform(steps, 32, MEAN, STD)
    for image in images():
        for _ in range(3):
            out = transform(image=image)["image"]
            assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, 32, 32)


def test_eval_transform_resizes_and_normalises_with_the_given_statistics():
    image = np.full((40, 24, 3), (255, 0, 128), dtype=np.uint8)
    out = build_eval_transform(16, MEAN, STD)(image=image)["image"]
    expected = (torch.tensor([255, 0, 128]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out, expected[:, None, None].expand(3, 16, 16), atol=1e-5)


def test_train_transform_normalises_the_same_way():
    image = np.full((16, 16, 3), 200, dtype=np.uint8)
    train = build_train_transform("none", 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(image=image)["image"]
    assert torch.allclose(train, torch.full((3, 16, 16), (200 / 255 - 0.5) / 0.25), atol=1e-5)


def test_light_preset_never_flips():
    """The default competition is digits: a mirrored 2 or 5 is not the same class."""
    transforms = build_steps("light", 32, "aug.phase1")
    assert not any(isinstance(t, (A.HorizontalFlip, A.VerticalFlip, A.D4, A.Transpose)) for t in transforms)
    assert AugConfig().phase1 == "light"


def test_both_item_forms_come_through_the_config_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "aug:\n  phase1:\n    - {name: HorizontalFlip, p: 0.5}\n    - Affine: {rotate: [-5, 5]}\n"
    )
    config = load_config(path, ["aug.phase2=[{name: RandomResizedCrop, scale: [0.5, 1.0]}]"])
    validate_aug(config.aug, 32)
    first, second = build_steps(config.aug.phase1, 32, "aug.phase1")
    assert isinstance(first, A.HorizontalFlip) and first.p == 0.5
    assert isinstance(second, A.Affine)
    (crop,) = build_steps(config.aug.phase2, 32, "aug.phase2")
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


def _flips(transform, n=300):
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[0, 0] = 255
    outcomes = []
    for _ in range(n):
        out = transform(image=image)["image"][0]
        outcomes.append((bool(out[0, -1] > 0 or out[-1, -1] > 0), bool(out[-1, 0] > 0 or out[-1, -1] > 0)))
    return outcomes


def _seeded(steps, seed):
    transform = build_train_transform(steps, 4, MEAN, STD)
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))  # as comp.train seeds it
    return transform


def test_seed_repeats_the_stream_and_keeps_transforms_independent():
    steps = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}]
    first = _flips(_seeded(steps, 7))
    assert first == _flips(_seeded(steps, 7))
    assert first != _flips(_seeded(steps, 8))
    assert set(first) == {(False, False), (True, False), (False, True), (True, True)}
