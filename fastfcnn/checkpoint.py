"""Checkpoints: everything a run needs to continue bit for bit, in one .npz written atomically.

A checkpoint holds the model (as model.npz stores it), the optimizer state, the generator state of
the run's np.random.default_rng, where the run stands (epochs done, and inside an interrupted epoch
its permutation, next step and running sums), the history, the best weights under --patience, the
config, and fingerprints of the data and the code. Restoring it into a Trainer built from the same
config and data reproduces the uninterrupted run exactly (same engine and thread count).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import __version__
from .errors import UserError
from .files import read_npz, save_npz
from .model import check_model, model_arrays, model_from_arrays

CHECKPOINT = "checkpoint.npz"
FORMAT = 1


def data_fingerprint(data) -> dict:
    """Shapes, dtypes, classes and a hash of the labels: enough to tell another dataset apart
    without reading every pixel again."""
    h = hashlib.sha256()
    for y in (data.y_train, data.y_test):
        if y is not None:
            h.update(np.ascontiguousarray(y, np.int64).tobytes())
    return {"x_train": [list(data.x_train.shape), str(data.x_train.dtype)],
            "x_test": None if data.x_test is None else [list(data.x_test.shape), str(data.x_test.dtype)],
            "image_shape": None if data.image_shape is None else list(data.image_shape),
            "classes": list(data.class_names), "labels_sha256": h.hexdigest()}


def save_checkpoint(path: Path, trainer, extra: dict) -> None:
    """Write trainer's whole state to `path` (temporary name, fsync, rename, fsync of the folder).
    extra: JSON-able facts the caller keeps with it (data source, thread count, ...)."""
    t = trainer
    arrays = {f"model/{k}": v for k, v in model_arrays(t.model).items()}
    arrays |= {f"first/{i}": a for i, a in enumerate(t.opt.first)}
    arrays |= {f"second/{i}": a for i, a in enumerate(t.opt.second)}
    arrays |= {f"best/{i}": a for i, a in enumerate(t.best_params)}
    if t.order is not None:
        arrays["order"] = t.order
    state = {
        "format": FORMAT, "version": __version__, "config": t.model.config, "updates": t.opt.updates,
        "rng": t.rng.bit_generator.state, "epoch": t.epoch, "stopped": t.stopped, "pos": t.pos,
        "loss_sum": t.loss_sum, "correct": t.correct, "seconds": t.seconds, "history": t.history,
        "best_epoch": t.best_epoch, "best_val_accuracy": t.best_val_accuracy,
        "data": data_fingerprint(t.data), **extra,
    }
    arrays["state"] = np.array(json.dumps(state))
    save_npz(path, arrays)


def load_checkpoint(path: Path) -> dict:
    """{'state': dict, 'model': Model, 'first': [...], 'second': [...], 'best': [...], 'order': array or None};
    any problem with the file is one UserError naming it."""
    def read(z):
        files = set(z.files)
        if "state" not in files:
            raise UserError(f"not a fastfcnn checkpoint: {path} (no state)")
        state = json.loads(str(z["state"]))
        if not isinstance(state, dict):
            raise UserError(f"not a fastfcnn checkpoint: {path} (its state is not an object)")
        if state.get("format") != FORMAT:
            raise UserError(f"not a fastfcnn checkpoint: {path} (format {state.get('format')!r}, "
                            f"this fastfcnn reads {FORMAT})")
        model = model_from_arrays({k[6:]: z[k] for k in files if k.startswith("model/")}, path)

        def group(name):
            n = sum(1 for k in files if k.startswith(name + "/"))
            return [np.asarray(z[f"{name}/{i}"]) for i in range(n)]

        return {"state": state, "model": model, "first": group("first"), "second": group("second"),
                "best": group("best"), "order": z["order"] if "order" in files else None}

    ckpt = read_npz(path, "fastfcnn checkpoint", read)
    state = ckpt["state"]
    check_model(ckpt["model"], path)
    needed = ("rng", "epoch", "pos", "history", "config", "data", "updates")
    missing = [k for k in needed if k not in state]
    if missing:
        raise UserError(f"not a valid fastfcnn checkpoint: {path} (state lacks {', '.join(missing)})")
    return ckpt


# Options that may differ on resume: they do not change what the remaining steps compute
# (epochs stretches the schedule from where the run stands, which the caller announces).
RESUMABLE_CHANGES = {"epochs"}


def config_differences(saved: dict, wanted: dict) -> list[str]:
    """Names of options whose values differ between a checkpoint's config and the requested one.
    An option the checkpoint lacks was added to fastfcnn after it was written: the run used what
    is now its default (precision fp32, say)."""
    from .config import defaults
    saved = defaults() | saved
    return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))


def restore(trainer, ckpt: dict, path) -> None:
    """Put the checkpoint's state into a Trainer built from the same config and data."""
    t, state = trainer, ckpt["state"]
    shapes = [p.shape for p in t.params]
    bad = f"checkpoint {path} does not fit this run"
    m = ckpt["model"]
    got = m.weights + m.biases
    if [g.shape for g in got] != shapes:
        raise UserError(f"{bad} (layer shapes differ)")
    for dst, src in zip(t.params, got):
        np.copyto(dst, src)
    for name, dsts in (("first", t.opt.first), ("second", t.opt.second), ("best", t.best_params)):
        srcs = ckpt[name]
        if [s.shape for s in srcs] != [d.shape for d in dsts]:
            raise UserError(f"{bad} (its {name} optimizer or best-weight state does not match the options)")
        for dst, src in zip(dsts, srcs):
            np.copyto(dst, src)
    t.opt.updates = int(state["updates"])
    t.rng.bit_generator.state = state["rng"]
    t.epoch, t.stopped, t.pos = int(state["epoch"]), bool(state.get("stopped", False)), int(state["pos"])
    t.loss_sum, t.correct, t.seconds = float(state["loss_sum"]), int(state["correct"]), float(state["seconds"])
    t.history = list(state["history"])
    t.best_epoch, t.best_val_accuracy = state.get("best_epoch"), float(state.get("best_val_accuracy", -1.0))
    order = ckpt["order"]
    if order is not None:
        if order.shape != t.train_idx.shape or not np.array_equal(np.sort(order), t.train_idx):
            raise UserError(f"{bad} (its epoch order is not a permutation of this run's training rows)")
        t.order = np.asarray(order, np.int64)
    else:
        t.order = None
