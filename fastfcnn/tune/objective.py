"""The objective: what a worker needs (Settings) and how one trial is trained and scored."""
from __future__ import annotations

import json
import os
import shutil
import socket
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UserError
from .space import sample
from .study import GRACE_SECONDS, HEARTBEAT_SECONDS


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
        import optuna

        from .. import fit as fit_module
        from ..config import resolve
        from ..train import Diverged

        fit = fit_module.fit
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
            from ..files import save_json
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                save_json(run_dir / "trial.json", {"number": trial.number, "state": state, "value": value,
                                                   "reason": reason, "params": trial.params, "config": values,
                                                   "resumed_from": trial.user_attrs.get("resumed"),
                                                   "history": history})
            except OSError:
                pass

        def train(resume: bool):
            kwargs = {"resume": True, "on_resume": on_resume} if resume else {"force": True}
            return fit(cfg, self.data, out_dir=run_dir, threads=self.s.threads, on_epoch=on_epoch, **kwargs)

        try:
            cfg = resolve(None, values)
            cfg.check_data(self.data)
            resume = self._take_checkpoint(previous, run_dir)
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
        except KeyboardInterrupt as e:   # fit's RunInterrupted is one
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
    def _take_checkpoint(previous, run_dir: Path) -> bool:
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
