"""`fastfcnn report`: pictures of runs (learning curves, confusion matrix, mistakes) and of bench results."""
from pathlib import Path
from typing import List, Optional

import typer

from . import app, err, say, user_errors
from .options import DATA_DIR_HELP, DATA_HELP

HELP = """Draw a picture of one or more runs and/or of `fastfcnn bench --json` results.

For runs: learning curves (loss, accuracy and learning rate per epoch, test accuracy marked, one colour per run), the test-set confusion matrix and per-class accuracy (from the predictions stored with the run: no data needed), and, for image data given with --data or --data-dir, the test images the net got most confidently wrong. A run still training gets its curves so far.

For --bench FILE: epoch time per engine for each net, and where the time of one training step goes (gather, forward, loss, backward, update).

Output: with exactly one run directory and no --out, RUN_DIR/report.png; otherwise --out, default ./report.png. PNG, SVG or PDF by the extension of --out. Prints the path written; notes on what was left out go to stderr.

\b
  fastfcnn report runs/wide
  fastfcnn report runs/a runs/b runs/c --out compare.png
  fastfcnn report runs/seed --data-dir ~/data --out seed.png
  fastfcnn bench --json b.json && fastfcnn report --bench b.json --out bench.png
"""


@app.command(help=HELP)
@user_errors
def report(
    run_dirs: Optional[List[Path]] = typer.Argument(None, metavar="RUN_DIR",
                                                    help="Run directories written by `fastfcnn train`."),
    bench: Optional[Path] = typer.Option(None, "--bench", metavar="FILE",
                                         help="A JSON file written by `fastfcnn bench --json`."),
    out_path: Optional[Path] = typer.Option(None, "--out", metavar="FILE",
                                            help="The picture: .png, .svg or .pdf. Default: RUN_DIR/report.png for "
                                                 "one run, else ./report.png."),
    data: Optional[Path] = typer.Option(None, "--data", help="For the mistakes grid: " + DATA_HELP.split(" Default")[0]),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="For the mistakes grid: " + DATA_DIR_HELP.split(
        " (downloaded")[0] + " (never downloaded)."),
    mistakes: int = typer.Option(16, "--mistakes", metavar="N", help="Misclassified test images shown per image "
                                 "run (needs --data or --data-dir); 0 for none."),
    dpi: int = typer.Option(100, "--dpi", help="Pixels per inch of a PNG (the picture is 15 inches wide)."),
):
    from ..data import load_data
    from ..errors import UserError
    from ..fit import make_out_dir
    from ..report import load_bench, load_runs, output_format, report_figure, save_figure

    run_dirs = run_dirs or []
    if not run_dirs and bench is None:
        raise UserError("give at least one RUN_DIR or --bench FILE (see fastfcnn report --help)")
    if mistakes < 0 or mistakes > 200:
        raise UserError(f"--mistakes must be between 0 and 200, got {mistakes}")
    if not 20 <= dpi <= 600:
        raise UserError(f"--dpi must be between 20 and 600, got {dpi}")
    out_path = out_path or (run_dirs[0] / "report.png" if len(run_dirs) == 1 else Path("report.png"))
    if out_path.is_dir():
        raise UserError(f"--out {out_path} is a directory; give a file name such as {out_path / 'report.png'}")
    output_format(out_path)
    _check_writable(out_path)

    runs = load_runs(run_dirs)
    bench_report = None if bench is None else load_bench(bench)
    dataset = None
    wants_images = mistakes > 0 and any(r.predictions is not None and r.image_shape is not None for r in runs)
    if wants_images and (data is not None or data_dir is not None):
        dataset = load_data(data, data_dir=data_dir, download=False)
    fig, notes = report_figure(runs, bench_report, dataset, mistakes)
    for note in notes:
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    make_out_dir(out_path.parent)
    try:
        save_figure(out_path, fig, dpi=dpi)
    except OSError as e:
        raise UserError(f"cannot write {out_path}: {e.strerror or e}") from None
    say(str(out_path))


def _check_writable(path: Path) -> None:
    """Fail before drawing if the picture's folder cannot be created or written."""
    import os

    from ..errors import UserError

    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {folder} is not a writable directory")
