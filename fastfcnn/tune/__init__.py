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

The package, one module per job (this module re-exports their public names):

    space       search spaces: reading, parsing, building and sampling them
    study       storage and studies: URLs, drivers, pruners, samplers, opening and adopting
    objective   Settings, Objective (one trial), TrialFailed, Stopped
    workers     worker_loop, Reporter, launch_workers, worker_main, write_best
    table       the trials table and the summary
"""
from __future__ import annotations

from .objective import Objective, Settings, Stopped, TrialFailed, objective_value, without_test
from .space import (
    DEFAULT_SPACE,
    FIELDS,
    IMAGE_ONLY,
    NOT_SEARCHABLE,
    ONLY_IF,
    ORDER,
    build_space,
    describe_space,
    parse_space,
    read_space,
    sample,
)
from .study import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    MAX_RETRY,
    PRUNERS,
    _quiet_optuna,
    adopt,
    check_study_name,
    describe_data,
    open_storage,
    open_study,
    redact,
    sqlite_url,
    with_driver,
)
from .table import format_params, ranked, summary, trials_table
from .workers import (
    Reporter,
    counts,
    default_threads,
    launch_workers,
    run_guarded,
    worker_loop,
    worker_main,
    write_best,
)

__all__ = [
    # space
    "DEFAULT_SPACE", "FIELDS", "IMAGE_ONLY", "NOT_SEARCHABLE", "ONLY_IF", "ORDER", "build_space",
    "describe_space", "parse_space", "read_space", "sample",
    # study
    "GRACE_SECONDS", "HEARTBEAT_SECONDS", "MAX_RETRY", "PRUNERS", "adopt", "check_study_name",
    "describe_data", "open_storage", "open_study", "redact", "sqlite_url", "with_driver",
    # objective
    "Objective", "Settings", "Stopped", "TrialFailed", "objective_value", "without_test",
    # workers
    "Reporter", "counts", "default_threads", "launch_workers", "run_guarded", "worker_loop", "worker_main",
    "write_best",
    # table
    "format_params", "ranked", "summary", "trials_table",
]
