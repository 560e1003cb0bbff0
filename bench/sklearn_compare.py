"""FCNNClassifier against scikit-learn's MLPClassifier: the same hidden layers, epochs and batch
size on the same data; test accuracy and fit seconds of each, as a Markdown table.

    python -m fastfcnn.bench.sklearn_compare --data-dir /tmp/cifar
    python -m fastfcnn.bench.sklearn_compare --datasets digits --hidden 64,64 --digits-epochs 50

Datasets, nothing downloaded: CIFAR-10 from --data-dir (any folder `fastfcnn train --data-dir`
reads), and scikit-learn's bundled digits (1797 8x8 images as 64 features; a stratified 75/25
split, seed 0). Small digits runs are repeated with seeds 0..N-1 and reported as mean and spread.

Each contender runs a recipe it is documented with. MLPClassifier: its defaults (Adam, lr 1e-3,
alpha 1e-4) after a StandardScaler in a Pipeline, float32 input, n_iter_no_change = epochs so
that it runs every epoch (max_iter). FCNNClassifier twice: its defaults (SGD, momentum 0.9,
lr 0.05, cosine schedule, weight decay 5e-4), and the optimizer options of the `seed` preset
(adds Nesterov momentum, label smoothing 0.1, 2 warm-up epochs; no augmentation), both with
val_size=0 so that every contender trains on every training row. CIFAR-10 goes to FCNNClassifier
as uint8 images (N, 32, 32, 3), to MLPClassifier as the same pixels in float32 rows.
Fit seconds are the wall time of fit, after a warm-up fit that loads the compiled kernels.
--threads N gives both N threads (FCNNClassifier's n_threads, OpenBLAS's pool for MLPClassifier);
the default is every core for both. The contenders alternate, seed by seed, so a noisy shared
machine slows all of them alike.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np


def cifar10(data_dir):
    """(name, x_train, y_train, x_test, y_test) with (N, 32, 32, 3) uint8 images."""
    from fastfcnn.data import load_cifar10

    d = load_cifar10(data_dir, download=False)

    def hwc(x):
        return np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))

    return "CIFAR-10", hwc(d.x_train), d.y_train, hwc(d.x_test), d.y_test


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return "digits", x_train, y_train, x_test, y_test


# The `seed` preset's optimizer options (its net, epochs and image augmentation left out).
SEED_RECIPE = ("lr", "lr_schedule", "warmup_epochs", "nesterov", "weight_decay", "label_smoothing")


def contenders(hidden, epochs, batch_size, threads, seed) -> dict:
    """label -> a function making that contender, unfitted."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fastfcnn import FCNNClassifier
    from fastfcnn.presets import PRESETS

    def mlp():
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=hidden, max_iter=epochs, batch_size=batch_size, n_iter_no_change=epochs,
            random_state=seed))

    def fcnn(**recipe):
        return lambda: FCNNClassifier(hidden=hidden, epochs=epochs, batch_size=batch_size, val_size=0,
                                      n_threads=threads, seed=seed, **recipe)

    seed_recipe = {k: PRESETS["seed"][k] for k in SEED_RECIPE}
    seed_recipe["warmup_epochs"] = min(seed_recipe["warmup_epochs"], epochs)
    return {"MLPClassifier": mlp, "FCNNClassifier": fcnn(), "FCNNClassifier, seed recipe": fcnn(**seed_recipe)}


def as_features(x):
    """What MLPClassifier is given: float32 rows (images flattened)."""
    return x.reshape(len(x), -1).astype(np.float32)


def warm_up(threads):
    """Load (or compile) the kernels once, outside every timed fit."""
    from fastfcnn import FCNNClassifier

    y = np.arange(64) % 2
    for x in (np.random.default_rng(0).normal(size=(64, 8)),
              np.random.default_rng(0).integers(0, 256, (64, 4, 4, 3), dtype=np.uint8)):
        FCNNClassifier(hidden=(8,), epochs=1, n_threads=threads).fit(x, y)


def run(datasets, hidden, batch_size, threads) -> list:
    """One row per dataset and contender: accuracies and fit seconds over the dataset's seeds."""
    warm_up(threads)
    rows = []
    for (name, x_train, y_train, x_test, y_test), epochs, seeds in datasets:
        results = {}
        for seed in range(seeds):
            for label, make in contenders(hidden, epochs, batch_size, threads, seed).items():
                images = label.startswith("FCNN")
                xtr, xte = (x_train, x_test) if images else (as_features(x_train), as_features(x_test))
                model = make()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")      # MLPClassifier's ConvergenceWarning at max_iter
                    t0 = time.perf_counter()
                    model.fit(xtr, y_train)
                    seconds = time.perf_counter() - t0
                acc = float(model.score(xte, y_test))
                results.setdefault(label, []).append((acc, seconds))
                print(f"  {name:9s} seed {seed} {label:28s} {100 * acc:6.2f} %  {seconds:8.2f} s", flush=True)
        for label, runs in results.items():
            accs, secs = np.array(runs).T
            rows.append({"data": name, "model": label, "epochs": epochs, "seeds": seeds,
                         "accuracy": float(accs.mean()), "accuracy_sd": float(accs.std()),
                         "fit_seconds": float(secs.mean()), "n_train": len(y_train), "n_test": len(y_test)})
    return rows


def machine() -> str:
    from importlib.metadata import version

    import threadpoolctl

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = next((f"NumPy's {i['internal_api']} {i['version']} ({i['architecture']})"    # MLPClassifier's products
                 for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]),
                "unknown BLAS")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores, load average {os.getloadavg()[0]:.2f}; Python {platform.python_version()}, fastfcnn {version('fastfcnn')}, "
            f"numba {version('numba')}, numpy {version('numpy')}, scikit-learn {version('scikit-learn')}, {blas}")


def table(rows: list, hidden, batch_size, threads) -> str:
    lines = [f"hidden {','.join(map(str, hidden))}, batch {batch_size}, "
             f"{'every core' if threads is None else threads} thread(s) each", "",
             "| data | model | epochs | test accuracy | fit seconds | fit speed-up |",
             "|---|---|---:|---:|---:|---:|"]
    base = {r["data"]: r["fit_seconds"] for r in rows if r["model"] == "MLPClassifier"}
    for r in rows:
        acc = f"{100 * r['accuracy']:.2f} %"
        if r["seeds"] > 1:
            acc += f" ± {100 * r['accuracy_sd']:.2f} ({r['seeds']} seeds)"
        lines.append(f"| {r['data']} ({r['n_train']} train / {r['n_test']} test) | {r['model']} | {r['epochs']} | "
                     f"{acc} | {r['fit_seconds']:.2f} | {base[r['data']] / r['fit_seconds']:.1f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", help="folder holding CIFAR-10 (cifar-10-batches-py/); without it, no CIFAR-10")
    ap.add_argument("--datasets", default="cifar10,digits", help="comma-separated: cifar10, digits")
    ap.add_argument("--hidden", default="256,256", help="hidden layer widths (default 256,256)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--cifar-epochs", type=int, default=10)
    ap.add_argument("--cifar-seeds", type=int, default=1)
    ap.add_argument("--digits-epochs", type=int, default=30)
    ap.add_argument("--digits-seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="threads of each contender (default: all cores)")
    a = ap.parse_args(argv)
    hidden = tuple(int(h) for h in a.hidden.split(","))
    wanted = a.datasets.split(",")
    datasets = []
    if "cifar10" in wanted:
        if a.data_dir is None:
            print("no --data-dir: CIFAR-10 skipped")
        else:
            datasets.append((cifar10(a.data_dir), a.cifar_epochs, a.cifar_seeds))
    if "digits" in wanted:
        datasets.append((digits(), a.digits_epochs, a.digits_seeds))
    print(machine(), flush=True)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(a.threads, user_api="blas"):       # None: leaves the pool as it is
        rows = run(datasets, hidden, a.batch_size, a.threads)
    print()
    print(table(rows, hidden, a.batch_size, a.threads))


if __name__ == "__main__":
    main()
