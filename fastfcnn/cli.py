"""The `fastfcnn` command: train, evaluate, bench."""
import functools
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numba
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train fully connected networks on CIFAR-10 with parallel Numba kernels.")
out = Console()
err = Console(stderr=True)


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit code 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written")
            raise typer.Exit(130)
    return wrapper


def parse_hidden(text: str) -> list:
    """'64,64' -> [64, 64]; '' or 'none' -> [] (a linear classifier)."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return []
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise UserError(f"--hidden must be a comma-separated list of layer widths like 64,64, got {text!r}")
    if any(s < 1 for s in sizes):
        raise UserError(f"--hidden widths must be positive, got {text!r}")
    return sizes


def check_out_dir(path: Path) -> None:
    """Fail before any training time is spent if the run directory cannot be created or written."""
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
        raise UserError(f"cannot create output directory {path}: {e.strerror or e}")


def versions() -> dict:
    return {"fastfcnn": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


DATA_HELP = ("Folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz (downloaded there if "
             "missing). Default: $FASTFCNN_DATA, else ~/.cache/fastfcnn.")


@app.command()
@user_errors
def train(
    data_dir: Optional[Path] = typer.Option(None, help=DATA_HELP),
    hidden: str = typer.Option("64,64", help="Hidden layer widths, comma separated ('' for none)."),
    epochs: int = typer.Option(20, help="Passes over the training split."),
    batch_size: int = typer.Option(128, help="Images per SGD step (the last batch of an epoch may be smaller)."),
    lr: float = typer.Option(0.05, help="Peak learning rate."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    nesterov: bool = typer.Option(False, help="Use Nesterov momentum."),
    weight_decay: float = typer.Option(5e-4, help="L2 weight decay on weights (not biases)."),
    lr_schedule: str = typer.Option("cosine", help="constant, step (x0.1 at 50% and 75%), cosine or onecycle."),
    warmup_epochs: float = typer.Option(1.0, help="Epochs of linear learning-rate warmup."),
    label_smoothing: float = typer.Option(0.0, help="Weight spread evenly over all classes in the target."),
    engine: str = typer.Option("numba", help="numba (the parallel kernels) or numpy (the reference)."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels. Default: all cores."),
    seed: int = typer.Option(0, help="Seed for initialisation, the validation split and shuffling."),
    val_size: int = typer.Option(5000, help="Training images held out (stratified) for validation."),
    out_dir: Path = typer.Option(Path("runs/latest"), "--out", help="Run directory for model.npz and metrics.json."),
    download: bool = typer.Option(True, help="Download CIFAR-10 if it is not in the data folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final result."),
):
    """Train a fully connected net on CIFAR-10 and save model.npz and metrics.json."""
    from .data import load_cifar10, resolve_data_dir
    from .engine import set_threads
    from .model import save_model
    from .files import save_json
    from .network import evaluate
    from .train import TrainConfig, Trainer

    cfg = TrainConfig(hidden=parse_hidden(hidden), epochs=epochs, batch_size=batch_size, lr=lr,
                      momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                      lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                      label_smoothing=label_smoothing, engine=engine, seed=seed, val_size=val_size)
    n_threads = set_threads(threads)
    check_out_dir(out_dir)
    data = load_cifar10(resolve_data_dir(data_dir), download=download)
    cfg.check(len(data.y_train))

    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=out, transient=True, disable=quiet)
    task = progress.add_task("train", total=1, epoch=1)

    def on_step(done, total):
        progress.update(task, completed=done, total=total)

    def on_epoch(r):
        val = "" if r["val_accuracy"] is None else f"  val loss {r['val_loss']:.4f}  val acc {100 * r['val_accuracy']:5.2f}%"
        if not quiet:
            out.print(f"epoch {r['epoch']:3d}/{epochs}  train loss {r['train_loss']:.4f}  "
                      f"train acc {100 * r['train_accuracy']:5.2f}%{val}  {r['seconds']:.2f} s", highlight=False, soft_wrap=True)
        progress.reset(task, epoch=r["epoch"] + 1)

    trainer = Trainer(cfg, data, on_epoch=on_epoch, on_step=on_step)
    started = time.perf_counter()
    with progress:
        history = trainer.run()
    train_seconds = time.perf_counter() - started
    test_loss, test_acc = evaluate(trainer.E, trainer.model, data.x_test, data.y_test)

    make_out_dir(out_dir)
    save_model(out_dir / "model.npz", trainer.model)
    save_json(out_dir / "metrics.json", {
        "config": trainer.model.config, "history": history, "test_loss": test_loss,
        "test_accuracy": test_acc, "train_seconds": train_seconds, "threads": n_threads,
        "versions": versions(), "n_train": len(trainer.train_idx), "n_val": len(trainer.val_idx),
        "n_test": len(data.y_test),
    })
    out.print(f"test accuracy {100 * test_acc:.2f}% ({len(data.y_test)} images), "
              f"trained in {train_seconds:.1f} s; saved {out_dir / 'model.npz'}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def evaluate(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A model.npz written by `fastfcnn train`."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_HELP),
    engine: str = typer.Option("numba", help="numba or numpy."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels. Default: all cores."),
    download: bool = typer.Option(True, help="Download CIFAR-10 if it is not in the data folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Report a saved model's accuracy on the CIFAR-10 test set."""
    import json

    from .data import load_cifar10, resolve_data_dir
    from .engine import get_engine, set_threads
    from .model import load_model
    from .network import evaluate as run_eval

    E = get_engine(engine)
    set_threads(threads)
    model = load_model(model_path)
    data = load_cifar10(resolve_data_dir(data_dir), download=download)
    if data.x_test.shape[1] != model.sizes[0]:
        raise UserError(f"the model takes {model.sizes[0]} inputs but the data has {data.x_test.shape[1]} per image")
    if data.y_test.size and data.y_test.max() >= model.sizes[-1]:
        raise UserError(f"the data has labels up to {data.y_test.max()} but the model has {model.sizes[-1]} classes")
    loss, acc = run_eval(E, model, data.x_test, data.y_test)
    result = {"test_accuracy": acc, "test_loss": loss, "n_test": int(len(data.y_test)),
              "model": str(model_path), "sizes": model.sizes, "engine": engine}
    if as_json:
        print(json.dumps(result))
    else:
        out.print(f"test accuracy {100 * acc:.2f}%  loss {loss:.4f}  ({len(data.y_test)} images, "
                  f"net {'-'.join(map(str, model.sizes))})", highlight=False)


@app.command()
@user_errors
def bench(
    nets: str = typer.Option("seed,wide", help="Nets to time, comma separated: seed (64,64 at batch 128), wide (1024,1024 at batch 256)."),
    data_dir: Optional[Path] = typer.Option(None, help="Time on the real CIFAR-10 train split in this folder instead of synthetic data."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels, BLAS and torch. Default: all cores."),
    repeats: Optional[int] = typer.Option(None, help="Timed epochs per engine (median reported). Default: 3, or 1 with --quick."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 5,000 images, one timed repeat."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
):
    """Time training epochs, kernel phases, GFLOP/s against sgemm, JIT start-up and peak memory."""
    from .bench.common import NETS
    from .bench.run import render, run
    from .files import save_json

    chosen = [n.strip() for n in nets.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in NETS]
    if unknown or not chosen:
        raise UserError(f"--nets must be a comma-separated subset of {', '.join(NETS)}, got {nets!r}")
    if repeats is not None and repeats < 1:
        raise UserError("--repeats must be at least 1")
    if json_path is not None:
        check_out_dir(json_path.parent)
    report = run(chosen, threads, data_dir, quick, repeats, log=lambda m: err.print(f"bench: {m}", highlight=False))
    render(report, out)
    if json_path is not None:
        make_out_dir(json_path.parent)
        save_json(json_path, report)


def main():
    app()


if __name__ == "__main__":
    main()
