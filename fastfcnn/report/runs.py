"""The run panels: learning curves, test-set confusion matrices with per-class accuracy, and the
most confident mistakes. Each `*_section` returns (height in inches, draw) where draw(subfigure)
fills a matplotlib SubFigure, so the report can stack any of them in one picture."""
from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .load import Run, test_images

MISTAKE_COLUMNS = 8


def percent(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def net_name(run: Run) -> str:
    """e.g. '3072-64-64-10'."""
    data, hidden = run.metrics.get("data") or {}, (run.metrics.get("config") or {}).get("hidden") or []
    sizes = [data.get("n_features", "?"), *hidden, len(run.classes) or "?"]
    return "-".join(map(str, sizes))


def status(run: Run) -> str:
    """'test 45.2% (flip TTA 46.0%)', or 'training: epoch 3 of 20' for a run still in progress."""
    if not run.finished:
        total = (run.metrics.get("config") or {}).get("epochs")
        epoch = f"epoch {run.history[-1]['epoch']}" + (f" of {total}" if total else "")
        return {"running": f"training: {epoch}", "interrupted": f"interrupted after {epoch}",
                "diverged": f"diverged after {epoch}"}.get(run.status, f"{run.status}: {epoch}")
    acc, tta = run.final("test_accuracy"), run.final("test_accuracy_flip_tta")
    if acc is None:
        return "no test set"
    return f"test {percent(acc)}" + ("" if tta is None else f" (flip TTA {percent(tta)})")


def describe(run: Run) -> str:
    """One line about a run: net, preset, epochs, result, training time."""
    m, cfg = run.metrics, run.metrics.get("config") or {}
    parts = [f"net {net_name(run)}"]
    if m.get("preset"):
        parts.append(f"preset {m['preset']}")
    if cfg:
        parts.append(f"{cfg.get('optimizer', '?')} lr {cfg.get('lr', '?')}, batch {cfg.get('batch_size', '?')}, "
                     f"{cfg.get('epochs', '?')} epochs")
    parts.append(status(run))
    if "train_seconds" in m:
        n = m.get("threads")
        threads = f" on {n} thread{'s' if n != 1 else ''}" if n else ""
        parts.append(f"trained in {m['train_seconds']:.0f} s{threads}")
    return f"{run.name}: " + ", ".join(parts)


def _series(history: list, key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in history], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Learning curves

def curves_section(runs: list) -> tuple:
    def draw(sf):
        axes = sf.subplots(1, 4, width_ratios=[1, 1, 1, 0.6])
        loss_ax, acc_ax, lr_ax, legend_ax = axes
        acc_ax.sharex(loss_ax)
        lr_ax.sharex(loss_ax)
        handles = []
        for run in runs:
            c, h = run.colour, run.history
            epochs = _series(h, "epoch")
            last = epochs[-1]
            dots = {"marker": "o", "ms": 3} if len(h) <= 30 else {}     # dots only while they stay apart
            loss_ax.plot(epochs, _series(h, "train_loss"), "-", color=c, **dots)
            loss_ax.plot(epochs, _series(h, "val_loss"), "--", color=c, mfc="white", **dots)
            acc_ax.plot(epochs, _series(h, "train_accuracy"), "-", color=c, **dots)
            acc_ax.plot(epochs, _series(h, "val_accuracy"), "--", color=c, mfc="white", **dots)
            lr_ax.plot(epochs, _series(h, "lr"), "-", color=c, **dots)
            if run.finished and run.final("test_accuracy") is not None:
                loss_ax.plot([last], [run.final("test_loss")], "*", color=c, ms=14, mec="black", mew=0.6)
                acc_ax.plot([last], [run.final("test_accuracy")], "*", color=c, ms=14, mec="black", mew=0.6)
                if run.final("test_accuracy_flip_tta") is not None:
                    acc_ax.plot([last], [run.final("test_accuracy_flip_tta")], "D", color=c, ms=7, mec="black",
                                mew=0.6)
            best = run.metrics.get("best")
            if isinstance(best, dict) and best.get("epoch"):
                acc_ax.axvline(best["epoch"], color=c, ls=":", lw=1.2)
            handles.append(Line2D([], [], color=c, lw=3, label=_legend_label(run)))
        loss_ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
        acc_ax.set(title="accuracy", xlabel="epoch")
        acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        lr_ax.set(title="learning rate (last step of epoch)", xlabel="epoch")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        for ax in axes[:3]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        style = [Line2D([], [], color="grey", ls="-", label="train"),
                 Line2D([], [], color="grey", ls="--", label="validation"),
                 Line2D([], [], color="grey", ls="", marker="*", ms=12, mec="black", label="test (final model)"),
                 Line2D([], [], color="grey", ls="", marker="D", ms=6, mec="black", label="test, flip TTA")]
        if any(isinstance(r.metrics.get("best"), dict) for r in runs):
            style.append(Line2D([], [], color="grey", ls=":", label="best epoch (early stopping)"))
        legend_ax.axis("off")
        gap = Line2D([], [], ls="", label=" ")
        legend_ax.legend(handles=handles + [gap] + style, loc="upper left", frameon=False, title="runs",
                         alignment="left", labelspacing=0.6, borderaxespad=0)
        sf.suptitle("Learning curves", fontweight="bold", x=0.01, ha="left")
    lines = sum(len(_legend_label(r).splitlines()) for r in runs) + 6
    return max(3.9, 0.9 + 0.24 * lines), draw


def _legend_label(run: Run) -> str:
    """The run's name and status, wrapped to fit the legend column."""
    lines = [run.name] + status(run).replace(" (", "\n(").splitlines()
    return "\n".join(w for line in lines for w in textwrap.wrap(line, 24))


# ---------------------------------------------------------------------------------------------
# Confusion matrices and per-class accuracy

def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    rows = cm.sum(axis=1)
    return np.divide(np.diag(cm), rows, out=np.full(len(cm), np.nan), where=rows > 0)


def draw_confusion(ax, cm: np.ndarray, classes: list, title: str, side: float, ylabel: bool = True,
                   colorbar: bool = True) -> None:
    """Colour = fraction of the true class (row-normalised); each cell shows its count. side is
    the matrix's approximate size in inches, which sets the size of the numbers."""
    k = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    label_size = 10 if k <= 12 else max(5, int(120 / k))
    ax.set_xticks(range(k), classes, rotation=40, ha="right", rotation_mode="anchor", fontsize=label_size)
    ax.set_yticks(range(k), classes, fontsize=label_size)
    ax.set_xlabel("predicted class")
    if ylabel:
        ax.set_ylabel("true class")
    ax.set_title(title)
    cell_points = 72 * side / k
    size = min(9.0, 0.8 * cell_points / (0.6 * len(str(cm.max()))))     # the widest count fits its cell
    if size >= 5:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=size,
                        color="white" if frac[i, j] > 0.55 else "black")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.8, format=PercentFormatter(1.0), label="share of the true class")


def draw_per_class(ax, runs: list) -> None:
    """Horizontal bars of per-class test accuracy, one colour per run, classes top to bottom."""
    classes = []
    for run in runs:
        classes += [c for c in run.classes if c not in classes]
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        acc = dict(zip(run.classes, per_class_accuracy(run.confusion)))
        y = np.arange(len(classes)) - 0.4 + width * (i + 0.5)
        values = np.array([acc.get(c, np.nan) for c in classes])
        bars = ax.barh(y, values, height=width * 0.92, color=run.colour, label=run.name)
        if len(runs) * len(classes) <= 40:
            ax.bar_label(bars, [percent(v) for v in values], padding=2, fontsize=8 if len(runs) > 1 else 9)
        overall = np.trace(run.confusion) / max(run.confusion.sum(), 1)
        ax.axvline(overall, color=run.colour, ls="--", lw=1.2)
    ax.set_yticks(range(len(classes)), classes, fontsize=10 if len(classes) <= 12 else max(5, int(120 / len(classes))))
    ax.set_ylim(len(classes) - 0.5, -0.5)
    ax.set_xlim(0, 1.12)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("per-class test accuracy (dashed: overall)")
    ax.grid(axis="x", alpha=0.3)
    if len(runs) > 1:
        ax.legend(loc="lower right", fontsize=9)


def confusion_section(runs: list) -> tuple | None:
    """Confusion matrix beside per-class accuracy for one run; for several, their matrices in rows
    (up to three a row, one colour bar a row) and one per-class chart comparing them."""
    runs = [r for r in runs if r.confusion is not None]
    if not runs:
        return None
    k = max(len(r.confusion) for r in runs)
    title = "Test set: confusion matrix (rows = true class, normalised per row; counts in the cells)"

    if len(runs) == 1:
        run = runs[0]
        side = min(max(0.42 * k + 2.2, 4.2), 9.0)

        def draw(sf):
            cm_ax, bar_ax = sf.subplots(1, 2, width_ratios=[1.25, 1])
            unit = "rows" if run.image_shape is None else "images"
            draw_confusion(cm_ax, run.confusion, run.classes, f"{run.name}: {percent(_overall(run))} of "
                                                             f"{run.confusion.sum()} test {unit} correct", side - 1.8)
            draw_per_class(bar_ax, [run])
            sf.suptitle(title, fontweight="bold", x=0.01, ha="left")
        return side + 0.6, draw

    columns = min(len(runs), 3)
    n_rows = math.ceil(len(runs) / columns)
    side = min(max(0.42 * k + 2.2, 4.2), 9.0, 15.0 / columns - 0.6)
    bars = max(2.5, 0.6 + k * (0.1 + 0.15 * len(runs)))

    def draw_many(sf):
        grid = sf.subfigures(n_rows + 1, 1, height_ratios=[side] * n_rows + [bars])
        for r in range(n_rows):
            row = runs[columns * r: columns * (r + 1)]
            axes = np.atleast_1d(grid[r].subplots(1, columns))
            for c, (ax, run) in enumerate(zip(axes, row)):
                draw_confusion(ax, run.confusion, run.classes, f"{run.name}: {percent(_overall(run))}", side - 1.8,
                               ylabel=c == 0, colorbar=c == len(row) - 1)
            for ax in axes[len(row):]:
                ax.axis("off")
        draw_per_class(grid[-1].subplots(), runs)
        sf.suptitle(title, fontweight="bold", x=0.01, ha="left")
    return n_rows * side + bars + 0.6, draw_many


def _overall(run: Run) -> float:
    return np.trace(run.confusion) / max(run.confusion.sum(), 1)


# ---------------------------------------------------------------------------------------------
# Most confident mistakes

def confident_mistakes(predictions: dict, n: int) -> np.ndarray:
    """Test-set rows the net got wrong, most confident (highest predicted probability) first."""
    y_true, y_pred, probs = predictions["y_true"], predictions["y_pred"], predictions["probs"]
    wrong = np.flatnonzero(y_true != y_pred)
    confidence = probs[wrong, y_pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:n]]


def mistakes_section(run: Run, data, n: int) -> tuple | None:
    rows = confident_mistakes(run.predictions, n)
    if len(rows) == 0:
        return None
    images = test_images(run, data, rows)
    y_true, y_pred, probs = (run.predictions[k] for k in ("y_true", "y_pred", "probs"))
    classes = run.classes
    n_rows = math.ceil(len(rows) / MISTAKE_COLUMNS)

    def draw(sf):
        axes = sf.subplots(n_rows, MISTAKE_COLUMNS, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, row, image in zip(axes.flat, rows, images):
            gray = image.shape[2] in (1, 2)
            ax.imshow(image[..., 0] if gray else image[..., :4], cmap="gray" if gray else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_title(f"true: {classes[y_true[row]]}\npred: {classes[y_pred[row]]} "
                         f"{100 * probs[row, y_pred[row]]:.0f}%", fontsize=10)
        sf.suptitle(f"{run.name}: the {len(rows)} test images the net got most confidently wrong "
                    f"(of {int((y_true != y_pred).sum())} mistakes)", fontweight="bold", x=0.01, ha="left")
    return 0.5 + 2.05 * n_rows, draw
