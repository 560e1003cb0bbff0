"""The one declaration of every training option: type, default, check and help.

`fastfcnn train`'s options, `--preset`, `--config FILE.json`, the `config` of metrics.json and
model.npz, and FCNNClassifier's parameters are all derived from the fields of TrainConfig.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .errors import UserError
from .schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adam", "adamw")
CROP_MODES = ("reflect", "zero")
WHITENINGS = ("none", "zca", "pca")
ENGINES = ("numba", "numpy")
PRECISIONS = ("fp32", "bf16")


def option(default, help: str, check=None, must: str = "", choices: tuple = ()):
    """A TrainConfig field: `check(value)` is true for a valid value, `must` says what a valid
    value is ("must be at least 1"); `choices` is the shorthand for a fixed set of strings."""
    if choices:
        check, must = (lambda v: v in choices), f"must be one of {', '.join(choices)}"
    meta = {"help": help, "check": check, "must": must, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _finite(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
    def check(v):
        if not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return check


@dataclass
class TrainConfig:
    hidden: list = option([64, 64], "Hidden layer widths, comma separated ('' for a linear classifier).",
                          lambda v: all(isinstance(h, int) and h >= 1 for h in v), "must be positive integers")
    epochs: int = option(20, "Passes over the training split.", lambda v: v >= 1, "must be at least 1")
    batch_size: int = option(128, "Rows per step (the last batch of an epoch may be smaller).",
                             lambda v: v >= 1, "must be at least 1")
    optimizer: str = option("sgd", "sgd (momentum, L2 weight decay), adam (L2 weight decay added to the gradient) "
                            "or adamw (Adam with decoupled weight decay: w -= lr * weight_decay * w).",
                            choices=OPTIMIZERS)
    lr: float = option(0.05, "Peak learning rate (Adam wants about 1e-3).", _finite(0, lo_open=True),
                       "must be a positive number")
    momentum: float = option(0.9, "SGD momentum (sgd only).", _finite(0, 1, hi_open=True), "must be in [0, 1)")
    nesterov: bool = option(False, "Use Nesterov momentum (sgd only).")
    weight_decay: float = option(5e-4, "Weight decay on weights (not biases); see --optimizer.", _finite(0),
                                 "must be >= 0")
    beta1: float = option(0.9, "Adam's decay rate of the first moment (adam, adamw).",
                          _finite(0, 1, hi_open=True), "must be in [0, 1)")
    beta2: float = option(0.999, "Adam's decay rate of the second moment (adam, adamw).",
                          _finite(0, 1, hi_open=True), "must be in [0, 1)")
    adam_eps: float = option(1e-8, "Adam's epsilon, added to the root of the second moment (adam, adamw).",
                             _finite(0, lo_open=True), "must be > 0")
    lr_schedule: str = option("cosine", "constant, step (x0.1 at 50% and 75%), cosine, or onecycle "
                              "(from lr/25 up during warmup, then linearly to 0).", choices=SCHEDULES)
    warmup_epochs: float = option(1.0, "Epochs of linear learning-rate warmup.", _finite(0), "must be >= 0")
    label_smoothing: float = option(0.0, "Target mass spread evenly over all classes.",
                                    _finite(0, 1, hi_open=True), "must be in [0, 1)")
    dropout: float = option(0.0, "Probability of dropping each hidden unit in training.",
                            _finite(0, 1, hi_open=True), "must be in [0, 1)")
    crop_pad: int = option(0, "Random-crop augmentation (images only): shift each training image by up to "
                           "N pixels.", lambda v: 0 <= v <= 255, "must be between 0 and 255 pixels")
    crop_mode: str = option("reflect", "How a crop fills pixels from outside the image: reflect or zero.",
                            choices=CROP_MODES)
    flip: bool = option(False, "Mirror half the training images left-right (images only).")
    whiten: str = option("none", "Input whitening fitted on the training split: none, zca, or pca (keeps "
                         "--whiten-dims components).", choices=WHITENINGS)
    whiten_dims: int = option(256, "Components kept by --whiten pca.", lambda v: v >= 1, "must be at least 1")
    whiten_eps: float = option(0.1, "Whitening regulariser added to the eigenvalues (normalised units).",
                               _finite(0, lo_open=True), "must be > 0")
    patience: int = option(0, "Early stopping: stop after N epochs without a better validation accuracy and "
                           "keep those best weights (best.npz; 0: off).", lambda v: v >= 0, "must be >= 0")
    engine: str = option("numba", "numba (the parallel kernels) or numpy (the reference).", choices=ENGINES)
    precision: str = option("fp32", "Matrix products in fp32, or bf16: operands rounded to bfloat16, sums, "
                            "weights and updates in float32 (numba needs a CPU with AVX512_BF16; numpy emulates "
                            "it). Accuracy is measured in fp32.", choices=PRECISIONS)
    seed: int = option(0, "Seed of every random choice: initialisation, split, shuffling, augmentation, dropout.",
                       lambda v: v >= 0, "must be >= 0")
    val_size: float = option(0.1, "Training rows held out (stratified) for validation: a fraction if below 1, "
                             "else a count; 0 for none.", _finite(0), "must be >= 0")

    def check(self) -> None:
        """Raise UserError naming the first option whose value cannot work."""
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f, value)
            ok = f.metadata["check"]
            if ok is not None and not ok(value):
                raise UserError(f"{flag(f.name)} {f.metadata['must']}, got {show(value)}")
        if self.warmup_epochs > self.epochs:
            raise UserError(f"--warmup-epochs must be at most --epochs ({self.epochs}), got {self.warmup_epochs:g}")
        if self.val_size >= 1 and self.val_size != int(self.val_size):
            raise UserError(f"--val-size must be a fraction below 1 or a whole count, got {self.val_size:g}")
        if self.patience and self.val_size == 0:
            raise UserError("--patience needs a validation split (--val-size > 0)")

    def check_data(self, data) -> None:
        """Raise UserError if these options cannot work on `data` (a Dataset)."""
        n = len(data.y_train)
        n_val = self.n_val(n)
        if not 0 <= n_val < n:
            raise UserError(f"--val-size {self.val_size:g} leaves no training rows: the training set has {n}")
        if data.image_shape is None and (self.crop_pad or self.flip):
            raise UserError("--crop-pad and --flip augment images; this dataset holds feature vectors")
        if data.image_shape is not None and self.crop_pad and self.crop_mode == "reflect":
            side = min(data.image_shape[1:])
            if self.crop_pad >= side:
                raise UserError(f"--crop-pad with reflect padding must be below the image side ({side}), "
                                f"got {self.crop_pad}")
        if self.whiten == "pca" and self.whiten_dims > data.n_features:
            raise UserError(f"--whiten-dims must be at most {data.n_features}, the number of input features")

    def n_val(self, n_train: int) -> int:
        """Rows of a training set of n_train rows that val_size holds out."""
        return int(round(self.val_size * n_train)) if self.val_size < 1 else int(self.val_size)

    def to_dict(self) -> dict:
        return asdict(self)


_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list}


def _check_type(f, value) -> None:
    want = _TYPES[f.type]
    ok = isinstance(value, want) and not (f.type in ("int", "float") and isinstance(value, bool))
    if not ok:
        raise UserError(f"{flag(f.name)} must be {'a list of integers' if f.type == 'list' else 'a ' + f.type}, "
                        f"got {show(value)}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def show(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "''"
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def option_fields():
    """The declared options, in declaration order."""
    return fields(TrainConfig)


def defaults() -> dict:
    return {f.name: (f.default_factory() if f.default is MISSING else f.default) for f in fields(TrainConfig)}


def parse_hidden(text: str) -> list:
    """'64,64' -> [64, 64]; '' or 'none' -> [] (a linear classifier)."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return []
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise UserError(f"--hidden must be a comma-separated list of layer widths like 64,64, got {text!r}") from None


def from_dict(values: dict, where: str = "options") -> dict:
    """Check that `values` only names declared options; values are checked by TrainConfig.check."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a JSON object of options, got {type(values).__name__}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dict(values)


def read_config_file(path: Path) -> dict:
    """Options from a JSON file: an object of option names, or a run's metrics.json (its `config`)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid JSON ({e})") from None
    if isinstance(values, dict) and isinstance(values.get("config"), dict) and "history" in values:
        values = values["config"]      # a run's metrics.json repeats that run
    return from_dict(values, f"config file {path}")


def resolve(preset: str | None = None, config: dict | None = None, explicit: dict | None = None) -> TrainConfig:
    """A checked TrainConfig from, in rising priority: the defaults, a preset, a config file's
    options, and options given explicitly (None means not given)."""
    from .presets import PRESETS

    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    chosen = dict(PRESETS[preset]) if preset else {}
    chosen |= config or {}
    chosen |= {k: v for k, v in from_dict(explicit or {}).items() if v is not None}
    for f in fields(TrainConfig):      # people write 1 where a float is meant, and 2.0 for an int
        value = chosen.get(f.name)
        if f.type == "float" and type(value) is int:
            chosen[f.name] = float(value)
        elif f.type == "int" and type(value) is float and value.is_integer():
            chosen[f.name] = int(value)
    cfg = TrainConfig(**chosen)
    cfg.check()
    return cfg
