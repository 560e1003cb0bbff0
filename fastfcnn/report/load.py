"""Reading what `fastfcnn report` draws: run directories, `fastfcnn bench --json` files, and the
test images of a dataset matched to a run's stored predictions. Every problem is a UserError
naming the file and what is wrong with it."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import read_npz
from ..fit import confusion_matrix

HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_accuracy")
OPTIONAL_HISTORY_KEYS = ("val_loss", "val_accuracy")
RESULT_KEYS = ("test_loss", "test_accuracy", "test_accuracy_flip_tta", "val_accuracy", "epoch")


@dataclass
class Run:
    """A run directory as far as the report needs it.

    confusion is the (K, K) test-set confusion matrix from metrics.json (rows = true class), None
    while the run is still training or when it had no test set; predictions holds y_true, y_pred
    and probs from predictions.npz, only when they belong to this metrics.json.
    """

    path: Path
    name: str
    metrics: dict
    confusion: np.ndarray | None = None
    predictions: dict | None = None
    notes: list = field(default_factory=list)
    colour: str = "C0"              # the run's colour in every panel (set by report_figure)

    @property
    def history(self) -> list:
        return self.metrics["history"]

    @property
    def status(self) -> str:
        """'finished', 'running', 'interrupted' or 'diverged' (as `fastfcnn train` records it)."""
        status = self.metrics.get("status")
        if isinstance(status, str):
            return status
        return "finished" if "final" in self.metrics else "running"

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def classes(self) -> list:
        names = (self.metrics.get("data") or {}).get("classes")
        if names:
            return [str(c) for c in names]
        k = 0 if self.confusion is None else len(self.confusion)
        return [str(i) for i in range(k)]

    @property
    def image_shape(self) -> tuple | None:
        shape = (self.metrics.get("data") or {}).get("image_shape")
        return None if shape is None else tuple(int(s) for s in shape)

    def final(self, key: str):
        """A value of metrics["final"] (test_accuracy, test_accuracy_flip_tta, ...), or None."""
        return (self.metrics.get("final") or {}).get(key)


def load_runs(paths) -> list:
    """load_run for each path; runs are named by their folder name (by the path as given when
    two folders share a name)."""
    paths = [Path(p) for p in paths]
    names = [p.resolve().name or str(p) for p in paths]
    runs = []
    for p, name in zip(paths, names):
        runs.append(load_run(p, name if names.count(name) == 1 else str(p)))
    return runs


def load_run(path: Path | str, name: str | None = None) -> Run:
    """Read metrics.json (and predictions.npz when the run has finished) of a run directory."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory")
    file = path / "metrics.json"
    if not file.is_file():
        raise UserError(f"{path} has no metrics.json: not a run directory of `fastfcnn train`, or no epoch has "
                        f"finished yet")
    try:
        metrics = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read {file}: it is corrupt or not JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{file} is corrupt: expected a JSON object, found {type(metrics).__name__}")
    history = metrics.get("history")
    if not isinstance(history, list) or not history:
        raise UserError(f"{file} has no training history (no finished epoch); nothing to draw")
    for record in history:
        bad = [k for k in HISTORY_KEYS if not isinstance(record, dict) or not _number(record.get(k))]
        bad += [k for k in OPTIONAL_HISTORY_KEYS if isinstance(record, dict) and not _number_or_none(record.get(k))]
        if bad:
            raise UserError(f"{file} is corrupt: a history record lacks a number for {', '.join(bad)}")
    problem = _metrics_problem(metrics)
    if problem:
        raise UserError(f"{file} is corrupt: {problem}")
    run = Run(path, name or path.resolve().name, metrics)
    if "confusion_matrix" in metrics and run.finished:
        run.confusion = _confusion(metrics["confusion_matrix"], file, len(run.classes))
        run.predictions = _predictions(path / "predictions.npz", run)
    return run


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number_or_none(x) -> bool:
    return x is None or _number(x)


def _metrics_problem(m: dict) -> str | None:
    """What, beyond the history, makes metrics.json unusable for the report (None if nothing)."""
    for key in ("config", "data", "final", "best"):
        if m.get(key) is not None and not isinstance(m[key], dict):
            return f"{key} is not an object"
    for key in ("final", "best"):
        bad = [k for k in RESULT_KEYS if not _number_or_none((m.get(key) or {}).get(k))]
        if bad:
            return f"{key}.{bad[0]} is not a number"
    data = m.get("data") or {}
    classes, shape = data.get("classes"), data.get("image_shape")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return "data.classes is not a list of names"
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3
                                  and all(isinstance(v, int) and v > 0 for v in shape)):
        return "data.image_shape is not [channels, height, width]"
    return None


def _confusion(value, file: Path, n_classes: int) -> np.ndarray:
    try:
        cm = np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError):
        cm = None
    if cm is None or cm.ndim != 2 or cm.shape[0] != cm.shape[1] or (cm < 0).any():
        raise UserError(f"{file} is corrupt: confusion_matrix is not a square matrix of counts")
    if n_classes and cm.shape[0] != n_classes:
        raise UserError(f"{file} is corrupt: confusion_matrix is {cm.shape[0]}x{cm.shape[0]} but the data has "
                        f"{n_classes} classes")
    return cm


def _predictions(file: Path, run: Run) -> dict | None:
    """predictions.npz, if present and consistent with metrics.json (a stale file is noted and skipped)."""
    if not file.is_file():
        run.notes.append(f"{run.name}: no predictions.npz, so no mistakes can be shown")
        return None
    preds = read_npz(file, "run's test-set predictions", lambda z: {k: z[k] for k in ("y_true", "y_pred", "probs")})
    y_true, y_pred, probs = preds["y_true"], preds["y_pred"], preds["probs"]
    n, k = len(y_true) if y_true.ndim == 1 else -1, len(run.confusion)
    shapes_ok = (y_true.ndim == 1 and y_true.dtype.kind in "iu" and y_pred.dtype.kind in "iu"
                 and y_pred.shape == (n,) and probs.shape == (n, k)
                 and ((y_true >= 0) & (y_true < k)).all() and ((y_pred >= 0) & (y_pred < k)).all())
    if not shapes_ok or not np.array_equal(confusion_matrix(y_true, y_pred, k), run.confusion):
        run.notes.append(f"{run.name}: predictions.npz does not match metrics.json (left from another run?); "
                         f"not used")
        return None
    return preds



# ---------------------------------------------------------------------------------------------
# Bench files

def load_bench(path: Path | str) -> dict:
    """A `fastfcnn bench --json` report, checked to hold what the bench picture needs."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--bench {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read {path}: it is corrupt or not JSON ({e})") from None
    problem = bench_problem(report)
    if problem:
        raise UserError(f"{path} is not a `fastfcnn bench --json` file: {problem}")
    return report


def bench_problem(report) -> str | None:
    """Why `report` is not a bench report (None when it is one)."""
    if not isinstance(report, dict):
        return "expected a JSON object"
    nets = report.get("nets")
    if not isinstance(nets, dict) or not nets:
        return "no 'nets' object"
    for net, r in nets.items():
        engines = r.get("engines") if isinstance(r, dict) else None
        if not isinstance(engines, dict) or not engines:
            return f"net {net!r} has no 'engines'"
        for engine, e in engines.items():
            if not isinstance(e, dict) or not _number(e.get("epoch_seconds_per_50k")):
                return f"engine {engine!r} of net {net!r} has no epoch time"
            phases = e.get("phases_ms", {})
            if not isinstance(phases, dict) or not all(_number(v) for v in phases.values()):
                return f"engine {engine!r} of net {net!r} has malformed phases_ms"
            bad = [k for k in ("step_ms", "matmul_gflops", "matmul_pct_of_sgemm") if not _number(e.get(k, 0))]
            if bad:
                return f"engine {engine!r} of net {net!r}: {bad[0]} is not a number"
        layers = r.get("layers", [])
        if not isinstance(layers, list) or not all(isinstance(l, list) and len(l) == 3 for l in layers):
            return f"net {net!r} has malformed layers"
    return None


# ---------------------------------------------------------------------------------------------
# Test images for the mistakes grid

def test_images(run: Run, data, rows: np.ndarray) -> np.ndarray:
    """The test images `rows` (indices into the run's test set) of Dataset `data` as (n, H, W, C)
    uint8, after checking that `data` holds the test set the run was evaluated on."""
    shape = run.image_shape
    if data.image_shape is None or tuple(data.image_shape) != shape:
        have = "feature vectors" if data.image_shape is None else "images " + "x".join(map(str, data.image_shape))
        raise UserError(f"the data given holds {have}, but run {run.name} was trained on images "
                        f"{'x'.join(map(str, shape))}")
    index = {c: i for i, c in enumerate(run.classes)}
    missing = [c for c in data.class_names if c not in index]
    if missing:
        raise UserError(f"the data given has classes the run {run.name} does not know: {', '.join(missing[:5])}")
    y = np.asarray([index[c] for c in data.class_names], np.int64)[np.asarray(data.y_test, np.int64)] \
        if data.y_test is not None else np.zeros(0, np.int64)
    if not np.array_equal(y, run.predictions["y_true"]):
        raise UserError(f"the data given is not the test set run {run.name} was evaluated on "
                        f"({len(y)} test labels given, {len(run.predictions['y_true'])} stored, or in another order)")
    c, h, w = shape
    return np.ascontiguousarray(data.x_test[rows].reshape(len(rows), c, h, w).transpose(0, 2, 3, 1))
