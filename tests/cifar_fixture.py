"""Tiny CIFAR-10 look-alikes on disk, in the official python layout, for tests.

Usage from any test module: ``from cifar_fixture import write_cifar10, make_synthetic``.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER_NAME = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_synthetic(
    n_train: int, n_test: int, seed: int, n_classes: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Make a small, easily learnable dataset shaped like CIFAR-10.

    Each class has a random uint8 prototype image; a sample is its class prototype plus
    Gaussian noise (sigma 32), clipped to 0..255. Labels are balanced and shuffled.

    Returns
    -------
    x_train, y_train, x_test, y_test : np.ndarray
        (n, 3072) uint8 images and (n,) int64 labels in ``0..n_classes-1``.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(n_classes, 3072)).astype(np.float64)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
        x = prototypes[y] + rng.normal(0.0, 32.0, size=(n, 3072))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return x_train, y_train, x_test, y_test


def write_cifar10(
    root: Path,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str] | None = None,
    tarball: bool = False,
    n_batches: int = 5,
) -> Path:
    """Write the data in the official layout under `root` and return the folder or archive path.

    The training set is split into `n_batches` consecutive ``data_batch_i`` files (the real
    data has 5; use fewer to produce a dataset with missing batches). Files are pickled dicts
    with bytes keys, like the originals. With ``tarball=True`` only ``root/cifar-10-python.tar.gz``
    is written (holding the ``cifar-10-batches-py/`` folder); otherwise the folder itself.
    """
    names = CLASS_NAMES if class_names is None else class_names
    files = {}
    for i, rows in enumerate(np.array_split(np.arange(len(x_train)), n_batches), start=1):
        files[f"data_batch_{i}"] = _batch(f"training batch {i} of 5", x_train[rows], y_train[rows])
    files["test_batch"] = _batch("testing batch 1 of 1", x_test, y_test)
    meta = {b"num_cases_per_batch": len(x_test), b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    files["batches.meta"] = pickle.dumps(meta, protocol=2)

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if tarball:
        archive = root / ARCHIVE_NAME
        with tarfile.open(archive, "w:gz") as tar:
            for name, raw in files.items():
                info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        return archive
    folder = root / FOLDER_NAME
    folder.mkdir(exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def _batch(label: str, x: np.ndarray, y: np.ndarray) -> bytes:
    batch = {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in y],
        b"data": np.ascontiguousarray(x),
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(x))],
    }
    return pickle.dumps(batch, protocol=2)
