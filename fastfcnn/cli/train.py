"""`fastfcnn train`: options in, `fit` called, progress printed."""
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..presets import PRESETS, describe
from . import app, err, out, say, user_errors
from .options import (DataDirOption, DataOption, DownloadOption, ImageSizeOption, ThreadsOption, config_options,
                      load)


def _help() -> str:
    return ("Train a fully connected net and save model.npz and metrics.json (and best.npz with --patience).\n\n"
            "Options come from, in rising priority: the defaults, --preset, --config, and the options given.\n\n"
            "Presets (--preset NAME):\n\n" + "\n\n".join(describe().splitlines()))


@app.command(help=_help())
@user_errors
@config_options
def train(
    options: dict,
    preset: Optional[str] = typer.Option(None, help=f"A named recipe ({', '.join(PRESETS)}; see above)."),
    config: Optional[Path] = typer.Option(None, "--config", help="A JSON file of options, e.g. a run's "
                                          "metrics.json, to repeat that run."),
    data: Optional[Path] = DataOption,
    data_dir: Optional[Path] = DataDirOption,
    image_size: Optional[str] = ImageSizeOption,
    download: bool = DownloadOption,
    threads: Optional[int] = ThreadsOption,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (model.npz, metrics.json, "
                                           "checkpoint.npz). Default: runs/<date>-<time>."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR "
                                          "from its checkpoint, on the same data (given again, or as recorded); "
                                          "only --epochs may change."),
    force: bool = typer.Option(False, "--force", help="Start afresh in an --out folder that holds another run, "
                               "deleting that run's files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final result."),
):
    from ..checkpoint import CHECKPOINT, load_checkpoint
    from ..config import read_config_file, resolve
    from ..engine import get_engine
    from ..errors import UserError
    from ..fit import RunInterrupted, check_out_dir, fit

    def absolute(p):          # a resume may start from another working directory
        return None if p is None else str(Path(p).expanduser().resolve())

    source = {"data": absolute(data), "data_dir": absolute(data_dir), "image_size": image_size}
    if resume is not None:
        if out_dir is not None and out_dir != resume:
            raise UserError("--resume names the run directory; leave out --out (or give the same folder)")
        if preset is not None or config is not None or force:
            raise UserError("--resume takes the run's own options; --preset, --config and --force do not apply")
        out_dir = resume
        state = load_checkpoint(resume / CHECKPOINT)["state"]
        cfg = resolve(None, state["config"], options)
        preset = state.get("preset")
        if data is None and data_dir is None and image_size is None and state.get("data_source"):
            source = state["data_source"]
            data = None if source["data"] is None else Path(source["data"])
            data_dir = None if source["data_dir"] is None else Path(source["data_dir"])
            image_size = source["image_size"]
    else:
        cfg = resolve(preset, read_config_file(config) if config else None, options)
        out_dir = out_dir or default_run_dir()
    check_out_dir(out_dir)
    get_engine(cfg.engine, cfg.precision)         # bf16 on a CPU without it: say so before loading any data
    dataset = load(data, data_dir, download, image_size)
    cfg.check_data(dataset)

    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=out, transient=True, disable=quiet)
    task = progress.add_task("train", total=1, epoch=1)

    def on_step(done, total):
        progress.update(task, completed=done, total=total)

    def on_epoch(r):
        val = "" if r["val_accuracy"] is None else f"  val loss {r['val_loss']:.4f}  val acc {100 * r['val_accuracy']:5.2f}%"
        if not quiet:
            say(f"epoch {r['epoch']:3d}/{cfg.epochs}  train loss {r['train_loss']:.4f}  "
                f"train acc {100 * r['train_accuracy']:5.2f}%{val}  {r['seconds']:.2f} s")
        progress.reset(task, epoch=r["epoch"] + 1)

    def on_resume(epoch, pos, notes):
        where = f"epoch {epoch + 1}, step {pos + 1}" if pos else f"epoch {epoch + 1}"
        say(f"resuming {out_dir} at {where}")
        for note in notes:
            say(f"note: {note}")

    try:
        with progress:
            result = fit(cfg, dataset, out_dir=out_dir, threads=threads, on_epoch=on_epoch, on_step=on_step,
                         preset=preset, resume=resume is not None, force=force, data_source=source,
                         on_resume=on_resume)
    except RunInterrupted as e:
        err.print(str(e), highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(e.exit_code)
    m = result.metrics
    final, saved = m["final"], out_dir / "model.npz"
    if final["test_accuracy"] is None:
        say(f"no test set; trained in {m['train_seconds']:.1f} s; saved {saved}")
    else:
        unit = "images" if m["data"]["kind"] == "image" else "rows"
        tta = "" if final["test_accuracy_flip_tta"] is None else \
            f"; {100 * final['test_accuracy_flip_tta']:.2f}% with flip TTA"
        say(f"test accuracy {100 * final['test_accuracy']:.2f}% ({m['n_test']} {unit}{tta}), "
            f"trained in {m['train_seconds']:.1f} s; saved {saved}")
    if "best" in m:
        best = m["best"]
        tta = "" if best["test_accuracy_flip_tta"] is None else \
            f" ({100 * best['test_accuracy_flip_tta']:.2f}% with flip TTA)"
        test = "" if best["test_accuracy"] is None else f": test accuracy {100 * best['test_accuracy']:.2f}%{tta}"
        say(f"best validation accuracy {100 * best['val_accuracy']:.2f}% at epoch {best['epoch']}{test}; "
            f"saved {out_dir / 'best.npz'}")


def default_run_dir() -> Path:
    """A new folder runs/<date>-<time> (with a suffix -2, -3, ... if taken), created here, so two
    runs started in the same second never share one."""
    import time

    from ..errors import UserError

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        path = Path("runs") / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"cannot create the run folder {path}: {e.strerror or e}; pass --out") from None
    raise UserError(f"runs/{stamp}-* are all taken; pass --out")
