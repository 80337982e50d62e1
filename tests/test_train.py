"""The training engine: schedules and optimizers behave as promised, and a fold's knobs do what they say."""

import copy
import json
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_RUN, on_competition, write_csv_competition
from safetensors.torch import load_file, save_file
from torch import nn

import comp.training.loop
import comp.training.state
from comp.augment import fit_size
from comp.config import load_config
from comp.data.competition import load_competition
from comp.data.folds import write_folds
from comp.errors import CompError
from comp.models.factory import create_model, split_parameters
from comp.runs import run_dir
from comp.training.fold import train
from comp.training.loaders import create_loaders
from comp.training.loop import create_mixup, end_epoch, mixes
from comp.training.optim import create_optimizer, create_scheduler, param_groups
from comp.training.state import Position

# Batches of 4: four steps an epoch on the 16 training rows of a fold.
TINY = [*TINY_RUN, *on_competition("tiny"), "train.batch_size=4", "train.epochs=2"]


def config_with(*overrides):
    return load_config("configs/default.yaml", [*TINY, *overrides])


@pytest.fixture
def tiny(project):
    """4 classes x 8 images in the csv layout, with folds made: 16 training rows per fold."""
    write_csv_competition(project / "data/tiny", n_classes=4, per_class=8)
    config = config_with()
    write_folds(config, load_competition(config.data))
    return project


def run(*overrides, fold=0, **kwargs):
    config = config_with(*overrides)
    return config, train(config, load_competition(config.data), fold, **kwargs)


# ----------------------------------------------------------------------------- schedules


def lrs_over(config, steps_per_epoch=10, metrics=None):
    """The learning rate of each optimizer step (plateau: of each epoch, fed `metrics`)."""
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [param], "lr": config.train.lr}])
    scheduler = create_scheduler(config, optimizer, steps_per_epoch)
    lrs = []
    for i in range(len(metrics) if metrics else config.train.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(metrics[i]) if metrics else scheduler.step()
    return np.array(lrs)


def test_onecycle_peaks_at_lr_at_the_configured_point(project):
    lrs = lrs_over(config_with("train.scheduler=onecycle", "train.lr=0.01", "train.epochs=10", "train.pct_start=0.3"))
    assert lrs.max() == pytest.approx(0.01)
    assert abs(int(lrs.argmax()) - 0.3 * len(lrs)) <= 1
    assert lrs[0] < 0.01 / 10 and lrs[-1] < 0.01 / 1000
    assert (np.diff(lrs[: lrs.argmax()]) > 0).all() and (np.diff(lrs[lrs.argmax() :]) < 0).all()


def test_cosine_warms_up_linearly_then_ends_near_its_minimum(project):
    lrs = lrs_over(
        config_with(
            "train.scheduler=cosine", "train.lr=0.01", "train.epochs=10", "train.warmup_epochs=2", "train.min_lr=0.0001"
        )
    )
    warmup = lrs[:21]
    assert np.allclose(np.diff(warmup), np.diff(warmup)[0]) and warmup[-1] == pytest.approx(0.01)
    assert (np.diff(lrs[20:]) < 0).all()
    assert 0.0001 <= lrs[-1] < 0.0001 + 0.001 * (0.01 - 0.0001)


def test_plateau_drops_by_its_factor_after_patience_epochs_without_improvement(project):
    config = config_with("train.scheduler=plateau", "train.lr=0.01", "train.lr_patience=2", "train.lr_factor=0.5")
    # val_loss improves for 3 epochs, then stalls: torch's ReduceLROnPlateau tolerates `patience` bad epochs
    # and multiplies the learning rate by the factor when the next one is bad too.
    lrs = lrs_over(config, metrics=[1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8])
    assert list(lrs) == pytest.approx([0.01] * 6 + [0.005] * 3)


def test_plateau_follows_the_monitor_direction(project):
    config = config_with(
        "train.scheduler=plateau",
        "train.monitor=val_accuracy",
        "train.lr_patience=0",
        "train.lr_factor=0.5",
        "train.lr=0.01",
    )
    lrs = lrs_over(config, metrics=[0.5, 0.6, 0.7, 0.7])  # a rising accuracy is an improvement
    assert list(lrs) == pytest.approx([0.01, 0.01, 0.01, 0.01])


def test_step_drops_every_step_epochs_and_none_stays_flat(project):
    lrs = lrs_over(
        config_with(
            "train.scheduler=step", "train.lr=0.01", "train.epochs=6", "train.step_epochs=2", "train.lr_factor=0.1"
        )
    )
    assert list(lrs) == pytest.approx([0.01] * 20 + [0.001] * 20 + [0.0001] * 20)
    assert set(lrs_over(config_with("train.scheduler=none", "train.lr=0.01"))) == {0.01}


def test_unknown_scheduler_and_optimizer_are_clear_errors(project):
    with pytest.raises(CompError, match=r"train\.scheduler.*'cosin'.*'cosine'"):
        config_with("train.scheduler=cosin")
    with pytest.raises(CompError, match=r"Unknown train\.optimizer 'adamx'\. Did you mean adam"):
        create_optimizer(config_with("train.optimizer=adamx"), TinyNet())


@pytest.mark.parametrize(
    "monitor, scores, best_epoch",
    [
        ("val_loss", [0.9, 0.5, 0.7], 2),
        ("val_log_loss", [0.9, 0.5, 0.7], 2),
        ("val_accuracy", [0.5, 0.9, 0.7], 2),
        ("val_macro_f1", [0.9, 0.5, 0.7], 1),
    ],
)
def test_the_best_epoch_follows_the_direction_of_the_monitor(project, monitor, scores, best_epoch):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    trainer = SimpleNamespace(
        config=config_with(f"train.monitor={monitor}"),
        scheduler=create_scheduler(config_with("train.scheduler=none"), optimizer, 1),
    )
    position = Position()
    improved = [end_epoch(trainer, position, {"epoch": e, monitor: v}) for e, v in enumerate(scores, 1)]
    assert position.best_epoch == best_epoch and improved[0] and improved.count(True) == (2 if best_epoch == 2 else 1)


# ----------------------------------------------------------------------------- optimizers


class TinyNet(nn.Module):
    """A body and a classifier, with timm's get_classifier: enough for the optimizer's groups."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_each_optimizer_lowers_the_loss_on_a_learnable_problem(project, name):
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x @ torch.randn(8, 3)).argmax(1)
    model = TinyNet()
    optimizer = create_optimizer(config_with(f"train.optimizer={name}", "train.lr=0.05"), model)
    losses = []
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_fused_update_comp_picks_equals_torchs_per_tensor_update(project, name):
    config = config_with(f"train.optimizer={name}", "train.lr=0.05", "train.weight_decay=0.05")
    torch.manual_seed(0)
    fused_model = TinyNet()
    # Without the batch norm, whose preceding bias gets no gradient: Adam's step on a zero gradient
    # is rounding noise divided by rounding noise, different in any two implementations.
    fused_model.body[1] = nn.Identity()
    plain_model = copy.deepcopy(fused_model)
    fused, plain = create_optimizer(config, fused_model), create_optimizer(config, plain_model, fused=False)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    x = torch.randn(32, 8)
    y = (x @ torch.randn(8, 3)).argmax(1)
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not create_optimizer(config_with("train.optimizer=rmsprop"), TinyNet()).defaults.get("fused")


def test_sgd_takes_momentum_and_nesterov_from_the_config(project):
    optimizer = create_optimizer(
        config_with("train.optimizer=sgd", "train.momentum=0.8", "train.nesterov=false"), TinyNet()
    )
    assert isinstance(optimizer, torch.optim.SGD)
    assert {(g["momentum"], g["nesterov"]) for g in optimizer.param_groups} == {(0.8, False)}


def test_groups_scale_the_backbone_lr_and_spare_biases_and_norms_from_decay(project):
    model = TinyNet()
    groups = param_groups(
        model, config_with("train.lr=0.01", "train.backbone_lr_scale=0.1", "train.weight_decay=0.05").train
    )
    by_name = {g["name"]: g for g in groups}
    assert groups[0]["name"] == "head"  # metrics.csv's lr is the head's
    assert by_name["head"]["lr"] == 0.01 and by_name["backbone"]["lr"] == pytest.approx(0.001)
    assert by_name["backbone"]["params"] == [model.body[0].weight] and by_name["backbone"]["weight_decay"] == 0.05
    assert {id(p) for p in by_name["backbone_no_decay"]["params"]} == {
        id(model.body[0].bias),
        id(model.body[1].weight),
        id(model.body[1].bias),
    }
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0


# ----------------------------------------------------------------------------- mixup


def test_mixup_makes_soft_targets_until_its_off_epoch(project):
    config = config_with("train.mixup_alpha=0.4", "train.mixup_off_epoch=3", "train.label_smoothing=0.1")
    torch.manual_seed(0)
    np.random.seed(0)
    images, labels = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    mixed, targets = create_mixup(config, 4)(images.clone(), labels)
    assert targets.shape == (8, 4) and torch.allclose(targets.sum(1), torch.ones(8))
    assert (targets > 0.05).sum(1).min() >= 2  # every row is a blend of two classes
    assert not torch.equal(mixed, images)
    assert [mixes(config, e) for e in (1, 2, 3, 4)] == [True, True, False, False]
    assert create_mixup(config_with(), 4) is None and not mixes(config_with(), 1)


# ----------------------------------------------------------------------------- data


def test_epoch_batches_depend_on_seed_and_epoch_only_and_resume_mid_epoch(tiny):
    config = config_with("aug.phase1=[{name: InvertImg, p: 0.5}]", "aug.phase2=[{name: InvertImg, p: 1.0}]")
    competition = load_competition(config.data)
    folds = pd.read_csv(config.fold_file)

    def loader_with(workers):
        loader, _ = create_loaders(
            config.model_copy(update={"train": config.train.model_copy(update={"num_workers": workers})}),
            competition,
            folds,
            0,
        )
        return loader

    def epoch_batches(loader, epoch=1, phase=1, start=0):
        loader.batch_sampler.set_epoch(epoch, phase, start)
        return [images for images, _ in loader]

    loader = loader_with(0)
    first = epoch_batches(loader)
    assert len(first) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches(loader), strict=True))  # repeatable
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches(loader_with(2)), strict=True))  # any workers
    assert all(torch.equal(a, b) for a, b in zip(first[2:], epoch_batches(loader, start=2), strict=True))
    assert not torch.equal(first[0], epoch_batches(loader, epoch=2)[0])

    # Phase 1 inverts about half the images, phase 2 all of them: the same rows, the other transform.
    loader.batch_sampler.set_epoch(1, 1)
    rows = [index for batch in loader.batch_sampler for index, _, _ in batch]
    originals = torch.stack([torch.from_numpy(fit_size(loader.dataset.images.image(i), 16)) for i in rows])
    phase1, phase2 = torch.cat(first), torch.cat(epoch_batches(loader, phase=2))
    assert phase1.dtype == torch.uint8 and torch.equal(phase2, 255 - originals)
    inverted = [torch.equal(a, 255 - b) for a, b in zip(phase1, originals, strict=True)]
    kept = [torch.equal(a, b) for a, b in zip(phase1, originals, strict=True)]
    assert all(i or k for i, k in zip(inverted, kept, strict=True)) and 0 < sum(inverted) < len(rows)


# ----------------------------------------------------------------------------- a fold


def test_phase_switch_shows_in_metrics_and_output(tiny, capsys):
    config, _ = run("train.epochs=3", "aug.phase2_epoch=2", "aug.phase2=light")
    metrics = pd.read_csv(run_dir(config.name) / "fold0/metrics.csv")
    assert list(metrics["phase"]) == [1, 2, 2]
    assert {"epoch", "phase", "lr", "train_loss", "val_loss", "val_accuracy", "seconds"} <= set(metrics.columns)
    assert "augmentation phase 2 (aug.phase2) from epoch 2" in capsys.readouterr().out


def test_frozen_backbone_is_unchanged_during_freeze_epochs_and_trains_after(tiny, monkeypatch):
    start = create_model(config_with().model, 4)
    save_file(start.state_dict(), "start.safetensors")
    initial = load_file("start.safetensors")
    saved = []
    monkeypatch.setattr(comp.training.state, "save_state", lambda path, state: saved.append(copy.deepcopy(state)))
    run(
        "model.weights=start.safetensors",
        "train.freeze_epochs=1",
        "train.epochs=2",
        "train.backbone_lr_scale=0.5",
        "train.checkpoint_seconds=0",  # a checkpoint after each epoch
    )

    model = create_model(config_with().model, 4)
    head = {name for name, p in model.named_parameters() if any(p is h for h in split_parameters(model)[0])}
    backbone = {name for name, p in model.named_parameters() if any(p is b for b in split_parameters(model)[1])}
    buffers = {name for name, _ in model.named_buffers() if not name.startswith("fc.")}
    after_freeze, after_all = saved[0]["model"], saved[1]["model"]
    assert all(torch.equal(after_freeze[k], initial[k]) for k in backbone | buffers)
    assert not all(torch.equal(after_freeze[k], initial[k]) for k in head)
    assert not any(torch.equal(after_all[k], initial[k]) for k in backbone if k.endswith("conv1.0.weight"))


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_saved(tiny):
    config, _ = run("train.ema=true", "train.ema_decay=0.5", "train.epochs=1")
    state = torch.load(run_dir(config.name) / "fold0/last.pt", weights_only=True)
    best = load_file(run_dir(config.name) / "fold0/best.safetensors")
    assert all(torch.equal(best[k], state["ema"][k]) for k in best)
    assert not all(torch.equal(best[k], state["model"][k]) for k in best)


def test_every_knob_runs_together_and_accumulation_counts_optimizer_steps(tiny):
    config, (result,) = run(
        "train.optimizer=sgd",
        "train.scheduler=cosine",
        "train.warmup_epochs=0.5",
        "train.clip_grad=1.0",
        "train.grad_accum_steps=3",
        "train.label_smoothing=0.1",
        "train.cutmix_alpha=1.0",
        "train.mixup_alpha=0.2",
        "train.mixup_off_epoch=2",
        "train.channels_last=true",
        "train.monitor=val_macro_f1",
        "train.tensorboard=true",
    )
    state = torch.load(run_dir(config.name) / "fold0/last.pt", weights_only=True)
    assert state["position"]["step"] == 2 * math.ceil(4 / 3)  # 4 batches an epoch, steps after 3 and 4
    metrics = pd.read_csv(run_dir(config.name) / "fold0/metrics.csv")
    assert "val_macro_f1" in metrics.columns and result.best_epoch in (1, 2)
    assert list((run_dir(config.name) / "fold0/tb").glob("events.out.tfevents.*"))


def test_early_stopping_ends_the_fold_after_patience_epochs_without_improvement(tiny, capsys):
    # A frozen backbone and a learning rate of 1e-9: the accuracy cannot change, so epoch 2 is no better.
    config, (result,) = run(
        "train.epochs=6",
        "train.freeze_epochs=6",
        "train.lr=1e-9",
        "train.scheduler=none",
        "train.patience=1",
        "train.monitor=val_accuracy",
    )
    assert len(pd.read_csv(run_dir(config.name) / "fold0/metrics.csv")) == 2 and result.best_epoch == 1
    assert "early stop after epoch 2" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tiny, monkeypatch):
    calls = []
    real_loss = comp.training.loop.training_loss

    def loss_going_nan(logits, targets, smoothing, task):
        calls.append(1)
        loss = real_loss(logits, targets, smoothing, task)
        return loss * float("nan") if len(calls) == 6 else loss  # epoch 2, step 2

    monkeypatch.setattr(comp.training.loop, "training_loss", loss_going_nan)
    with pytest.raises(CompError, match=r"fold 0, epoch 2, step 2 of 4") as err:
        run("train.epochs=3", "train.checkpoint_seconds=0")
    assert "last.pt keeps the last good checkpoint" in err.value.message
    folder = run_dir(config_with().name) / "fold0"
    assert torch.load(folder / "last.pt", weights_only=True)["position"]["epoch"] == 1
    assert len(pd.read_csv(folder / "metrics.csv")) == 1 and not (folder / "summary.json").exists()


def test_weights_going_inf_are_caught_before_they_are_saved(tiny, monkeypatch):
    real_step = comp.training.loop.optimizer_step

    def step_then_break(trainer, step):
        real_step(trainer, step)
        if step == 8:  # the last step of epoch 2: its loss was finite, the weights are not
            next(trainer.model.parameters()).data.fill_(float("inf"))

    monkeypatch.setattr(comp.training.loop, "optimizer_step", step_then_break)
    with pytest.raises(CompError, match=r"The weights became inf or nan in fold 0, epoch 2, by step 4 of 4"):
        run("train.epochs=3", "model.drop_rate=0.0", "train.checkpoint_seconds=0")
    state = torch.load(run_dir(config_with().name) / "fold0/last.pt", weights_only=True)
    assert state["position"]["epoch"] == 1 and all(v.isfinite().all() for v in state["model"].values())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.batch_size=17"], r"train\.batch_size=17 is larger than fold 0's 16 training rows"),
        (["train.optimizer=adamx"], r"Unknown train\.optimizer 'adamx'"),
        (["train.monitor=val_acc"], r"Unknown train\.monitor 'val_acc'\. Did you mean val_accuracy\?"),
        (["train.mixup_alpha=0.2", "train.batch_size=5"], r"train\.batch_size=5 must be even"),
        (["aug.phase2=[{name: Flipp}]"], r"aug\.phase2\[0\]: unknown albumentations transform 'Flipp'"),
        (["train.scheduler=cosine", "train.warmup_epochs=2"], r"train\.warmup_epochs=2\.0 leaves no epoch"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tiny, overrides, message):
    with pytest.raises(CompError, match=message):
        run(*overrides)
    assert not (tiny / "runs").exists()


def test_a_run_trained_on_other_classes_is_refused_before_anything_is_written(tiny):
    (tiny / "runs/tiny").mkdir(parents=True)
    (tiny / "runs/tiny/classes.json").write_text(json.dumps([0, 1, 2]))
    with pytest.raises(CompError, match="Run runs/tiny"):
        run()
    assert sorted(p.name for p in (tiny / "runs/tiny").iterdir()) == ["classes.json"]


def test_weights_file_with_code_in_it_is_refused(tiny):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').close()",))

    (tiny / "evil.pt").write_bytes(pickle.dumps({"fc.weight": Boom()}, protocol=2))
    with pytest.raises(CompError, match="Refusing to load model.weights evil.pt"):
        run("model.weights=evil.pt")
    assert not (tiny / "pwned").exists() and not (tiny / "runs").exists()
