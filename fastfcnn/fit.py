"""The library call behind `fastfcnn train`: a config and a dataset in, a trained model out.

`fit` trains, evaluates the final (and, with early stopping, the best) weights on the test set,
with flip test-time augmentation for nets trained on mirrored images, and writes the run
directory when given one. The CLI, the scikit-learn estimator and the tuner all start runs here.
"""
from __future__ import annotations

import json
import shlex
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import network
from .checkpoint import CHECKPOINT, RESUMABLE_CHANGES, config_differences, data_fingerprint, load_checkpoint, \
    restore, save_checkpoint
from .config import TrainConfig, flag, show
from .data import Dataset
from .engine import set_threads, versions
from .errors import UserError
from .files import remove_stale_temporaries, save_json, save_npz
from .model import Model, save_model
from .train import Diverged, Interrupted, Trainer


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


RUN_FILES = ("model.npz", "best.npz", "checkpoint.npz", "metrics.json", "predictions.npz")


class RunInterrupted(KeyboardInterrupt):
    """A signal stopped the run; its checkpoint is saved. exit_code: 130 for SIGINT, 143 for SIGTERM.
    A KeyboardInterrupt, so callers that catch Exception (scikit-learn's cross-validation) stop too."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopOnSignal:
    """While active, SIGINT and SIGTERM only ask the run to stop at the next step boundary.

    A second signal while the checkpoint is written is recorded the same way, so it can never
    leave a half-written file in place of a good one. Outside the main thread it does nothing.
    """

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is None:
            self.signal = signum

    def requested(self) -> bool:
        return self.signal is not None

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def fit(config: TrainConfig, data: Dataset, out_dir: Path | str | None = None, threads: int | None = None,
        on_epoch=None, on_step=None, preset: str | None = None, resume: bool = False, force: bool = False,
        data_source: dict | None = None, on_resume=None) -> RunResult:
    """Train a net as `config` describes on `data`.

    Parameters
    ----------
    config : TrainConfig
        The options; checked here against each other and against the data.
    data : Dataset
        Training rows (a validation split is held out of them) and, when present, the test set.
    out_dir : path, optional
        Run directory. After every epoch it gets checkpoint.npz (everything needed to continue)
        and metrics.json (the history so far); at the end model.npz, predictions.npz (the final
        model's test-set predictions), the final metrics.json and, with early stopping, best.npz.
        Every file is written to a temporary name, fsynced and renamed.
    threads : int, optional
        Kernel threads; None uses every core.
    on_epoch, on_step : callables, optional
        Progress callbacks: on_epoch(record) after each epoch, on_step(done, total) after each step.
    preset : str, optional
        Recorded in metrics.json when the options came from a preset.
    resume : bool
        Continue the run whose checkpoint is in out_dir. The data must be the same, and so must
        every option except epochs, which may change but not drop below the epoch the run has
        reached (the learning-rate schedule is stretched or shortened from there).
    force : bool
        Start afresh in an out_dir that holds another run, deleting that run's files.
    data_source : dict, optional
        How the caller loaded the data (kept in the checkpoint, so a resume can load it again).
    on_resume : callable, optional
        on_resume(epoch, pos, notes) once the checkpoint is restored (notes: list of str).

    Raises
    ------
    RunInterrupted
        SIGINT or SIGTERM arrived; the checkpoint holds the run up to the last finished step.
    UserError
        Bad options or data, a run directory that cannot be used, a failed write, divergence.
    """
    out_dir = None if out_dir is None else Path(out_dir)
    ckpt = open_run_dir(out_dir, resume, force)
    n_threads = set_threads(threads, config.engine)
    trainer = Trainer(config, data, on_epoch=on_epoch, on_step=on_step)
    if ckpt is not None:
        notes = check_resumable(ckpt["state"], config, data, n_threads, out_dir)
        restore(trainer, ckpt, out_dir / CHECKPOINT)
        if on_resume:
            on_resume(trainer.epoch, trainer.pos, notes)
    run = RunFiles(out_dir, trainer, {
        "config": trainer.model.config, "preset": preset, "data": describe_data(data), "data_source": data_source,
        "threads": n_threads, "versions": versions(config.engine), "n_train": len(trainer.train_idx),
        "n_val": len(trainer.val_idx), "n_test": 0 if data.y_test is None else len(data.y_test)})

    with StopOnSignal() as stop:
        trainer.should_stop = stop.requested
        try:
            while trainer.epoch < config.epochs and not trainer.stopped:
                trainer.run_epoch()
                run.save_progress("running")
                if stop.requested() and trainer.epoch < config.epochs and not trainer.stopped:
                    raise Interrupted(trainer.epoch + 1, 0)
        except Interrupted as e:
            run.save_progress("interrupted")
            raise RunInterrupted(interrupted_message(stop.signal, e, out_dir),
                                 143 if stop.signal == signal.SIGTERM else 130) from None
        except Diverged as e:
            run.save_diverged(e)
        # Training is over: a signal from here on waits until the models are saved.
        best = trainer.best_model() if config.patience else None
        run.save_models(best)
    if stop.requested():
        raise RunInterrupted(finished_message(stop.signal, out_dir), 143 if stop.signal == signal.SIGTERM else 130)
    history = trainer.history
    flip_tta = config.flip and data.image_shape is not None
    final = {"model": "model.npz", "epoch": len(history), "val_accuracy": history[-1]["val_accuracy"]}
    final |= test_metrics(trainer.E_eval, trainer.model, data, flip_tta)
    predictions = test_predictions(trainer.E_eval, trainer.model, data)
    metrics = run.base | {"status": "finished", "history": history, "test_loss": final["test_loss"],
                          "test_accuracy": final["test_accuracy"],
                          "test_accuracy_flip_tta": final["test_accuracy_flip_tta"],
                          "train_seconds": sum(r["seconds"] for r in history), "final": final}
    if predictions is not None:
        metrics["confusion_matrix"] = confusion_matrix(predictions["y_true"], predictions["y_pred"],
                                                       len(data.class_names)).tolist()
    if best is not None:
        metrics["best_epoch"] = trainer.best_epoch
        metrics["best"] = {"model": "best.npz", "epoch": trainer.best_epoch,
                           "val_accuracy": trainer.best_val_accuracy} | test_metrics(trainer.E_eval, best, data, flip_tta)
    run.save_final(metrics, predictions)
    return RunResult(trainer.model, history, metrics, best, out_dir)


def open_run_dir(out_dir: Path | None, resume: bool, force: bool):
    """The checkpoint to resume from (None for a new run), after checking that out_dir can be used."""
    if out_dir is None:
        if resume:
            raise UserError("resuming needs the run directory")
        return None
    check_out_dir(out_dir)
    if resume:
        return load_checkpoint(out_dir / CHECKPOINT)
    claim_run_dir(out_dir, force)
    return None


class RunFiles:
    """The files of a run directory (nothing at all when out_dir is None). base: the metrics.json
    fields known from the start; every write goes through `write`."""

    def __init__(self, out_dir: Path | None, trainer: Trainer, base: dict):
        self.out_dir, self.trainer, self.base = out_dir, trainer, base

    def _write(self, name: str, save) -> None:
        make_out_dir(self.out_dir)
        write(self.out_dir / name, save, self.out_dir, self.trainer)

    def save_progress(self, status: str) -> None:
        """checkpoint.npz and metrics.json with the history so far."""
        if self.out_dir is None:
            return
        extra = {k: self.base[k] for k in ("data_source", "threads", "preset")}
        self._write(CHECKPOINT, lambda p: save_checkpoint(p, self.trainer, extra))
        self._write("metrics.json", lambda p: save_json(p, self.base | {"status": status,
                                                                        "history": self.trainer.history}))

    def save_diverged(self, e: Diverged):
        """Record the divergence and raise it, saying what is still safe."""
        if self.out_dir is None:
            raise e
        self._write("metrics.json", lambda p: save_json(p, self.base | {"status": "diverged", "error": str(e),
                                                                        "history": self.trainer.history}))
        ckpt = self.out_dir / CHECKPOINT
        if not ckpt.exists():
            raise e
        raise Diverged(f"{e}. The last good checkpoint (epoch {len(self.trainer.history)}) stays in {ckpt}") from None

    def save_models(self, best) -> None:
        if self.out_dir is None:
            return
        self._write("model.npz", lambda p: save_model(p, self.trainer.model))
        if best is not None:
            self._write("best.npz", lambda p: save_model(p, best))

    def save_final(self, metrics: dict, predictions: dict | None) -> None:
        if self.out_dir is None:
            return
        if predictions is not None:
            self._write("predictions.npz", lambda p: save_npz(p, predictions))
        self._write("metrics.json", lambda p: save_json(p, metrics))


def write(path: Path, save, out_dir: Path, trainer) -> None:
    """save(path), turning a failed write into one error that says what is still safe."""
    try:
        save(path)
    except OSError as e:
        ckpt = out_dir / CHECKPOINT
        if path.name != CHECKPOINT and ckpt.exists():
            safe = (f"the checkpoint {ckpt} holds the run up to epoch {trainer.epoch}; "
                    f"`fastfcnn train --resume {out_dir}` continues from it once the problem is fixed")
        elif ckpt.exists():
            safe = (f"the previous checkpoint {ckpt} is intact; "
                    f"`fastfcnn train --resume {out_dir}` continues from it once the problem is fixed")
        else:
            safe = "nothing of this run was saved yet"
        raise UserError(f"cannot write {path}: {e.strerror or e}; {safe}") from None


def finished_message(signum, out_dir: Path | None) -> str:
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    if out_dir is None:
        return f"{name}: stopped after training, before the test evaluation"
    return (f"{name}: training had finished and {out_dir / 'model.npz'} is saved; the test evaluation was "
            f"skipped. Finish it with: fastfcnn train --resume {shlex.quote(str(out_dir))}")


def interrupted_message(signum, e: Interrupted, out_dir: Path | None) -> str:
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    where = f"in epoch {e.epoch} before step {e.step + 1}" if e.step else f"at the start of epoch {e.epoch}"
    if out_dir is None:
        return f"{name}: stopped {where}; nothing was written (no run directory)"
    return (f"{name}: stopped {where}; checkpoint saved. Continue with: "
            f"fastfcnn train --resume {shlex.quote(str(out_dir))}")


def claim_run_dir(out_dir: Path, force: bool) -> None:
    """Refuse a folder that holds another run, unless force, which deletes that run's files;
    in any case remove temporary files that a killed save left there."""
    if not out_dir.is_dir():
        return
    remove_stale_temporaries(out_dir, RUN_FILES)
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return
    if not force:
        raise UserError(f"{out_dir} already holds a run ({', '.join(present)}); continue it with "
                        f"--resume {out_dir}, or start over there with --force (deletes those files)")
    for name in present:
        (out_dir / name).unlink()


def finalised(out_dir: Path) -> bool:
    """Whether the run in out_dir got as far as its final metrics (training done, model saved,
    test set evaluated); a run interrupted after training, or whose final write failed, did not."""
    try:
        status = json.loads((out_dir / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    return status == "finished" and (out_dir / "model.npz").exists()


def check_resumable(state: dict, config: TrainConfig, data: Dataset, threads: int, out_dir: Path) -> list:
    """Refuse a resume that would not continue the same computation; return notes for the user."""
    saved = dict(state["config"])
    wanted = config.to_dict()
    differ = [k for k in config_differences(saved, wanted) if k not in RESUMABLE_CHANGES]
    if differ:
        shown = ", ".join(f"{flag(k)} {show(saved.get(k))} -> {show(wanted.get(k))}" for k in differ)
        raise UserError(f"cannot resume {out_dir} with other options ({shown}); only --epochs may change")
    fp = data_fingerprint(data)
    if fp != state["data"]:
        what = [k for k in fp if fp[k] != state["data"].get(k)]
        raise UserError(f"cannot resume {out_dir} on other data (the {', '.join(what)} differ from the run's)")
    if state.get("version") != versions()["fastfcnn"]:
        raise UserError(f"cannot resume {out_dir}: it was written by fastfcnn {state.get('version')}, "
                        f"this is {versions()['fastfcnn']}")
    notes = []
    reached = state["epoch"] + (1 if state["pos"] else 0)       # an interrupted epoch counts
    if config.epochs < reached:
        raise UserError(f"cannot resume {out_dir} with --epochs {config.epochs}: the run has reached epoch "
                        f"{reached} already")
    over = state.get("stopped") or (state["epoch"] >= config.epochs and state["pos"] == 0)
    if over and finalised(out_dir):
        why = (f"early stopping ended it at epoch {state['epoch']}" if state.get("stopped")
               else f"it ran all {state['epoch']} epochs")
        more = "" if state.get("stopped") else f"; pass --epochs above {state['epoch']} to train on"
        raise UserError(f"{out_dir} holds a finished run ({why}){more}")
    if config.epochs != saved["epochs"]:
        how = "stretched" if config.epochs > saved["epochs"] else "shortened"
        notes.append(f"--epochs {saved['epochs']} -> {config.epochs}: the learning-rate schedule is {how} from here")
    if state.get("threads") not in (None, threads):
        notes.append(f"the run used {state['threads']} threads and this resume {threads}: the result will not be "
                     f"bit-identical to an uninterrupted run")
    return notes


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


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
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
