"""Inputs for a saved model: image files or .npz arrays made into rows the model reads, and
its predictions on them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import network
from .errors import UserError
from .files import read_npz
from .model import Model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def rows_for_model(x: np.ndarray, model: Model, where: str) -> np.ndarray:
    """x as the (N, D) C-contiguous rows `model` reads: channel-planar uint8 for an image model
    (x given as (N, D) planar, (N, H, W) or (N, H, W, C)), float32 for a feature-vector model."""
    x = np.asarray(x)
    if model.image_shape is None:
        if x.ndim != 2 or x.shape[1] != model.n_inputs:
            raise UserError(f"{where}: the model takes rows of {model.n_inputs} features, got an array of shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise UserError(f"{where}: features must be numbers, got {x.dtype}")
        x = np.ascontiguousarray(x, np.float32)
        if not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise UserError(f"{where}: row {row} holds NaN or inf")
        return x
    c, h, w = model.image_shape
    if x.dtype != np.uint8:
        raise UserError(f"{where}: the model takes uint8 images, got {x.dtype}")
    if x.ndim == 2 and x.shape[1] == c * h * w:
        return np.ascontiguousarray(x)
    if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        return np.ascontiguousarray(x.reshape(len(x), -1))
    if x.ndim == 4 and x.shape[1:] == (h, w, c):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))
    raise UserError(f"{where}: the model takes {h}x{w} images with {c} channel(s) ((N, {h}, {w}, {c}) or "
                    f"(N, {c * h * w}) channel-planar), got an array of shape {x.shape}")


def load_inputs(model: Model, paths, resize: bool = False) -> list[tuple[str, np.ndarray]]:
    """[(name, rows)] for each path: an image file gives one row, an .npz file its array `x`
    (one row per entry, named file.npz[i])."""
    from .data.folder import read_image

    items = []
    for p in map(Path, paths):
        if not p.is_file():
            raise UserError(f"input not found: {p}")
        if p.suffix.lower() == ".npz":
            x = _npz_x(p)
            rows = rows_for_model(x, model, str(p))
            items.extend((f"{p}[{i}]", rows[i : i + 1]) for i in range(len(rows)))
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            if model.image_shape is None:
                raise UserError(f"{p}: the model takes feature vectors, not images; pass an .npz with an x array")
            items.append((str(p), read_image(p, model.image_shape, resize=resize)[None]))
        else:
            raise UserError(f"{p}: expected an image file ({', '.join(IMAGE_SUFFIXES)}) or an .npz with an x array")
    return items


def _npz_x(path: Path) -> np.ndarray:
    def read(z):
        if "x" not in z.files:
            raise UserError(f"{path} has no array named x (it has {', '.join(z.files) or 'none'})")
        return z["x"]
    return read_npz(path, "input .npz", read)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities), each (N, k): the k most probable classes of each row, most
    probable first (the lower class index first on ties)."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)


def evaluate_on(E, model: Model, data, flip_tta: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on the test set of the Dataset `data`, whose classes are
    matched to the model's by name (a dataset may list them in another order)."""
    if data.y_test is None or len(data.y_test) == 0:
        raise UserError("the data has no test set")
    if data.image_shape != model.image_shape or data.n_features != model.n_inputs:
        have = "feature vectors" if data.image_shape is None else "images " + "x".join(map(str, data.image_shape))
        want = "feature vectors" if model.image_shape is None else "images " + "x".join(map(str, model.image_shape))
        raise UserError(f"the model takes {want} ({model.n_inputs} inputs) but the data holds {have} "
                        f"({data.n_features} inputs)")
    unknown = [c for c in data.class_names if c not in model.class_names]
    if unknown:
        raise UserError(f"the data has classes the model does not know: {', '.join(unknown[:5])}")
    to_model = np.array([model.class_names.index(c) for c in data.class_names], np.int64)
    return network.evaluate(E, model, data.x_test, to_model[data.y_test], flip_tta=flip_tta)
