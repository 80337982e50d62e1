"""TTA views: what each view does, one forward pass, the mean of single-view results, and `auto`'s choice."""

import numpy as np
import pytest
import torch
from torch import nn

from comp.errors import CompError
from comp.tta import AUTO_CANDIDATES, choose_views, combine, resolve_views, view_copies, view_log_probs


def linear_model(size: int = 8, n_classes: int = 5) -> nn.Module:
    """A model that sees where things are: flipping its input changes its output."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, n_classes)).eval()


def predict_views(model: nn.Module, images: torch.Tensor, views: list[str], mean: str = "arithmetic"):
    """Class probabilities averaged over the views (batch x classes), as `comp predict` combines them."""
    return combine(view_log_probs(model, images, views, mean), mean).exp()


class CountingModel(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.batch_sizes = inner, []

    def forward(self, x):
        self.batch_sizes.append(len(x))
        return self.inner(x)


def test_hflip_changes_the_result_and_tta_is_the_mean_of_single_view_results():
    model, images = linear_model(), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        identity = predict_views(model, images, ["identity"])
        hflip = predict_views(model, images, ["hflip"])
        both = predict_views(model, images, ["identity", "hflip"])
        geometric = predict_views(model, images, ["identity", "hflip"], mean="geometric")
    assert (identity - hflip).abs().max() > 0.01
    torch.testing.assert_close(both, (identity + hflip) / 2)
    root = (identity * hflip).sqrt()
    torch.testing.assert_close(geometric, root / root.sum(1, keepdim=True))
    torch.testing.assert_close(both.sum(1), torch.ones(4))


def test_a_mirror_symmetric_image_gives_the_same_result_under_hflip():
    model = linear_model()
    half = torch.randn(1, 3, 8, 4, generator=torch.Generator().manual_seed(2))
    symmetric = torch.cat([half, half.flip(3)], dim=3)
    with torch.no_grad():
        torch.testing.assert_close(
            predict_views(model, symmetric, ["hflip"]), predict_views(model, symmetric, ["identity"])
        )


def test_all_views_of_a_batch_run_in_one_forward_pass():
    model = CountingModel(linear_model())
    with torch.no_grad():
        views = ["identity", "hflip", "fivecrop", "scale1.3"]
        out = view_log_probs(model, torch.randn(3, 3, 8, 8), views, "arithmetic")
    assert model.batch_sizes == [3 * (1 + 1 + 5 + 1)]
    assert out.shape == (4, 3, 5)


def test_views_transform_the_image_as_named():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    (hflip,), (vflip,), (hvflip,) = view_copies("hflip"), view_copies("vflip"), view_copies("hvflip")
    assert torch.equal(hflip(x)[..., 0], x[..., -1]) and torch.equal(vflip(x)[..., 0, :], x[..., -1, :])
    assert torch.equal(hvflip(x), view_copies("rot180")[0](x))
    rot90, rot270 = view_copies("rot90")[0], view_copies("rot270")[0]
    assert torch.equal(rot270(rot90(x)), x) and not torch.equal(rot90(x), rot270(x))
    constant = torch.full((1, 3, 8, 8), 0.5)
    for name in ("scale", "scale1.5", "fivecrop", "fivecrop0.5"):
        for copy in view_copies(name):
            assert copy(x).shape == x.shape
            torch.testing.assert_close(copy(constant), constant)  # a zoom of a flat image is the same image
    top_left = view_copies("fivecrop0.5")[0](x)
    corner = torch.nn.functional.interpolate(x[..., :3, :3], size=(6, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(top_left, corner)
    assert len(view_copies("fivecrop")) == 5


def test_without_tta_the_identity_view_alone():
    assert resolve_views(["hflip", "vflip"], use_tta=False) == ["identity"]
    assert resolve_views("auto", use_tta=False) == ["identity"]
    assert resolve_views("auto", use_tta=True) == "auto"
    views = ["identity", "scale1.2", "fivecrop0.8"]
    assert resolve_views(views, use_tta=True) == views


@pytest.mark.parametrize(
    "views, message",
    [
        (["identity", "hflp"], r"Unknown TTA view 'hflp'.*Did you mean hflip\?"),
        (["scale0.9"], r"Unknown TTA view 'scale0.9'"),
        (["fivecrop1.5"], r"Unknown TTA view 'fivecrop1.5'"),
        (["identity", "identity"], "twice"),
        ([], "empty"),
    ],
)
def test_bad_views_are_clear_errors(views, message):
    with pytest.raises(CompError, match=message) as err:
        resolve_views(views, use_tta=True)
    assert err.value.hint


def constructed_views(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Two classes, every row of class 0. identity is right on rows 0-59, hflip on rows 40-99 (so together
    they are right everywhere), vflip is confidently wrong everywhere."""
    p_true = np.empty((3, n))
    p_true[0] = np.where(np.arange(n) < 60, 0.8, 0.4)
    p_true[1] = np.where(np.arange(n) >= 40, 0.8, 0.4)
    p_true[2] = 0.1
    probs = np.stack([p_true, 1 - p_true], axis=-1)
    return np.log(probs), np.zeros(n, dtype=int)


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_auto_keeps_a_view_that_helps_and_drops_one_that_hurts(metric):
    log_probs, targets = constructed_views()
    choice = choose_views(log_probs, ["identity", "hflip", "vflip"], targets, metric)
    assert choice.views == ["identity", "hflip"]
    assert {s["view"]: s["kept"] for s in choice.steps} == {"identity": True, "hflip": True, "vflip": False}
    assert choice.steps[-1]["view"] == "vflip"  # tried last: the worst alone
    if metric == "accuracy":
        assert choice.alone == {"identity": 0.6, "hflip": 0.6, "vflip": 0.0} and choice.score == 1.0
    else:
        assert choice.score < min(choice.alone.values())


def test_auto_starts_from_the_best_single_view_even_when_it_is_not_identity():
    log_probs, targets = constructed_views()
    choice = choose_views(log_probs[[2, 1]], ["vflip", "hflip"], targets, "accuracy")
    assert choice.views == ["hflip"] and choice.score == 0.6


def test_auto_candidates_are_every_view():
    assert AUTO_CANDIDATES == ["identity", "hflip", "vflip", "hvflip", "rot90", "rot180", "rot270", "scale", "fivecrop"]
    for name in AUTO_CANDIDATES:
        view_copies(name)
