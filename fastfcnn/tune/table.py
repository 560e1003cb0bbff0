"""The trials table and the one-line summary of a study."""
from __future__ import annotations

import math


# ---------------------------------------------------------------------------------------------
# The trials table

def format_params(params: dict) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "(no searched parameters)"


def _best(study):
    try:
        return study.best_trial
    except ValueError:
        return None


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
