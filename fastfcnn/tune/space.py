"""Search spaces: reading, parsing, checking against the data, sampling and describing."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import TrainConfig, _check_type, flag, option_fields, parse_hidden, show
from ..errors import UserError

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
