"""comp lr-find: the exponential sweep, its divergence stop, the suggestion, the plot."""

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_RUN, on_competition, sets, write_csv_competition
from typer.testing import CliRunner

from comp.cli import app
from comp.errors import CompError
from comp.training.lr_find import DIVERGENCE, WINDOW_DECADES, lr_schedule, suggest

runner = CliRunner()


def steepest_windows(curve: pd.DataFrame) -> list[tuple[float, float]]:
    """From the recorded curve alone: the half-decade windows of learning rates over which the smoothed
    loss falls (within 10%) the most."""
    lrs, smoothed = curve["lr"].to_numpy(), curve["smoothed"].to_numpy()
    ends = np.searchsorted(lrs, lrs * 10**WINDOW_DECADES)
    falls = {(lrs[i], lrs[j]): smoothed[i] - smoothed[j] for i, j in enumerate(ends) if j < len(lrs)}
    steepest = max(falls.values())
    assert steepest > 0, "the smoothed loss never falls"
    return [span for span, fall in falls.items() if fall >= 0.9 * steepest]


def test_lr_find_sweeps_until_divergence_and_suggests_where_the_loss_falls_fastest(project):
    write_csv_competition(project / "data/shapes", n_classes=4, per_class=8)
    shapes = sets(*TINY_RUN, *on_competition("shapes"))
    assert runner.invoke(app, ["folds", *shapes]).exit_code == 0
    result = runner.invoke(app, ["lr-find", "--steps", "50", "--start-lr", "1e-4", "--end-lr", "100", *shapes])
    assert result.exit_code == 0, result.output + repr(result.exception)

    report = project / "runs/shapes/report"
    assert (report / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = pd.read_csv(report / "lr_find.csv")
    lrs = curve["lr"].to_numpy()
    assert np.allclose(np.diff(np.log(lrs)), np.log(1e6) / 49)  # exponential: a constant ratio per step
    # Adam at a learning rate of 100 diverges: the sweep stops there, before its last step.
    assert len(curve) < 50 and curve["smoothed"].iloc[-1] > DIVERGENCE * curve["smoothed"].min()

    suggested = float(result.output.split("Suggested learning rate:")[1].split()[0])
    assert any(low * 0.99 <= suggested <= high * 1.01 for low, high in steepest_windows(curve))
    assert suggested < lrs[curve["smoothed"].argmin()]  # before the bottom of the curve, not past it


def test_suggestion_on_a_known_curve():
    lrs = np.geomspace(1e-6, 1, 200)
    # Flat, then falling fastest around 1e-3, a plateau, then blowing up past 1e-1.
    smoothed = 2.5 - 2 / (1 + np.exp(-4 * np.log10(lrs / 1e-3))) + np.where(lrs > 0.1, 50 * (lrs - 0.1), 0)
    curve = pd.DataFrame({"step": range(200), "lr": lrs, "loss": smoothed, "smoothed": smoothed})
    suggested, (low, high) = suggest(curve)
    assert 10**-3.3 < suggested < 10**-2.7 and low < suggested < high


def test_a_sweep_too_short_or_backwards_is_refused():
    with pytest.raises(CompError, match="--steps"):
        lr_schedule(1e-7, 10, 3)
    with pytest.raises(CompError, match="--start-lr < --end-lr"):
        lr_schedule(1, 1e-3, 100)
