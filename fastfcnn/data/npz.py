"""An .npz archive of arrays -> Dataset (the layouts and checks are those of `from_arrays`)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .arrays import from_arrays
from .dataset import Dataset

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_KEYS = ("class_names", "image_shape")

# What a damaged archive or member can raise while numpy reads it.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)


def load_npz(path: Path | str) -> Dataset:
    """Load a dataset saved with ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``.

    The four arrays are required; ``class_names`` (an array of strings) and ``image_shape``
    ((C, H, W), marking flat uint8 rows as channel-planar images) are optional; other keys are
    ignored. Every layout :func:`~fastfcnn.data.from_arrays` accepts works here: uint8 images as
    (N, H, W), (N, H, W, C) or flat with image_shape, and numeric feature vectors (N, D).

    The file is read with ``allow_pickle=False``, so it cannot run code; arrays of Python
    objects are therefore refused (save strings with a string dtype, e.g. ``np.array(names, dtype=str)``).

    Parameters
    ----------
    path : Path or str
        The .npz file.

    Returns
    -------
    Dataset
        As returned by :func:`~fastfcnn.data.from_arrays` (test arrays always present).

    Raises
    ------
    UserError
        If the file is missing, unreadable or corrupt, lacks a required key, holds an object
        array, or its arrays fail the checks of `from_arrays` (messages start with the path).
    """
    path = Path(path).expanduser()
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except _READ_ERRORS as exc:
        # numpy tries a file that is neither a zip nor a .npy as a pickle, and its refusal suggests
        # loading it unsafely: not advice to pass on, so name the real problem instead.
        reason = "not a zip archive" if "pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"cannot read {path} as an .npz archive of arrays; it is corrupt or not an .npz file "
                        f"({reason})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path} holds a single array (.npy format), not an .npz archive; save the data with "
                        f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    with archive:
        keys = set(archive.files)
        missing = [k for k in REQUIRED_KEYS if k not in keys]
        if missing:
            found = ", ".join(sorted(keys)) or "none"
            raise UserError(f"{path} lacks the array(s) {', '.join(missing)} (found: {found}); an .npz dataset "
                            f"needs {', '.join(REQUIRED_KEYS)}")
        arrays = {k: _member(archive, k, path) for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in keys}
    return from_arrays(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        class_names=arrays.get("class_names"), image_shape=arrays.get("image_shape"), where=str(path),
    )


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # numpy's refusal of an object array
            raise UserError(f"{path}: {key} is an array of Python objects, which is not loaded (it would need "
                            f"pickle); save it with a numeric or string dtype, e.g. np.array(values, dtype=str)"
                            ) from exc
        raise UserError(f"{path}: cannot read {key} ({exc}); the file is corrupt or truncated") from exc
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: cannot read {key} ({type(exc).__name__}: {exc}); the file is corrupt or truncated"
                        ) from exc
