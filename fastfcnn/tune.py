"""Hyperparameter search with Optuna: the library behind `fastfcnn tune`.

A study searches TrainConfig: every name of a search space is a training option. Each trial
samples a config, trains it with `fit` on the training split with the test set removed (the
search never looks at the test set), reports the validation accuracy after every epoch so a
pruner can stop hopeless trials, and is scored by the validation accuracy of the model the
config produces: the final epoch's, or with --patience the best epoch's (the model kept in
best.npz). The best trial's config is written as best.json, which `fastfcnn train --config`
retrains.

Studies live in an Optuna RDB storage: a SQLite file in the study directory by default, or any
SQLAlchemy URL (PostgreSQL for workers on many machines). Heartbeats are on: a trial whose
worker died stops beating, is marked FAIL by the next worker that looks, and is queued again
(at most MAX_RETRY times) with the same parameters.

Search space files (JSON or TOML) map option names to one of:

    value                          fixed for every trial, e.g. optimizer = "sgd"
    {choices = [a, b, ...]}        one of these values
    {low = a, high = b}            a number in [a, b]; log = true for a log scale, step = s for a grid
    {by = "optimizer", sgd = SPEC, adamw = SPEC}   a SPEC per value of an earlier option
    hidden = {depth = SPEC, width = SPEC}          depth, then one width per layer

An entry replaces the default space's entry of that option; --no-default-space searches only
the file's entries. Options given on the command line are fixed and leave the space.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .config import TrainConfig, _check_type, flag, option_fields, parse_hidden, show
from .errors import UserError

HEARTBEAT_SECONDS = 30   # a running trial's worker writes a heartbeat this often...
GRACE_SECONDS = 120      # ...and one silent this long is taken as dead: FAIL, then queued again
MAX_RETRY = 2            # a trial whose worker died is run again at most this many times
PRUNERS = ("median", "hyperband", "none")
FIELDS = {f.name: f for f in option_fields()}
ORDER = list(FIELDS)     # sampling order: an option may depend on those declared before it

# Options that only matter when an earlier one has a certain value: not sampled otherwise.
ONLY_IF = {
    "momentum": lambda c: c["optimizer"] == "sgd",
    "nesterov": lambda c: c["optimizer"] == "sgd",
    "beta1": lambda c: c["optimizer"] != "sgd",
    "beta2": lambda c: c["optimizer"] != "sgd",
    "adam_eps": lambda c: c["optimizer"] != "sgd",
    "crop_mode": lambda c: c["crop_pad"] > 0,
    "whiten_dims": lambda c: c["whiten"] == "pca",
    "whiten_eps": lambda c: c["whiten"] != "none",
}
IMAGE_ONLY = ("crop_pad", "crop_mode", "flip")
NOT_SEARCHABLE = {"val_size": "every trial is scored on the same validation split; set it with --val-size"}

_SGD_LR = {"low": 0.005, "high": 0.5, "log": True}
_ADAM_LR = {"low": 1e-4, "high": 1e-2, "log": True}
_L2 = {"low": 1e-5, "high": 1e-2, "log": True}

# The default space for fully connected nets (JSON-like; warm-up and crops are fitted to the
# epochs and the data by `build_space`).
DEFAULT_SPACE = {
    "hidden": {"depth": {"low": 1, "high": 3}, "width": {"choices": [128, 256, 512, 1024]}},
    "batch_size": {"choices": [64, 128, 256, 512]},
    "optimizer": {"choices": ["sgd", "adamw"]},
    "lr": {"by": "optimizer", "sgd": _SGD_LR, "adam": _ADAM_LR, "adamw": _ADAM_LR},
    "momentum": {"low": 0.8, "high": 0.95},
    "nesterov": {"choices": [False, True]},
    "weight_decay": {"by": "optimizer", "sgd": _L2, "adam": _L2, "adamw": {"low": 1e-3, "high": 0.3, "log": True}},
    "lr_schedule": {"choices": ["cosine", "onecycle", "step"]},
    "warmup_epochs": {"low": 0.0, "high": 3.0},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "dropout": {"low": 0.0, "high": 0.5},
    "crop_pad": {"low": 0, "high": 4},
    "flip": {"choices": [False, True]},
}


def _say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------
# Search spaces: parsing and checking. A parsed space maps option names to specs, plain dicts
# (so they travel as JSON to worker processes and into the study's attributes):
#   {"type": "fixed", "value": v}             {"type": "choices", "choices": [...]}
#   {"type": "range", "low", "high", "log", "step", "int"}
#   {"type": "layers", "depth": spec, "width": spec}   {"type": "by", "by": name, "cases": {key: spec}}

def read_space(path: Path) -> dict:
    """The entries of a --space file (.json or .toml), parsed and checked (not yet against data)."""
    path = Path(path)
    where = f"--space {path}"
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read {where}: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise UserError(f"{where} is not valid JSON ({e})") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:       # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise UserError(f"{where}: reading TOML needs Python 3.11 or the tomli package; "
                                "or write the space as JSON") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{where} is not valid TOML ({e})") from None
    else:
        raise UserError(f"{where}: a search space file must end in .json or .toml")
    return parse_space(raw, where)


def parse_space(raw, where: str = "search space") -> dict:
    """Check a space given as option name -> value or spec; return the parsed specs."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a table of training options, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}; every name must be a training "
                        f"option: {', '.join(FIELDS)}")
    space = {}
    for name, entry in raw.items():
        if name in NOT_SEARCHABLE:
            raise UserError(f"{where}: {name} cannot be in a search space: {NOT_SEARCHABLE[name]}")
        space[name] = _parse_entry(name, entry, f"{where}: {name}", allow_by=True)
    return space


def _parse_entry(name: str, entry, where: str, allow_by: bool) -> dict:
    kind = FIELDS[name].type
    if not isinstance(entry, dict):
        return {"type": "fixed", "value": _value(name, entry, where)}
    keys = set(entry)
    if "by" in keys:
        if not allow_by:
            raise UserError(f"{where}: a 'by' entry cannot hold another 'by'")
        return _parse_by(name, entry, where)
    if keys == {"choices"}:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list")
        return {"type": "choices", "choices": [_value(name, c, f"{where}: choice {c!r}") for c in choices]}
    if kind == "list" and keys and keys <= {"depth", "width"}:
        if keys != {"depth", "width"}:
            raise UserError(f"{where}: give both depth and width, e.g. {{depth = {{low = 1, high = 3}}, "
                            "width = {choices = [256, 512]}}")
        return {"type": "layers", "depth": _int_spec(entry["depth"], 0, f"{where}: depth"),
                "width": _int_spec(entry["width"], 1, f"{where}: width")}
    if keys and keys <= {"low", "high", "log", "step"} and {"low", "high"} <= keys:
        if kind not in ("int", "float"):
            raise UserError(f"{where}: a range needs a numeric option; {name} takes a value or "
                            "{choices = [...]}" + (" or {depth = ..., width = ...}" if kind == "list" else ""))
        return _range(entry, kind == "int", where, lambda v, w: _value(name, v, w))
    raise UserError(f"{where}: expected a value, {{choices = [...]}}, {{low = A, high = B[, log = true][, step = S]}}"
                    f", or {{by = OPTION, VALUE = ...}}; got the keys {', '.join(sorted(map(str, keys))) or 'none'}")


def _range(entry: dict, is_int: bool, where: str, check) -> dict:
    low, high = entry["low"], entry["high"]
    log, step = entry.get("log", False), entry.get("step")
    for key, v in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (is_int and not isinstance(v, int)):
            raise UserError(f"{where}: {key} must be {'an integer' if is_int else 'a number'}, got {v!r}")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    low, high = check(low, f"{where}: low"), check(high, f"{where}: high")
    if low > high:
        raise UserError(f"{where}: low ({show(low)}) is above high ({show(high)})")
    if log and low <= 0:
        raise UserError(f"{where}: a log scale needs low > 0, got {show(low)}")
    if log and step is not None:
        raise UserError(f"{where}: give log or step, not both")
    if step is not None and step <= 0:
        raise UserError(f"{where}: step must be positive, got {step}")
    return {"type": "range", "low": low, "high": high, "log": log, "step": step, "int": is_int}


def _int_spec(entry, least: int, where: str) -> dict:
    """A spec of the depth or of the layer widths of hidden: an int, choices or a range."""
    def check(v, w):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise UserError(f"{w} must be an integer of at least {least}, got {v!r}")
        return v

    if not isinstance(entry, dict):
        return {"type": "fixed", "value": check(entry, where)}
    if set(entry) == {"choices"} and isinstance(entry["choices"], list) and entry["choices"]:
        return {"type": "choices", "choices": [check(c, f"{where}: choice") for c in entry["choices"]]}
    if set(entry) <= {"low", "high", "log", "step"} and {"low", "high"} <= set(entry):
        return _range(entry, True, where, check)
    raise UserError(f"{where}: expected an integer, {{choices = [...]}} or {{low = A, high = B[, log = true]}}")


def _parse_by(name: str, entry: dict, where: str) -> dict:
    target = entry["by"]
    if target not in FIELDS or FIELDS[target].type not in ("str", "bool", "int"):
        choices = ", ".join(n for n in ORDER if FIELDS[n].type in ("str", "bool", "int"))
        raise UserError(f"{where}: by must name an option with a few values ({choices}), got {target!r}")
    if ORDER.index(target) >= ORDER.index(name):
        raise UserError(f"{where}: by = {target!r} must be an option decided before {name}; the order is "
                        f"{', '.join(ORDER)}")
    cases = {}
    for key, spec in entry.items():
        if key == "by":
            continue
        _value(target, _from_key(target, key, where), f"{where}: case {key!r}")
        cases[key] = _parse_entry(name, spec, f"{where}: {key}", allow_by=False)
    if not cases:
        raise UserError(f"{where}: give a spec for at least one value of {target}")
    return {"type": "by", "by": target, "cases": cases}


def _from_key(target: str, key: str, where: str):
    kind = FIELDS[target].type
    if kind == "bool":
        if key not in ("true", "false"):
            raise UserError(f"{where}: the cases of {target} are true and false, got {key!r}")
        return key == "true"
    if kind == "int":
        try:
            return int(key)
        except ValueError:
            raise UserError(f"{where}: the cases of {target} are integers, got {key!r}") from None
    return key


def _case_key(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _value(name: str, value, where: str):
    """One value of option `name`, converted like config.resolve does and checked like TrainConfig."""
    f = FIELDS[name]
    if f.type == "list" and isinstance(value, str):
        value = parse_hidden(value)
    if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        _check_type(f, value)
        ok = f.metadata["check"]
        if ok is not None and not ok(value):
            raise UserError(f"{flag(name)} {f.metadata['must']}, got {show(value)}")
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return value


def build_space(user: dict, base: TrainConfig, fixed: set, data, use_defaults: bool = True) -> dict:
    """The space a study searches: the defaults (fitted to the epochs and the data) overridden
    by the user's entries, less the options fixed on the command line; checked against `data`."""
    epochs_spec = user.get("epochs") if "epochs" not in fixed else None
    epochs_fixed = epochs_spec is None or epochs_spec["type"] == "fixed"
    epochs = epochs_spec["value"] if epochs_spec and epochs_fixed else base.epochs
    defaults = parse_space(DEFAULT_SPACE, "default space") if use_defaults else {}
    if "warmup_epochs" in defaults:
        defaults["warmup_epochs"]["high"] = min(3.0, epochs / 4)
    if data.image_shape is None:
        for name in IMAGE_ONLY:
            defaults.pop(name, None)
    elif "crop_pad" in defaults:
        defaults["crop_pad"]["high"] = min(defaults["crop_pad"]["high"], min(data.image_shape[1:]) - 1)
    space = {k: v for k, v in (defaults | user).items() if k not in fixed}
    where = "--space"

    def values(spec):
        t = spec["type"]
        if t == "fixed":
            return [spec["value"]]
        if t == "choices":
            return spec["choices"]
        if t == "range":
            return [spec["low"], spec["high"]]
        if t == "by":
            return [v for s in spec["cases"].values() for v in values(s)]
        return []

    for name, spec in user.items():
        if name not in space:
            continue
        vals = values(spec)
        if data.image_shape is None and name in IMAGE_ONLY and spec["type"] != "fixed":
            raise UserError(f"{where}: {name} augments images; this dataset holds feature vectors")
        if name == "crop_pad" and data.image_shape is not None and base.crop_mode == "reflect" \
                and "crop_mode" not in space and max(vals) >= min(data.image_shape[1:]):
            raise UserError(f"{where}: crop_pad with reflect padding must stay below the image side "
                            f"({min(data.image_shape[1:])}), got up to {max(vals)}")
        if name == "whiten_dims" and max(vals) > data.n_features:
            raise UserError(f"{where}: whiten_dims must be at most {data.n_features}, the number of input "
                            f"features, got up to {max(vals)}")
        if name == "warmup_epochs" and epochs_fixed and max(vals) > epochs:
            raise UserError(f"{where}: warmup_epochs must be at most --epochs ({epochs}), got up to "
                            f"{show(float(max(vals)))}")
    # The fixed entries and the base must make a valid config on this data.
    probe = base.to_dict() | {k: s["value"] for k, s in space.items() if s["type"] == "fixed"}
    cfg = TrainConfig(**probe)
    cfg.check()
    cfg.check_data(data)
    return space


def sample(space: dict, base: dict, trial) -> dict:
    """A full config (every TrainConfig field): the base with the space's options drawn by
    `trial`, in declaration order, skipping options that do not apply (momentum without sgd...)."""
    cfg = dict(base)
    for name in ORDER:
        spec = space.get(name)
        if spec is None or (name in ONLY_IF and not ONLY_IF[name](cfg)):
            continue
        param = name
        if spec["type"] == "by":
            key = _case_key(cfg[spec["by"]])
            if key not in spec["cases"]:
                continue
            spec, param = spec["cases"][key], f"{name}_{key}"
        cfg[name] = _suggest(trial, param, spec, hidden=name == "hidden")
    if cfg["warmup_epochs"] > cfg["epochs"]:      # only when the epochs are searched too
        cfg["warmup_epochs"] = float(cfg["epochs"])
    return cfg


def _suggest(trial, param: str, spec: dict, hidden: bool = False):
    t = spec["type"]
    if t == "fixed":
        return spec["value"]
    if t == "choices":
        if hidden:     # Optuna's choices are scalars: architectures travel as "512,512" ("none": linear)
            pick = trial.suggest_categorical(param, [",".join(map(str, c)) or "none" for c in spec["choices"]])
            return parse_hidden(pick)
        return trial.suggest_categorical(param, spec["choices"])
    if t == "range":
        if spec["int"]:
            return trial.suggest_int(param, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        return trial.suggest_float(param, spec["low"], spec["high"], step=spec["step"], log=spec["log"])
    if t == "layers":
        depth = _suggest(trial, "depth", spec["depth"])
        return [_suggest(trial, f"width_{i + 1}", spec["width"]) for i in range(depth)]
    raise AssertionError(t)


def describe_space(space: dict) -> str:
    """One line per searched option, e.g. 'lr: by optimizer: sgd 0.005..0.5 (log), ...'."""
    def one(spec):
        t = spec["type"]
        if t == "fixed":
            return show(spec["value"])
        if t == "choices":
            return "{" + ", ".join(show(c) for c in spec["choices"]) + "}"
        if t == "range":
            step = f" step {show(spec['step'])}" if spec["step"] else ""
            return f"{show(spec['low'])}..{show(spec['high'])}{' (log)' if spec['log'] else ''}{step}"
        if t == "layers":
            return f"depth {one(spec['depth'])}, widths {one(spec['width'])}"
        return f"by {spec['by']}: " + "; ".join(f"{k} {one(s)}" for k, s in spec["cases"].items())
    return "\n".join(f"  {name}: {one(space[name])}" for name in ORDER if name in space)


# ---------------------------------------------------------------------------------------------
# Storage and studies

def check_study_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise UserError(f"--study must be a name of letters, digits, '.', '_' and '-', got {name!r}")


def sqlite_url(study_dir: Path) -> str:
    return "sqlite:///" + str((Path(study_dir) / "study.db").resolve())


def redact(url: str) -> str:
    """The URL with its password hidden."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def _reason(e: BaseException) -> str:
    inner = getattr(e, "orig", None) or e
    text = " ".join(str(inner).split())
    return text if isinstance(e, UserError) else f"{type(inner).__name__}: {text}"


def _quiet_optuna():
    import optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS):
    """An Optuna RDBStorage with heartbeats on and stale trials queued again; UserError when the
    URL is malformed, its driver missing or its server unreachable."""
    import optuna
    _quiet_optuna()
    given, url = url, with_driver(url)
    scheme = url.split(":", 1)[0].lower()
    engine_kwargs = {}
    if scheme.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}   # workers wait for each other's writes
    elif scheme.startswith(("postgresql", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    callback = ({"heartbeat_stale_trial_callback": retry(max_retry=MAX_RETRY)} if retry else
                {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)})
    if heartbeat < 1 or grace < 1:
        raise UserError("--heartbeat and --grace must be at least 1 second")
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat),
                                              grace_period=int(grace), **callback)
        except Exception as e:
            if attempt < 3 and _creation_race(e):
                time.sleep(0.5 + attempt)      # workers started together all create the tables: let one win
                continue
            raise UserError(f"cannot open storage {redact(given)}: {_reason(e)}") from None


def _creation_race(e: Exception) -> bool:
    """Whether `e` is another worker creating the same tables, types or rows at the same moment."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError
    return isinstance(e, (IntegrityError, ProgrammingError)) and any(
        word in str(e).lower() for word in ("already exists", "duplicate", "unique"))


def with_driver(url: str) -> str:
    """postgres:// and postgresql:// URLs with the PostgreSQL driver that is installed: SQLAlchemy 2.1
    picks psycopg (3) for a bare postgresql://, fastfcnn[tune] installs psycopg2."""
    import importlib.util

    if url.startswith("postgres://"):          # SQLAlchemy only knows postgresql://
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _pruner(name: str, max_epochs: int):
    import optuna
    if name == "median":
        # judged from epoch 2 on, once 4 trials have completed
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def _sampler(trials: int):
    import optuna
    # constant_liar: parallel workers see each other's running trials and spread out
    return optuna.samplers.TPESampler(n_startup_trials=max(3, min(10, trials // 3)), constant_liar=True)


def open_study(storage, name: str, create: bool = True, trials: int = 20, pruner: str = "median",
               max_epochs: int = 20):
    """The study `name` in `storage`: created (or loaded, to resume or join it) when `create`,
    else loaded, with UserError if it does not exist."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    kwargs = {"sampler": _sampler(trials), "pruner": _pruner(pruner, max_epochs)}
    try:
        if create:
            for attempt in range(3):
                try:
                    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                                load_if_exists=True, **kwargs)
                    break
                except SQLAlchemyError as e:     # another worker creating the same study just now
                    if attempt == 2 or not _creation_race(e):
                        raise
                    time.sleep(0.5)
        else:
            try:
                study = optuna.load_study(study_name=name, storage=storage, **kwargs)
            except KeyError:
                names = optuna.get_all_study_names(storage)
                there = f"; it holds: {', '.join(names)}" if names else "; it holds no study"
                raise UserError(f"no study named {name!r} in {redact(storage.url)}{there}") from None
    except SQLAlchemyError as e:
        raise UserError(f"storage {redact(storage.url)}: {_reason(e)}") from None
    except ValueError as e:
        raise UserError(f"study {name!r}: {e}") from None
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study {name!r} in {redact(storage.url)} was not made by fastfcnn tune "
                        "(it does not maximise one value)")
    return study


def describe_data(data) -> dict:
    return {"kind": data.kind, "image_shape": None if data.image_shape is None else list(data.image_shape),
            "n_features": int(data.n_features), "n_train": int(len(data.y_train)), "classes": list(data.class_names)}


def adopt(study, space: dict, base: dict, data_desc: dict) -> list:
    """Record what this study searches on first use; on later use check the data is the same.
    Returns notes to print (a changed space or base options: allowed, the trials will mix)."""
    for attempt in range(3):
        try:
            return _adopt(study, space, base, data_desc)
        except Exception as e:
            if attempt == 2 or not _creation_race(e):
                raise
            time.sleep(0.5)


def _adopt(study, space: dict, base: dict, data_desc: dict) -> list:
    attrs = study.user_attrs
    if "data" not in attrs:
        study.set_user_attr("data", data_desc)
        study.set_user_attr("space", space)
        study.set_user_attr("base", base)
        return []
    if attrs["data"] != data_desc:
        def brief(d):
            shape = "x".join(map(str, d["image_shape"])) if d["image_shape"] else f"{d['n_features']} features"
            return f"{d['n_train']} training rows, {shape}, {len(d['classes'])} classes"
        raise UserError(f"study {study.study_name!r} was run on other data ({brief(attrs['data'])}); this data has "
                        f"{brief(data_desc)}. Use another --study name")
    notes = []
    if attrs.get("space") != space:
        notes.append("note: this study was started with another search space; its trials will mix both")
    if attrs.get("base") != base:
        old = attrs.get("base") or {}
        diff = ", ".join(f"{k} {show(old.get(k))} -> {show(v)}" for k, v in base.items() if old.get(k) != v)
        notes.append(f"note: this study was started with other fixed options ({diff})")
    return notes


# ---------------------------------------------------------------------------------------------
# Trials

class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a trial (its checkpoint saved, the trial queued again); exit_code
    is 130 for SIGINT and 143 for SIGTERM."""

    def __init__(self, exit_code: int = 130):
        super().__init__()
        self.exit_code = exit_code


class TrialFailed(Exception):
    """A trial that failed by its own fault (a config that cannot work, a bug): recorded as FAIL
    with the reason in the user attribute 'error', counted, and the study goes on."""


@dataclass
class Settings:
    """Everything a worker needs (it travels to worker processes as JSON)."""

    study: str
    study_dir: str
    storage: str
    trials: int
    space: dict
    base: dict
    data: str | None = None
    data_dir: str | None = None
    image_size: list | None = None
    pruner: str = "median"
    threads: int | None = None
    heartbeat: int = HEARTBEAT_SECONDS
    grace: int = GRACE_SECONDS
    worker: int = 0

    @property
    def max_epochs(self) -> int:
        spec = self.space.get("epochs")
        if spec is None:
            return self.base["epochs"]
        return int(spec.get("high") or max(spec.get("choices") or [spec.get("value") or self.base["epochs"]]))


def without_test(data):
    """The dataset with its test set removed: the search must never look at it."""
    return replace(data, x_test=None, y_test=None)


def objective_value(metrics: dict) -> float:
    """A finished run's score: the validation accuracy of the model its config produces, the
    final epoch's, or the best epoch's with early stopping (--patience keeps that model)."""
    return metrics["best"]["val_accuracy"] if "best" in metrics else metrics["final"]["val_accuracy"]


class Objective:
    """Trains one sampled config in STUDY_DIR/trials/NNNN (fit's files, and trial.json).

    A trial that retries one whose worker died (queued by the heartbeat callback) or was stopped
    (Ctrl-C or SIGTERM: queued here) carries that trial's run_dir; when its checkpoint is there
    (same machine or a shared folder), the retry copies it and resumes from it.
    """

    def __init__(self, settings: Settings, data):
        self.s = settings
        self.data = without_test(data)

    def __call__(self, trial) -> float:
        import inspect
        import shutil

        import optuna

        from . import fit as fit_module
        from .config import resolve
        from .train import Diverged

        fit = fit_module.fit
        can_resume = "resume" in inspect.signature(fit).parameters
        interrupted = getattr(fit_module, "RunInterrupted", ())
        run_dir = Path(self.s.study_dir) / "trials" / f"{trial.number:04d}"
        previous = trial.user_attrs.get("run_dir")          # inherited by a retry
        values = sample(self.s.space, self.s.base, trial)
        trial.set_user_attr("config", values)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", f"{socket.gethostname()}:{os.getpid()}")
        if trial.user_attrs.get("resumed"):            # inherited from the trial this one retries
            trial.set_user_attr("resumed", None)
        history, events = [], {"resumed": False, "epochs": 0}

        def on_epoch(record):
            events["epochs"] += 1
            history.append(record)
            trial.report(record["val_accuracy"], record["epoch"])
            if record["epoch"] < values["epochs"] and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} at "
                                         f"{100 * record['val_accuracy']:.2f}% validation accuracy")

        def on_resume(epoch, pos, notes):
            events["resumed"] = True
            try:
                done = json.loads((run_dir / "metrics.json").read_text()).get("history", [])
            except (OSError, ValueError):
                done = []
            for r in done[:epoch]:
                history.append(r)
                if r.get("val_accuracy") is not None:
                    trial.report(r["val_accuracy"], r["epoch"])
            trial.set_user_attr("resumed", f"{previous} at epoch {epoch + 1}")

        def record(state, value=None, reason=None):
            from .files import save_json
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                save_json(run_dir / "trial.json", {"number": trial.number, "state": state, "value": value,
                                                   "reason": reason, "params": trial.params, "config": values,
                                                   "resumed_from": trial.user_attrs.get("resumed"),
                                                   "history": history})
            except OSError:
                pass

        def train(resume: bool):
            kwargs = {"out_dir": run_dir, "threads": self.s.threads, "on_epoch": on_epoch}
            if can_resume:
                kwargs |= {"resume": True, "on_resume": on_resume} if resume else {"force": True}
            return fit(cfg, self.data, **kwargs)

        try:
            cfg = resolve(None, values)
            cfg.check_data(self.data)
            resume = can_resume and self._take_checkpoint(previous, run_dir, shutil)
            try:
                result = train(resume)
            except UserError as e:
                if not resume or events["resumed"] or events["epochs"]:
                    raise
                # the checkpoint does not fit this trial (other epochs or data, another version): start afresh
                trial.set_user_attr("resume_refused", str(e))
                result = train(False)
        except optuna.TrialPruned as e:
            trial.set_user_attr("pruned", str(e))
            record("pruned", reason=str(e))
            raise
        except Diverged as e:        # hopeless, like a pruned trial: the sampler learns to avoid it
            trial.set_user_attr("error", str(e))
            record("pruned", reason=str(e))
            raise optuna.TrialPruned(str(e)) from None
        except UserError as e:
            trial.set_user_attr("error", str(e))
            record("failed", reason=str(e))
            raise TrialFailed(str(e)) from None
        except (KeyboardInterrupt, *((interrupted,) if interrupted else ())) as e:
            # Ctrl-C or SIGTERM: fit saved a checkpoint; queue the trial again so that running the
            # same command resumes it, and stop this worker.
            trial.set_user_attr("interrupted", True)
            record("interrupted", reason="stopped by a signal; queued again with its checkpoint")
            try:
                trial.study.enqueue_trial(trial.params, user_attrs={"run_dir": str(run_dir),
                                                                    "retry_of": trial.number})
            except Exception:
                pass
            raise Stopped(getattr(e, "exit_code", 130)) from None
        except Exception as e:       # a bug or an exhausted machine: keep the study going, say why
            reason = f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", reason)
            record("failed", reason=reason)
            traceback.print_exc()
            raise TrialFailed(reason) from None
        value = objective_value(result.metrics)
        record("complete", value=value)
        return value

    @staticmethod
    def _take_checkpoint(previous, run_dir: Path, shutil) -> bool:
        """Copy a retried trial's checkpoint (and its history) into this trial's run directory."""
        if not previous:
            return False
        src = Path(previous)
        if src.resolve() == run_dir.resolve() or not (src / "checkpoint.npz").is_file():
            return False
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in ("checkpoint.npz", "metrics.json"):
                if (src / name).is_file():
                    shutil.copyfile(src / name, run_dir / name)
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------------
# Workers

def counts(study) -> dict:
    """Trials by what they mean for the budget: done (complete, pruned, or failed by their own
    fault), running, waiting (queued retries), lost (worker died or interrupted: not counted)."""
    from optuna.trial import TrialState as S
    c = {"done": 0, "running": 0, "waiting": 0, "lost": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in (S.COMPLETE, S.PRUNED) or (t.state == S.FAIL and "error" in t.user_attrs):
            c["done"] += 1
        elif t.state == S.RUNNING:
            c["running"] += 1
        elif t.state == S.WAITING:
            c["waiting"] += 1
        else:
            c["lost"] += 1
    return c


def worker_loop(settings: Settings, study, data, log=_say) -> None:
    """Run trials until the study holds settings.trials done trials; the last workers wait for
    the trials still running elsewhere, retrying those whose worker dies."""
    from optuna.storages import fail_stale_trials

    objective = Objective(settings, data)
    reporter = Reporter(settings, log)
    waiting_said = False
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fail_stale_trials(study)
        c = counts(study)
        if c["done"] >= settings.trials:
            return
        if c["waiting"] or c["done"] + c["running"] < settings.trials:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[reporter])
            waiting_said = False
            continue
        if not waiting_said:
            log(f"{_tag(settings)}waiting for {c['running']} trial(s) running on other workers")
            waiting_said = True
        time.sleep(min(2, settings.heartbeat))


def _tag(settings: Settings) -> str:
    return f"[worker {settings.worker}] " if settings.worker else ""


class Reporter:
    """The live line per finished trial; best.json rewritten when a trial becomes the best."""

    def __init__(self, settings: Settings, log=_say):
        self.s, self.log = settings, log

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState as S
        best = _best(study)
        n, epochs = trial.number, len(trial.intermediate_values)
        head = f"{_tag(self.s)}trial {n:>4} "
        if trial.state == S.COMPLETE:
            line = f"{head}complete  val acc {100 * trial.value:6.2f}%  {epochs} epochs  {_duration(trial)}"
            if best is not None and best.number == n:
                line += "  (new best)"
                write_best(study, Path(self.s.study_dir))
            elif best is not None:
                line += f"  (best #{best.number}: {100 * best.value:.2f}%)"
        elif trial.state == S.PRUNED:
            why = trial.user_attrs.get("error") or trial.user_attrs.get("pruned") or "pruned"
            line = f"{head}pruned    {why}  {_duration(trial)}"
        else:
            line = f"{head}failed    {trial.user_attrs.get('error', 'interrupted')}"
        self.log(f"{line}\n{' ' * len(head)}{format_params(trial.params)}")


def _best(study):
    try:
        return study.best_trial
    except ValueError:
        return None


def write_best(study, study_dir: Path) -> Path | None:
    """Write the best complete trial's config as STUDY_DIR/best.json (only TrainConfig names, so
    `fastfcnn train --config` accepts it); None when no trial has completed."""
    from .files import save_json
    best = _best(study)
    if best is None:
        return None
    config = best.user_attrs.get("config")
    if not isinstance(config, dict):
        return None
    path = Path(study_dir) / "best.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, {k: config[k] for k in ORDER if k in config})
    return path


def launch_workers(settings: Settings, k: int, log=_say) -> list:
    """Start k worker processes (each a fresh Python that loads the data and joins the study);
    returns their exit codes once all have ended. Ctrl-C reaches the workers directly (one process
    group); a SIGTERM to this process is passed on to them. Either way each worker saves its
    trial's checkpoint and queues the trial again before it exits."""
    import signal

    code = "from fastfcnn.tune import worker_main; worker_main()"
    procs = []
    for i in range(k):
        env = dict(os.environ)
        if settings.threads:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(settings.threads)
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=env, text=True)
        # settings go through stdin: a storage URL may hold a password, which argv would show to ps
        p.stdin.write(json.dumps(asdict(replace(settings, worker=i + 1))))
        p.stdin.close()
        procs.append(p)

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward) if _main_thread() else None
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:    # the workers got the same Ctrl-C: let them save and queue their trials
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if any(c in (130, 143, -2, -15) for c in codes):
        raise Stopped(143 if any(c in (143, -15) for c in codes) else 130)
    return codes


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def worker_main() -> None:
    """Entry point of a worker process: settings as JSON on stdin."""
    settings = Settings(**json.loads(sys.stdin.read()))
    try:
        from .data import load_data
        storage = open_storage(settings.storage, settings.heartbeat, settings.grace)
        study = open_study(storage, settings.study, create=False, trials=settings.trials, pruner=settings.pruner,
                           max_epochs=settings.max_epochs)
        data = load_data(settings.data, data_dir=settings.data_dir, download=False,
                         image_size=tuple(settings.image_size) if settings.image_size else None)
        run_guarded(worker_loop, settings, study, data)
    except UserError as e:
        print(f"error: {_tag(settings)}{e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        sys.exit(getattr(e, "exit_code", 130))


def run_guarded(fn, *args, **kwargs):
    """Call fn, turning a storage failure in the middle of a study into a UserError."""
    from sqlalchemy.exc import SQLAlchemyError
    try:
        return fn(*args, **kwargs)
    except SQLAlchemyError as e:
        raise UserError(f"storage error: {_reason(e)}") from None


def default_threads(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, workers))


# ---------------------------------------------------------------------------------------------
# The trials table

def format_params(params: dict) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "(no searched parameters)"


def _seconds(trial) -> float | None:
    if trial.datetime_start is None:
        return None
    if trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _duration(trial) -> str:
    s = _seconds(trial)
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


def _note(trial) -> str:
    from optuna.trial import TrialState as S
    notes = []
    retried = trial.system_attrs.get("failed_trial", trial.user_attrs.get("retry_of"))
    if retried is not None:
        notes.append(f"retry of #{retried}")
    if trial.user_attrs.get("resumed"):
        notes.append(f"resumed {trial.user_attrs['resumed']}")
    if trial.state == S.FAIL:
        ua = trial.user_attrs
        notes.append(ua.get("error") or ("interrupted" if ua.get("interrupted") else "worker lost"))
    elif trial.state == S.PRUNED:
        notes.append(trial.user_attrs.get("error") or trial.user_attrs.get("pruned") or "pruned")
    return "; ".join(notes)


def ranked(study) -> list:
    """The trials best first: complete by value, pruned by their last value, then running,
    waiting and failed ones by number."""
    from optuna.trial import TrialState as S
    order = {S.COMPLETE: 0, S.PRUNED: 1, S.RUNNING: 2, S.WAITING: 3, S.FAIL: 4}

    def key(t):
        rank = order.get(t.state, 5)
        value = t.value if rank < 2 and t.value is not None else -math.inf
        return (rank, -value, t.number)
    return sorted(study.get_trials(deepcopy=False), key=key)


def trials_table(study) -> str:
    lines = [f"{'#':>5}  {'state':<9} {'val acc':>8} {'epochs':>6} {'time':>8}  params"]
    for t in ranked(study):
        value = "-" if t.value is None else f"{100 * t.value:.2f}%"
        params = t.params or t.system_attrs.get("fixed_params") or {}     # a queued trial's are fixed ones
        lines.append(f"{t.number:>5}  {t.state.name.lower():<9} {value:>8} {len(t.intermediate_values):>6} "
                     f"{_duration(t):>8}  {format_params(params)}")
        note = _note(t)
        if note:
            lines.append(f"{'':>41}  {note}")
    return "\n".join(lines)


def summary(study, settings_trials: int | None = None) -> str:
    """e.g. 'study big: 20 trials: 14 complete, 5 pruned, 1 failed; best #7 63.10% validation accuracy'."""
    from collections import Counter
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    parts = ", ".join(f"{n} {s}" for s, n in states.most_common())
    total = sum(states.values())
    best = _best(study)
    line = f"study {study.study_name}: {total} trial{'s' * (total != 1)}" + (f" ({parts})" if parts else "")
    if best is not None:
        line += f"; best #{best.number}: {100 * best.value:.2f}% validation accuracy"
    return line
