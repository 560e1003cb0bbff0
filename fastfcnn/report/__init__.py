"""Pictures of runs and benchmarks, the library behind `fastfcnn report`.

    runs = load_runs(["runs/a", "runs/b"])
    fig, notes = report_figure(runs, bench=load_bench("b.json"), data=dataset, mistakes=16)
    save_figure("report.png", fig)

A report stacks, top to bottom: the learning curves of every run, their test-set confusion
matrices with per-class accuracy, each run's most confident mistakes (image runs, when the
dataset is given), and the bench results. Drawing uses matplotlib's object API on an Agg canvas
only (never pyplot), so nothing opens a window and no global figure state is touched.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import UserError
from ..files import write_atomic
from .bench import bench_section
from .load import Run, bench_problem, confusion_matrix, load_bench, load_run, load_runs, test_images
from .runs import confusion_section, curves_section, describe, mistakes_section

__all__ = ["Run", "load_run", "load_runs", "load_bench", "bench_problem", "confusion_matrix", "test_images",
           "report_figure", "save_figure", "FORMATS"]

WIDTH = 15.0          # inches; at the default 100 dpi a 1500-pixel-wide picture, readable on a laptop
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13, "axes.spines.top": False,
         "axes.spines.right": False, "svg.fonttype": "none", "pdf.fonttype": 42}


def report_figure(runs: list, bench: dict | None = None, data=None, mistakes: int = 16) -> tuple:
    """One Figure of `runs` (Run objects) and/or a bench report; returns (figure, notes), notes
    being lines about what was left out and why.

    data is the Dataset the runs were tested on, for the mistakes grid (image runs only); without
    it, or with mistakes=0, the grid is skipped.
    """
    if not runs and bench is None:
        raise UserError("nothing to draw: give at least one run directory or a bench file")
    notes = [n for run in runs for n in run.notes]
    for i, run in enumerate(runs):
        run.colour = f"C{i % 10}"
    with matplotlib.rc_context(STYLE):
        sections = []
        if runs:
            sections.append(curves_section(runs))
            for run in runs:
                if run.confusion is None:
                    why = {"finished": "it had no test set", "running": "it is still training",
                           "interrupted": "it was interrupted", "diverged": "it diverged"}.get(
                        run.status, f"its status is {run.status!r}")
                    notes.append(f"{run.name}: no confusion matrix, {why}")
            cm = confusion_section(runs)
            if cm is not None:
                sections.append(cm)
            sections += _mistakes(runs, data, mistakes, notes)
        if bench is not None:
            problem = bench_problem(bench)
            if problem:
                raise UserError(f"not a `fastfcnn bench` report: {problem}")
            sections.append(bench_section(bench))
        heights = [h for h, _ in sections]
        title = _title(runs)
        top = 0.25 * (title.count("\n") + 1) + 0.25 if title else 0.0
        fig = Figure(figsize=(WIDTH, sum(heights) + top), layout="constrained")
        FigureCanvasAgg(fig)
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=13, fontweight="bold")
        parts = fig.subfigures(len(sections), 1, height_ratios=heights, squeeze=False)[:, 0]
        for part, (_, draw) in zip(parts, sections):
            draw(part)
    return fig, notes


def _title(runs: list) -> str:
    if len(runs) == 1:
        return describe(runs[0])
    if runs:
        return "\n".join(describe(r) for r in runs)
    return ""


def _mistakes(runs: list, data, n: int, notes: list) -> list:
    if n <= 0:
        return []
    sections = []
    for run in runs:
        if run.predictions is None:
            continue
        if run.image_shape is None:
            notes.append(f"{run.name}: trained on feature vectors, so there are no images of mistakes to show")
        elif data is None:
            notes.append(f"{run.name}: mistakes not drawn; give the data (--data or --data-dir) to see them")
        else:
            section = mistakes_section(run, data, n)
            if section is None:
                notes.append(f"{run.name}: no mistakes on the test set")
            else:
                sections.append(section)
    return sections


def output_format(path: Path | str) -> str:
    """'png', 'svg' or 'pdf' from the file name; UserError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"--out {path}: the picture must be a .png, .svg or .pdf file")
    return FORMATS[suffix]


def save_figure(path: Path | str, fig: Figure, dpi: float = 100) -> Path:
    """Save `fig` as PNG, SVG or PDF (by extension) through a temporary file in the same folder
    then a rename (files.write_atomic), so a failure never leaves a half-written picture."""
    path = Path(path)
    fmt = output_format(path)
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)   # reproducible files
    def write(f):
        with matplotlib.rc_context(STYLE):
            if fmt == "png":
                _write_png(f, fig, dpi)
            else:
                fig.savefig(f, format=fmt, metadata=metadata, facecolor="white")

    write_atomic(path, write)
    return path


def _write_png(f, fig: Figure, dpi: float) -> None:
    """An opaque RGB PNG at maximum compression: the picture has no transparency, and dropping
    matplotlib's alpha channel makes the file about a tenth smaller."""
    import numpy as np
    from PIL import Image

    canvas, saved = FigureCanvasAgg(fig), fig.dpi
    fig.dpi = dpi
    try:
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    finally:
        fig.dpi = saved
    Image.fromarray(pixels).save(f, format="PNG", optimize=True, dpi=(dpi, dpi))
