"""`fastfcnn tune`: a hyperparameter search with Optuna, on one machine or many sharing a database."""
from pathlib import Path
from typing import Optional

import typer

from . import app, err, say, user_errors
from .options import DataDirOption, DataOption, DownloadOption, ImageSizeOption, config_options, load

HELP = "\n\n".join([
    "Search training options with Optuna. Each trial trains on the training split and is scored by its "
    "validation accuracy (the final epoch's; the best epoch's with --patience); the test set is never looked "
    "at. Retrain the winner with `fastfcnn train --config STUDY_DIR/best.json`.",
    "The study lives in STUDY_DIR (default studies/NAME): study.db (without --storage), one run directory per "
    "trial (trials/NNNN) and best.json, the best config so far. Run the same command again to resume a "
    "stopped study, or with a larger --trials to extend it.",
    "Many machines: run the same command on each with the same --storage postgresql://USER:PASS@HOST/DB (or "
    "FASTFCNN_TUNE_STORAGE set); --trials counts the trials of the whole study. A trial whose worker dies is "
    "marked failed and run again by another worker.",
    "Options come from, in rising priority: the defaults, --preset, --config, the search space, and the "
    "training options given here, which are fixed for every trial and leave the space.",
    "Search space (--space FILE.toml or .json), one entry per option: a value (fixed), {choices = [...]}, "
    "{low = A, high = B, log = true, step = S}, {by = \"optimizer\", sgd = {...}, adamw = {...}}, and for "
    "hidden {depth = {low = 1, high = 3}, width = {choices = [256, 512]}}. An entry replaces the default "
    "space's entry of that option; --no-default-space searches only the file's entries; --show-space prints "
    "the space a command would search.",
])

WORKERS_HELP = ("Worker processes on this machine, each training one trial at a time with --threads "
                "threads. Sizing: workers x threads = cores. Small nets (hidden under ~512) and small "
                "batches use threads poorly, so give them more workers of 1-2 threads; wide nets run "
                "best with fewer workers of more threads. Each worker holds its own copy of the data "
                "(CIFAR-10: about 180 MB).")
TUNE_THREADS_HELP = "Kernel threads of each worker. Default: the cores split evenly between the workers."


@app.command(help=HELP, short_help="Search training options with Optuna, on one machine or many sharing a database.")
@user_errors
@config_options
def tune(
    options: dict,
    study: str = typer.Option("default", "--study", help="Name of the study (a folder name)."),
    study_dir: Optional[Path] = typer.Option(None, "--study-dir", help="Folder of the study's trial runs, "
                                             "best.json and (without --storage) study.db. Default: studies/NAME."),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="FASTFCNN_TUNE_STORAGE", metavar="URL",
                                          help="SQLAlchemy URL of a shared study database, e.g. "
                                          "postgresql://user:pass@dbhost/fastfcnn. Default: "
                                          "sqlite:///STUDY_DIR/study.db."),
    trials: int = typer.Option(20, "--trials", help="Trials the study should hold when done (complete, "
                               "pruned or failed), counted over every worker and machine."),
    space: Optional[Path] = typer.Option(None, "--space", metavar="FILE", help="Search space file (.toml or "
                                         ".json) fixing, narrowing or adding options; see above."),
    default_space: bool = typer.Option(True, "--default-space/--no-default-space",
                                       help="Start from the built-in space (--no-default-space: the file's only)."),
    pruner: str = typer.Option("median", "--pruner", help="median (stop a trial below the median of "
                               "earlier trials at the same epoch, from epoch 2), hyperband, or none."),
    workers: int = typer.Option(1, "--workers", help=WORKERS_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help=TUNE_THREADS_HELP),
    show: bool = typer.Option(False, "--show", help="Print the study's trials, best first, write best.json, "
                              "and exit (needs only --study and --storage)."),
    show_space: bool = typer.Option(False, "--show-space", help="Print the search space and exit."),
    preset: Optional[str] = typer.Option(None, help="A named recipe for the options the space leaves alone."),
    config: Optional[Path] = typer.Option(None, "--config", help="A JSON file of options for the options "
                                          "the space leaves alone."),
    data: Optional[Path] = DataOption,
    data_dir: Optional[Path] = DataDirOption,
    image_size: Optional[str] = ImageSizeOption,
    download: bool = DownloadOption,
    heartbeat: int = typer.Option(30, "--heartbeat", hidden=True, envvar="FASTFCNN_TUNE_HEARTBEAT",
                                  help="Seconds between a running trial's heartbeats."),
    grace: int = typer.Option(120, "--grace", hidden=True, envvar="FASTFCNN_TUNE_GRACE",
                              help="Seconds without a heartbeat after which a trial's worker is taken as dead."),
):
    from .. import tune as T
    from ..config import read_config_file, resolve
    from ..errors import UserError
    from .options import parse_size

    T.check_study_name(study)
    study_dir = study_dir if study_dir is not None else Path("studies") / study
    default_storage = storage is None
    url = T.sqlite_url(study_dir) if default_storage else storage

    if show:
        if default_storage and not (study_dir / "study.db").is_file():
            raise UserError(f"no study at {study_dir} ({study_dir / 'study.db'} does not exist); give --storage "
                            f"or --study-dir, or start it with fastfcnn tune --study {study}")
        st = T.run_guarded(T.open_study, T.open_storage(url, heartbeat, grace), study, create=False)
        say(T.run_guarded(T.trials_table, st))
        say(T.summary(st))
        best = T.run_guarded(T.write_best, st, study_dir)
        if best is not None:
            say(f"best config: {best}")
        return

    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if pruner not in T.PRUNERS:
        raise UserError(f"--pruner must be one of {', '.join(T.PRUNERS)}, got {pruner!r}")
    base = resolve(preset, read_config_file(config) if config else None, options)
    if base.val_size == 0:
        raise UserError("fastfcnn tune scores each trial on a validation split: --val-size must be above 0")
    user_space = T.read_space(space) if space else {}
    fixed = {k for k, v in options.items() if v is not None}
    n_threads = threads if threads is not None else T.default_threads(workers)
    from ..engine import max_threads
    if not 1 <= n_threads <= max_threads(base.engine):
        raise UserError(f"--threads must be between 1 and {max_threads(base.engine)} on this machine, got {n_threads}")

    if not show_space:
        if default_storage:
            study_dir.mkdir(parents=True, exist_ok=True)
        storage_obj = T.open_storage(url, heartbeat, grace)      # an unreachable database fails here, early
    dataset = load(data, data_dir, download, image_size)
    searched = T.build_space(user_space, base, fixed, dataset, use_defaults=default_space)
    if show_space:
        say(T.describe_space(searched) or "(nothing is searched)")
        return
    size = parse_size(image_size)
    settings = T.Settings(study=study, study_dir=str(study_dir.resolve()), storage=url, trials=trials,
                          space=searched, base=base.to_dict(), data=None if data is None else str(data.resolve()),
                          data_dir=None if data_dir is None else str(data_dir.resolve()),
                          image_size=list(size) if size else None, pruner=pruner, threads=n_threads,
                          heartbeat=heartbeat, grace=grace)
    st = T.open_study(storage_obj, study, create=True, trials=trials, pruner=pruner, max_epochs=settings.max_epochs)
    for note in T.run_guarded(T.adopt, st, searched, base.to_dict(), T.describe_data(dataset)):
        say(note)

    c = T.run_guarded(T.counts, st)
    where = "" if default_storage else f" in {T.redact(url)}"
    say(f"study {study}{where}: {c['done']} of {trials} trials done; {dataset.describe()}; "
        f"{workers} worker{'s' * (workers > 1)} x {n_threads} thread{'s' * (n_threads > 1)}; searching "
        f"{', '.join(n for n in T.ORDER if n in searched and searched[n]['type'] != 'fixed') or 'nothing'}")
    if c["done"] >= trials:
        say(f"the study already holds {c['done']} trials; give --trials above {c['done']} to run more")
    failed_workers = []
    try:
        if c["done"] < trials:
            if workers == 1:
                T.run_guarded(T.worker_loop, settings, st, dataset, say)
            else:
                codes = T.launch_workers(settings, workers)
                failed_workers = [i + 1 for i, code in enumerate(codes) if code != 0]
    except KeyboardInterrupt as e:
        err.print("interrupted; run the same command again to resume the study", highlight=False)
        raise typer.Exit(getattr(e, "exit_code", 130))

    say(T.run_guarded(T.summary, st))
    best = T.run_guarded(T.write_best, st, study_dir)
    if best is not None:
        import shlex
        source = (["--data", settings.data] if settings.data else []) + \
            (["--data-dir", settings.data_dir] if settings.data_dir else []) + \
            (["--image-size", image_size] if image_size else [])
        command = ["fastfcnn", "train", *source, "--config", str(best), "--out", f"runs/{study}-best"]
        say(f"best config: {best}\nretrain it: {' '.join(map(shlex.quote, command))}")
    else:
        say("no trial completed, so there is no best config yet")
    if failed_workers:
        raise UserError(f"worker(s) {', '.join(map(str, failed_workers))} stopped with an error (see above)")
