"""Workers: the trial loop, the live report, worker processes and best.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import UserError
from .objective import Objective, Settings, Stopped, TrialFailed
from .space import ORDER
from .study import _reason, open_storage, open_study
from .table import _best, _duration, format_params


def _say(text: str) -> None:
    print(text, flush=True)


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


def write_best(study, study_dir: Path) -> Path | None:
    """Write the best complete trial's config as STUDY_DIR/best.json (only TrainConfig names, so
    `fastfcnn train --config` accepts it); None when no trial has completed."""
    from ..files import save_json
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
        from ..data import load_data
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
