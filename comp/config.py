"""Experiment config: built-in defaults (== comp/configs/default.yaml) <- a YAML file <- `--set` overrides.

Every key is typed and validated by pydantic; an unknown key is an error that names it and
suggests the closest valid one. `--config` takes a YAML file, or a config's name (comp/config_files.py
finds it: configs/NAME.yaml in the working folder, else the config NAME packaged with comp).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from comp.config_files import StarterConfig, parse_yaml, read_config_text, starter_config
from comp.errors import CompError
from comp.io import write_text

# What train.loggers may name, and the extra that installs each (csv: metrics.csv, always written).
LOGGER_EXTRAS = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
# Keys of earlier versions still read (old runs' config.yaml), and what became of them.
RENAMED_KEYS = {"train.tensorboard": "train.loggers"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    competition: str = "demo"
    root: str = "data/demo"
    layout: Literal["auto", "folders", "csv", "filenames", "pixels"] = "auto"
    train_dir: str = "train"
    train_csv: str = "train.csv"
    id_column: str | None = "id"
    label_column: str = "label"
    label_columns: list[str] | None = None
    label_pattern: str | None = None
    image_suffix: str = ".png"
    test_dir: str = "test"
    test_csv: str | None = None
    test_id_column: str | None = None
    sample_submission: str = "sample_submission.csv"
    image_size: int = Field(16, ge=8)
    # auto: multilabel when a label cell holds several space-separated tags, binary with two classes,
    # ordinal when predict.metric is quadratic_weighted_kappa, multiclass otherwise (comp.tasks).
    task: Literal["auto", "multiclass", "binary", "multilabel", "ordinal"] = "auto"
    cache: Literal["auto", "on", "off", "disk"] = "auto"  # on: in memory (comp.data.dataset.cache_mode)
    # device: the images decoded once by data.cache go through torchvision's decoder on train.device, JPEGs in
    # batches (nvJPEG on CUDA; torchvision's libjpeg on the CPU elsewhere) (comp.data.images.read_images)
    decode: Literal["cpu", "device"] = "cpu"
    pseudo_labels: str | None = None

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value)  # YAML reads a bare on/off as a boolean


class FoldsConfig(Section):
    k: int = Field(5, ge=2)
    seed: int | None = None  # null: the top-level seed
    group_column: str | None = None
    group_duplicates: bool = False


class HeadConfig(Section):
    hidden: int | None = Field(None, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class ModelConfig(Section):
    name: str = "resnet9_tiny"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: bool = False
    weights: str | None = None
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    head: HeadConfig = Field(default_factory=HeadConfig)
    max_params: int | None = Field(None, ge=1)

    @field_validator("head", mode="before")
    @classmethod
    def _no_head(cls, value: Any) -> Any:
        return {} if value is None else value  # `model.head: null` reads as "no extra head"


class TrainConfig(Section):
    epochs: int = Field(6, ge=1)
    seed: int | None = None  # null: the top-level seed
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.001, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    optimizer: str = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    scheduler: Literal["onecycle", "cosine", "plateau", "step", "none"] = "onecycle"
    pct_start: float = Field(0.25, gt=0, lt=1)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    lr_factor: float = Field(0.1, gt=0, lt=1)
    lr_patience: int = Field(2, ge=0)
    step_epochs: int = Field(3, ge=1)
    freeze_epochs: int = Field(0, ge=0)
    backbone_lr_scale: float = Field(1.0, gt=0)
    clip_grad: float | None = Field(None, gt=0)
    grad_accum_steps: int = Field(1, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    mix_prob: float = Field(1.0, ge=0, le=1)
    mixup_off_epoch: int | None = Field(None, ge=1)
    ema: bool = False
    ema_decay: float = Field(0.999, gt=0, lt=1)
    monitor: str = "val_loss"
    patience: int | None = Field(None, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    checkpoint_seconds: float = Field(60.0, ge=0)
    device: str = "auto"
    sync_bn: bool = False
    amp: Literal["auto"] | bool = "auto"
    channels_last: Literal["auto"] | bool = "auto"
    compile: bool = False
    num_workers: int | Literal["auto"] = "auto"
    pin_memory: bool = True
    persistent_workers: bool = True
    loggers: list[str] = Field(default_factory=lambda: ["csv"])

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_switch(cls, data: Any) -> Any:
        """train.tensorboard (before train.loggers): true reads as `tensorboard` among the loggers."""
        if isinstance(data, dict) and "tensorboard" in data:
            data = dict(data)
            if data.pop("tensorboard") is True:
                data["loggers"] = [*_as_list(data.get("loggers", ["csv"])), "tensorboard"]
        return data

    @field_validator("loggers", mode="before")
    @classmethod
    def _known_loggers(cls, value: Any) -> Any:
        names = _as_list(value)
        for name in names:
            if name not in LOGGER_EXTRAS:
                close = difflib.get_close_matches(str(name), list(LOGGER_EXTRAS), n=1, cutoff=0.5)
                raise CompError(
                    f"Unknown logger '{name}' in train.loggers.{f' Did you mean {close[0]}?' if close else ''}",
                    hint=f"train.loggers takes a list of: {', '.join(LOGGER_EXTRAS)} "
                    "(e.g. --set train.loggers=[csv,wandb]).",
                )
        return list(dict.fromkeys(names))


def _as_list(value: Any) -> Any:
    """A bare name (`--set train.loggers=wandb`) is a list of one."""
    return [value] if isinstance(value, str) else value


# A preset name (comp.augment.PRESETS) or a list of albumentations transforms, see comp/augment.py.
AugSteps = str | list[str | dict[str, Any]]


class AugConfig(Section):
    phase1: AugSteps = "light"
    phase2: AugSteps = "strong"
    phase2_epoch: int | None = None
    device: bool = True


MetricName = Literal[
    "accuracy",
    "balanced_accuracy",
    "log_loss",
    "macro_f1",
    "roc_auc",
    "mean_column_auc",
    "quadratic_weighted_kappa",
    "f_beta",
    "map_at_k",
]
# The parameters a metric takes from predict.metric_params (comp.metrics has their defaults).
METRIC_PARAMS: dict[str, tuple[str, ...]] = {"f_beta": ("beta",), "map_at_k": ("k",)}


class PredictConfig(Section):
    tta: list[str] | Literal["auto"] = "auto"
    tta_mean: Literal["arithmetic", "geometric"] = "arithmetic"
    metric: MetricName = "accuracy"
    metric_params: dict[str, float] = Field(default_factory=dict)
    batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _known_params(self) -> PredictConfig:
        allowed = METRIC_PARAMS.get(self.metric, ())
        unknown = [key for key in self.metric_params if key not in allowed]
        if unknown:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
            raise ValueError(f"predict.metric_params has {', '.join(unknown)}, but metric {self.metric} {takes}")
        return self


class SubmissionConfig(Section):
    format: Literal["auto", "label", "probabilities", "binary", "tags", "top_k"] = "auto"
    positive_class: str | int | None = None


# GridSearchCV's param_grid: one mapping of argument -> candidate values, or a list of them.
ParamGrid = dict[str, list[Any]] | list[dict[str, list[Any]]]


class ProbeConfig(Section):
    classifier: Literal["svm", "logistic"] = "svm"
    grid: ParamGrid | None = None
    cv: int = Field(3, ge=2)
    n_jobs: int = 1


class DuplicatesConfig(Section):
    max_distance: int = Field(6, ge=0, le=64)  # bits of the 64-bit perceptual hash that may differ


class Config(Section):
    name: str = "default"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    aug: AugConfig = Field(default_factory=AugConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    submission: SubmissionConfig = Field(default_factory=SubmissionConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    duplicates: DuplicatesConfig = Field(default_factory=DuplicatesConfig)

    @property
    def fold_seed(self) -> int:
        return self.seed if self.folds.seed is None else self.folds.seed

    @property
    def train_seed(self) -> int:
        return self.seed if self.train.seed is None else self.train.seed

    @model_validator(mode="after")
    def _graded_metric_means_ordinal(self) -> Config:
        """data.task auto with quadratic weighted kappa is ordinal: a kappa metric says the labels are grades."""
        if self.data.task == "auto" and self.predict.metric == "quadratic_weighted_kappa":
            self.data.task = "ordinal"
        return self

    @property
    def fold_file(self) -> Path:
        grouped = "_dups" if self.folds.group_duplicates else ""
        return Path("folds") / f"{self.data.competition}_k{self.folds.k}_s{self.fold_seed}{grouped}.csv"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Keys whose value is a free-form mapping: their children are not checked against the schema.
_FREE_FORM = {"model.kwargs", "probe.grid", "predict.metric_params"}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: a config (or any nested mapping) as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows, sections included."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys.extend(valid_keys(sub, f"{key}."))
    return keys


def _unknown_key_error(key: str, source: str) -> CompError:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:  # a typo in the last part alone: compare within the same section
        section, _, leaf = key.rpartition(".")
        siblings = [k for k in keys if k.rpartition(".")[0] == section]
        close = [
            f"{section}.{m}" if section else m
            for m in difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=1, cutoff=0.5)
        ]
    suggestion = f" Did you mean {close[0]}?" if close else ""
    section = key.rpartition(".")[0]
    options = [k for k in keys if k.rpartition(".")[0] == section]
    return CompError(
        f"Unknown config key '{key}' in {source}.{suggestion}",
        hint=f"Valid keys{' in ' + section if section else ''}: {', '.join(options)}.",
    )


def _check_keys(tree: dict[str, Any], source: str, prefix: str = "") -> None:
    known = set(valid_keys())
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted not in known and dotted not in RENAMED_KEYS:
            raise _unknown_key_error(dotted, source)
        if isinstance(value, dict) and dotted not in _FREE_FORM:
            _check_keys(value, source, f"{dotted}.")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if (
            isinstance(value, dict)
            and isinstance(merged.get(key), dict)
            and key not in ("kwargs", "grid", "metric_params")
        ):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`a.b=v` -> {"a": {"b": v}}, with v parsed as YAML (`[identity,hflip]` is a list)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CompError(f"Bad --set '{text}': write it as key=value, e.g. --set train.epochs=3.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise CompError(f"Bad value in --set '{text}': {exc}") from None
    tree: dict[str, Any] = value
    for part in reversed(key.split(".")):
        tree = {part: tree}
    return tree


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    _check_keys(tree, source)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"{key} = {err.get('input')!r}: {err['msg']}")
        raise CompError(
            f"Invalid value in {source}: " + "; ".join(problems) + ".",
            hint="Fix the value in the config file or the --set override (`comp init` writes a config that documents "
            "each key).",
        ) from None


def load_config(config: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- the YAML of `config` (a file or a name, see read_config_text) <- `key=value` overrides."""
    source, yaml_text = read_config_text(config)
    tree = parse_yaml(yaml_text, source)
    _check_keys(tree, source)
    for text in overrides or []:
        override = parse_override(text)
        _check_keys(override, f"--set {text}")
        tree = _merge(tree, override)
    return build_config(tree, f"{source} with --set overrides" if overrides else source)


def save_config(config: Config, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_starter_config(slug: str | None = None, force: bool = False) -> StarterConfig:
    """configs/<slug or default>.yaml: the packaged default, documented key by key, pointed at the competition."""
    starter, text = starter_config(slug, force)
    build_config(parse_yaml(text, str(starter.path)), str(starter.path))
    write_text(starter.path, text)
    return starter
