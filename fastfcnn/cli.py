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


def _train_help() -> str:
    from .presets import describe
    lines = describe().splitlines()
    return ("Train a fully connected net on CIFAR-10 and save model.npz and metrics.json (and best.npz "
            "with --patience).\n\nPresets (--preset NAME; options given explicitly override them):\n\n"
            + "\n\n".join(lines))


def _opt(name, text, *flags):
    """An option whose value None means 'not given': a preset or TrainConfig's default applies.
    The help text names TrainConfig's default for the field `name`."""
    from dataclasses import fields

    from .train import TrainConfig
    default = {f.name: f.default_factory() if callable(f.default_factory) else f.default
               for f in fields(TrainConfig)}[name]
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    return typer.Option(None, *flags, help=f"{text} Default: {shown}.")


@app.command(help=_train_help())
@user_errors
def train(
    preset: Optional[str] = typer.Option(None, help="A named recipe (seed, wide; see above) filling in the options below."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_HELP),
    hidden: Optional[str] = _opt("hidden", "Hidden layer widths, comma separated ('' for none)."),
    epochs: Optional[int] = _opt("epochs", "Passes over the training split."),
    batch_size: Optional[int] = _opt("batch_size", "Images per step (the last batch of an epoch may be smaller)."),
    optimizer: Optional[str] = _opt("optimizer", "sgd (momentum, L2 weight decay), adam (L2 weight decay added to "
                                    "the gradient) or adamw (Adam with decoupled weight decay: "
                                    "w -= lr * weight_decay * w)."),
    lr: Optional[float] = _opt("lr", "Peak learning rate."),
    momentum: Optional[float] = _opt("momentum", "SGD momentum (sgd only)."),
    nesterov: Optional[bool] = _opt("nesterov", "Use Nesterov momentum (sgd only).", "--nesterov/--no-nesterov"),
    weight_decay: Optional[float] = _opt("weight_decay", "Weight decay on weights (not biases); see --optimizer."),
    lr_schedule: Optional[str] = _opt("lr_schedule", "constant, step (x0.1 at 50% and 75%), cosine or onecycle."),
    warmup_epochs: Optional[float] = _opt("warmup_epochs", "Epochs of linear learning-rate warmup."),
    label_smoothing: Optional[float] = _opt("label_smoothing", "Weight spread evenly over all classes in the target."),
    dropout: Optional[float] = _opt("dropout", "Probability of dropping each hidden unit in training."),
    crop_pad: Optional[int] = _opt("crop_pad", "Random-crop augmentation: shift each training image by up to N pixels."),
    crop_mode: Optional[str] = _opt("crop_mode", "How a crop fills pixels from outside the image: reflect or zero."),
    flip: Optional[bool] = _opt("flip", "Mirror half the training images left-right.", "--flip/--no-flip"),
    whiten: Optional[str] = _opt("whiten", "Input whitening fitted on the training split: none, zca, or pca "
                                 "(keeps --whiten-dims components)."),
    whiten_dims: Optional[int] = _opt("whiten_dims", "Components kept by --whiten pca."),
    whiten_eps: Optional[float] = _opt("whiten_eps", "Whitening regulariser added to the eigenvalues (normalised units)."),
    patience: Optional[int] = _opt("patience", "Early stopping: stop after N epochs without a better validation "
                                   "accuracy and write those best weights to best.npz (0: off)."),
    engine: Optional[str] = _opt("engine", "numba (the parallel kernels) or numpy (the reference)."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels. Default: all cores."),
    seed: Optional[int] = _opt("seed", "Seed for initialisation, the split, shuffling, augmentation and dropout."),
    val_size: Optional[int] = _opt("val_size", "Training images held out (stratified) for validation."),
    out_dir: Path = typer.Option(Path("runs/latest"), "--out", help="Run directory for model.npz and metrics.json."),
    download: bool = typer.Option(True, help="Download CIFAR-10 if it is not in the data folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final result."),
):
    from .data import load_cifar10, resolve_data_dir
    from .engine import set_threads
    from .model import save_model
    from .files import save_json
    from .network import evaluate
    from .presets import resolve
    from .train import TrainConfig, Trainer

    explicit = dict(hidden=None if hidden is None else parse_hidden(hidden), epochs=epochs,
                    batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                    nesterov=nesterov, weight_decay=weight_decay, lr_schedule=lr_schedule,
                    warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, dropout=dropout,
                    crop_pad=crop_pad, crop_mode=crop_mode, flip=flip, whiten=whiten,
                    whiten_dims=whiten_dims, whiten_eps=whiten_eps, patience=patience, engine=engine,
                    seed=seed, val_size=val_size)
    cfg = TrainConfig(**resolve(preset, explicit))
    epochs = cfg.epochs
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
    # A net trained on mirrored images can also be scored on both views of each test image.
    tta_acc = evaluate(trainer.E, trainer.model, data.x_test, data.y_test, flip_tta=True)[1] if cfg.flip else None
    metrics = {
        "config": trainer.model.config, "preset": preset, "history": history, "test_loss": test_loss,
        "test_accuracy": test_acc, "train_seconds": train_seconds, "threads": n_threads,
        "versions": versions(), "n_train": len(trainer.train_idx), "n_val": len(trainer.val_idx),
        "n_test": len(data.y_test),
        "final": {"model": "model.npz", "epoch": len(history), "val_accuracy": history[-1]["val_accuracy"],
                  "test_accuracy": test_acc, "test_loss": test_loss, "test_accuracy_flip_tta": tta_acc},
    }
    if cfg.patience:
        best = trainer.best_model()
        best_loss, best_acc = evaluate(trainer.E, best, data.x_test, data.y_test)
        best_tta = evaluate(trainer.E, best, data.x_test, data.y_test, flip_tta=True)[1] if cfg.flip else None
        metrics["best_epoch"] = trainer.best_epoch
        metrics["best"] = {"model": "best.npz", "epoch": trainer.best_epoch,
                           "val_accuracy": trainer.best_val_accuracy, "test_accuracy": best_acc,
                           "test_loss": best_loss, "test_accuracy_flip_tta": best_tta}

    make_out_dir(out_dir)
    save_model(out_dir / "model.npz", trainer.model)
    if cfg.patience:
        save_model(out_dir / "best.npz", best)
    save_json(out_dir / "metrics.json", metrics)
    tta = "" if tta_acc is None else f"; {100 * tta_acc:.2f}% with flip TTA"
    out.print(f"test accuracy {100 * test_acc:.2f}% ({len(data.y_test)} images{tta}), "
              f"trained in {train_seconds:.1f} s; saved {out_dir / 'model.npz'}", highlight=False, soft_wrap=True)
    if cfg.patience:
        best_tta_text = "" if best_tta is None else f" ({100 * best_tta:.2f}% with flip TTA)"
        out.print(f"best validation accuracy {100 * trainer.best_val_accuracy:.2f}% at epoch {trainer.best_epoch}: "
                  f"test accuracy {100 * best_acc:.2f}%{best_tta_text}; saved {out_dir / 'best.npz'}",
                  highlight=False, soft_wrap=True)


@app.command()
@user_errors
def evaluate(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A model.npz written by `fastfcnn train`."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_HELP),
    engine: str = typer.Option("numba", help="numba or numpy."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels. Default: all cores."),
    download: bool = typer.Option(True, help="Download CIFAR-10 if it is not in the data folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    flip_tta: bool = typer.Option(False, "--flip-tta", help="Test-time augmentation: average the logits of each image and its mirror image."),
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
    if data.x_test.shape[1] != model.n_inputs:
        raise UserError(f"the model takes {model.n_inputs} inputs but the data has {data.x_test.shape[1]} per image")
    if data.y_test.size and data.y_test.max() >= model.sizes[-1]:
        raise UserError(f"the data has labels up to {data.y_test.max()} but the model has {model.sizes[-1]} classes")
    loss, acc = run_eval(E, model, data.x_test, data.y_test, flip_tta=flip_tta)
    result = {"test_accuracy": acc, "test_loss": loss, "n_test": int(len(data.y_test)),
              "model": str(model_path), "sizes": model.sizes, "engine": engine, "flip_tta": flip_tta}
    if as_json:
        print(json.dumps(result))
    else:
        tta = ", flip TTA" if flip_tta else ""
        out.print(f"test accuracy {100 * acc:.2f}%  loss {loss:.4f}  ({len(data.y_test)} images{tta}, "
                  f"net {'-'.join(map(str, model.sizes))})", highlight=False)


@app.command()
@user_errors
def bench(
    nets: str = typer.Option("seed,wide", help="Nets to time, comma separated: seed (64,64 at batch 128), wide (1024,1024 at batch 256)."),
    data_dir: Optional[Path] = typer.Option(None, help="Time on the real CIFAR-10 train split in this folder instead of synthetic data."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels, BLAS and torch. Default: all cores."),
    repeats: Optional[int] = typer.Option(None, help="Timed epochs per engine (median reported). Default: 3, or 1 with --quick."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 2,000 images, one timed repeat."),
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
