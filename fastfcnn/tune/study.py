"""Storage and studies: URLs, drivers, pruners, samplers, opening and adopting a study."""
from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

from ..config import show
from ..errors import UserError

HEARTBEAT_SECONDS = 30   # a running trial's worker writes a heartbeat this often...
GRACE_SECONDS = 120      # ...and one silent this long is taken as dead: FAIL, then queued again
MAX_RETRY = 2            # a trial whose worker died is run again at most this many times
PRUNERS = ("median", "hyperband", "none")


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
    """What a study records of its data, so that a worker on other data is refused."""
    from ..fit import describe_data as describe
    return describe(data) | {"n_train": int(len(data.y_train))}


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
