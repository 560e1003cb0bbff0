"""The library call behind `fastfcnn train`: a config and a dataset in, a trained model out.

`fit` trains, evaluates the final (and, with early stopping, the best) weights on the test set,
with flip test-time augmentation for nets trained on mirrored images, and writes the run
directory when given one. The CLI, the scikit-learn estimator and the tuner all start runs here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import network
from .config import TrainConfig
from .data import Dataset
from .engine import set_threads, versions
from .errors import UserError
from .files import save_json, save_npz
from .model import Model, save_model
from .train import Trainer


@dataclass
class RunResult:
    """What a run produced. metrics is the content of metrics.json."""

    model: Model
    history: list
    metrics: dict
    best_model: Model | None = None
    out_dir: Path | None = None

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics["test_accuracy"]


def fit(config: TrainConfig, data: Dataset, out_dir: Path | str | None = None, threads: int | None = None,
        on_epoch=None, on_step=None, preset: str | None = None) -> RunResult:
    """Train a net as `config` describes on `data`.

    Parameters
    ----------
    config : TrainConfig
        The options; checked here against each other and against the data.
    data : Dataset
        Training rows (a validation split is held out of them) and, when present, the test set.
    out_dir : path, optional
        Run directory: model.npz, metrics.json, predictions.npz (the final model's test-set
        predictions) and, with early stopping, best.npz are written there (each to a temporary
        name, then renamed).
    threads : int, optional
        Kernel threads; None uses every core.
    on_epoch, on_step : callables, optional
        Progress callbacks: on_epoch(record) after each epoch, on_step(done, total) after each step.
    preset : str, optional
        Recorded in metrics.json when the options came from a preset.
    """
    out_dir = None if out_dir is None else Path(out_dir)
    if out_dir is not None:
        check_out_dir(out_dir)
    n_threads = set_threads(threads, config.engine)
    trainer = Trainer(config, data, on_epoch=on_epoch, on_step=on_step)
    started = time.perf_counter()
    history = trainer.run()
    train_seconds = time.perf_counter() - started
    flip_tta = config.flip and data.image_shape is not None
    final = {"model": "model.npz", "epoch": len(history), "val_accuracy": history[-1]["val_accuracy"]}
    final |= test_metrics(trainer.E, trainer.model, data, flip_tta)
    predictions = test_predictions(trainer.E, trainer.model, data)
    metrics = {
        "config": trainer.model.config, "preset": preset, "data": describe_data(data), "history": history,
        "test_loss": final["test_loss"], "test_accuracy": final["test_accuracy"],
        "train_seconds": train_seconds, "threads": n_threads, "versions": versions(config.engine),
        "n_train": len(trainer.train_idx), "n_val": len(trainer.val_idx),
        "n_test": 0 if data.y_test is None else len(data.y_test), "final": final,
    }
    if predictions is not None:
        metrics["confusion_matrix"] = confusion_matrix(predictions["y_true"], predictions["y_pred"],
                                                       len(data.class_names)).tolist()
    best = None
    if config.patience:
        best = trainer.best_model()
        metrics["best_epoch"] = trainer.best_epoch
        metrics["best"] = {"model": "best.npz", "epoch": trainer.best_epoch,
                           "val_accuracy": trainer.best_val_accuracy} | test_metrics(trainer.E, best, data, flip_tta)
    if out_dir is not None:
        make_out_dir(out_dir)
        save_model(out_dir / "model.npz", trainer.model)
        if best is not None:
            save_model(out_dir / "best.npz", best)
        if predictions is not None:
            save_npz(out_dir / "predictions.npz", predictions)
        save_json(out_dir / "metrics.json", metrics)
    return RunResult(trainer.model, history, metrics, best, out_dir)


def test_metrics(E, model: Model, data: Dataset, flip_tta: bool) -> dict:
    """test_loss, test_accuracy and test_accuracy_flip_tta (None when not asked for) of `model`;
    all None when the data has no test set."""
    if data.y_test is None or len(data.y_test) == 0:
        return {"test_accuracy": None, "test_loss": None, "test_accuracy_flip_tta": None}
    loss, acc = network.evaluate(E, model, data.x_test, data.y_test)
    tta = network.evaluate(E, model, data.x_test, data.y_test, flip_tta=True)[1] if flip_tta else None
    return {"test_accuracy": acc, "test_loss": loss, "test_accuracy_flip_tta": tta}


def test_predictions(E, model: Model, data: Dataset) -> dict | None:
    """The final model's test-set predictions, stored with the run (predictions.npz) so reports
    need no data: y_true, y_pred (int64) and probs (N, classes) float32; None without a test set."""
    if data.y_test is None or len(data.y_test) == 0:
        return None
    probs = network.predict_proba(E, model, data.x_test)
    return {"y_true": np.asarray(data.y_test, np.int64), "y_pred": probs.argmax(axis=1).astype(np.int64),
            "probs": probs}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def describe_data(data: Dataset) -> dict:
    """What metrics.json records about the data: its kind, shape, classes and sizes."""
    return {"kind": data.kind, "image_shape": None if data.image_shape is None else list(data.image_shape),
            "n_features": int(data.n_features), "classes": list(data.class_names),
            "dtype": str(np.dtype(data.x_train.dtype))}


def check_out_dir(path: Path) -> None:
    """Fail before any training time is spent if the run directory cannot be created or written."""
    import os

    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to output directory {path} ({parent} is not a writable directory)")


def make_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {e.strerror or e}") from None
