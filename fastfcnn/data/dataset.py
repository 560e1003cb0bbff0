"""The one shape every data source is turned into, its validation split and its input statistics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError


@dataclass
class Dataset:
    """A classification dataset, ready for the kernels: rows are flat, labels are 0..K-1.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        (N, D) C-contiguous rows. Images are uint8 and channel-planar (channel c is columns
        c*H*W:(c+1)*H*W, each plane row-major); feature vectors are float32. x_test may be None
        (no test set, e.g. data given to the Python API).
    y_train, y_test : np.ndarray
        (N,) int64 labels in 0..K-1 (y_test None with x_test).
    class_names : list of str
        The K class names, indexed by label.
    image_shape : tuple of int or None
        (C, H, W) for images; None for feature vectors.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str]
    image_shape: tuple[int, int, int] | None = None

    @property
    def kind(self) -> str:
        """'image' or 'features'."""
        return "features" if self.image_shape is None else "image"

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> str:
        """e.g. '50000 train / 10000 test images 3x32x32, 10 classes'."""
        what = (f"feature vectors of {self.n_features}" if self.image_shape is None
                else "images " + "x".join(map(str, self.image_shape)))
        n_test = 0 if self.y_test is None else len(self.y_test)
        return f"{len(self.y_train)} train / {n_test} test {what}, {len(self.class_names)} classes"


def stratified_split(y: np.ndarray, val_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into train and validation sets with the class proportions of `y`.

    Each class gets ``count * val_size / len(y)`` validation rows, rounded by the largest
    remainder method (ties go to the smaller label) so the total is exactly `val_size`.

    Parameters
    ----------
    y : np.ndarray
        (N,) integer labels.
    val_size : int
        Number of validation rows, 0 <= val_size < N.
    rng : np.random.Generator
        The only source of randomness (which rows of each class go to validation).

    Returns
    -------
    train_idx, val_idx : np.ndarray
        Sorted, disjoint int64 index arrays that together cover ``range(N)``.
    """
    y = np.asarray(y)
    n = len(y)
    if not 0 <= val_size < n:
        raise UserError(
            f"validation size must be between 0 and {n - 1} (the training set has {n} rows), got {val_size}"
        )
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota, remainder = np.divmod(counts * val_size, n)  # exact integer arithmetic
    short = val_size - quota.sum()
    quota[np.argsort(-remainder, kind="stable")[:short]] += 1
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=q, replace=False) for k, q in enumerate(quota)]
    val_idx = np.sort(np.concatenate(chosen)).astype(np.int64)
    is_train = np.ones(n, dtype=bool)
    is_train[val_idx] = False
    return np.flatnonzero(is_train).astype(np.int64), val_idx


def channel_stats(
    x: np.ndarray, idx: np.ndarray | None = None, chunk_rows: int = 1024, channels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of flat channel-planar uint8 images, in [0, 255] units.

    Sums and sums of squares are accumulated exactly in uint64, `chunk_rows` rows at a time
    (the largest temporary is a uint16 chunk), and turned into float64 statistics at the end.

    Parameters
    ----------
    x : np.ndarray
        (N, D) uint8 images of `channels` planes of D / channels pixels each.
    idx : np.ndarray, optional
        Row indices to use (e.g. the training split); all rows when None.
    chunk_rows : int
        Rows processed per step.
    channels : int
        Number of colour planes.

    Returns
    -------
    mean, std : np.ndarray
        float32 arrays of shape (channels,).
    """
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] % channels:
        raise ValueError(f"expected (N, D) uint8 images of {channels} planes, got {x.shape} {x.dtype}")
    rows = np.arange(len(x)) if idx is None else np.asarray(idx)
    if rows.size == 0:
        raise ValueError("cannot compute channel statistics of zero images")
    plane = x.shape[1] // channels
    total = np.zeros(channels, dtype=np.uint64)
    total_sq = np.zeros(channels, dtype=np.uint64)
    for start in range(0, rows.size, chunk_rows):
        block = x[rows[start : start + chunk_rows]].reshape(-1, channels, plane).astype(np.uint16)
        total += block.sum(axis=(0, 2), dtype=np.uint64)
        total_sq += np.square(block, out=block).sum(axis=(0, 2), dtype=np.uint64)  # 255**2 fits in uint16
    count = rows.size * plane
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def column_stats(x: np.ndarray, idx: np.ndarray | None = None, chunk_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) std of float feature vectors x[idx], accumulated in
    float64 a chunk at a time (two passes, so large offsets do not cancel); float32 (D,)."""
    rows = np.arange(len(x)) if idx is None else np.asarray(idx)
    if rows.size == 0:
        raise ValueError("cannot compute feature statistics of zero rows")
    total = np.zeros(x.shape[1])
    for s in range(0, rows.size, chunk_rows):
        total += x[rows[s : s + chunk_rows]].sum(axis=0, dtype=np.float64)
    mean = total / rows.size
    sq = np.zeros(x.shape[1])
    for s in range(0, rows.size, chunk_rows):
        sq += np.square(x[rows[s : s + chunk_rows]] - mean).sum(axis=0)
    return mean.astype(np.float32), np.sqrt(sq / rows.size).astype(np.float32)


def input_stats(data: Dataset, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The normalisation a model stores: per-channel (mean, std) of images in [0, 255] units, or
    per-feature (mean, std) of feature vectors; fitted on the rows idx (the training split).
    A constant channel or feature gets std 1, so normalising it gives 0 rather than inf."""
    if data.image_shape is None:
        mean, std = column_stats(data.x_train, idx)
    else:
        mean, std = channel_stats(data.x_train, idx, channels=data.image_shape[0])
    return mean, np.where(std > 0, std, np.float32(1)).astype(np.float32)
