"""In-memory arrays -> Dataset: the Python API's entry point, and the back end of the .npz reader.

uint8 images are never copied to float: a flat channel-planar uint8 array is used as is (no
copy when it is already C-contiguous), and channels-last (N, H, W, C) images cost one uint8
copy to reorder into planes. Everything else is a feature vector and is converted to float32
exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from .dataset import Dataset

_FINITE_CHUNK_ROWS = 4096  # rows scanned at a time when locating a non-finite feature


def from_arrays(
    x_train,
    y_train,
    x_test=None,
    y_test=None,
    class_names: Sequence[str] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    where: str = "arrays",
) -> Dataset:
    """Validate in-memory arrays and turn them into a :class:`Dataset`.

    What the rows become depends on the dtype and shape of `x_train`:

    * uint8 (N, H, W) or (N, H, W, C) (channels last, as PIL and most libraries store them):
      images, stored channel-planar as (N, C*H*W) with ``image_shape = (C, H, W)`` (C = 1 for
      (N, H, W)). A 4-D array whose last axis is longer than 4 while axis 1 is 1, 3 or 4 looks
      channels-first and is refused rather than silently scrambled.
    * uint8 (N, D) with ``image_shape=(C, H, W)``: images already in channel-planar order
      (C*H*W must equal D); without `image_shape` they are feature vectors.
    * any other numeric (N, D) array (floats, other integers, bool): feature vectors, converted
      once to C-contiguous float32; NaN, inf, or values beyond float32's range are refused.
      3-D/4-D non-uint8 arrays are refused: images must be uint8 (0..255).

    Labels may be integers or strings (bytes are decoded as UTF-8; object arrays of str or int
    are accepted). Without `class_names` the classes are the sorted unique training labels,
    named ``str(label)``. With `class_names`, integer labels index it (0..K-1) and string labels
    must be among its names; classes that no row uses are kept (the model gets K outputs).
    Either way every test label must occur in the training labels, and the training labels must
    hold at least 2 classes.

    Parameters
    ----------
    x_train, y_train : array_like
        Training rows and their labels.
    x_test, y_test : array_like, optional
        Test rows and labels; give both or neither. Must have the same layout as `x_train`.
    class_names : sequence of str, optional
        Names of the classes, indexed by label.
    image_shape : (C, H, W), optional
        Marks a flat uint8 `x_train` (and `x_test`) as channel-planar images. For 3-D/4-D
        uint8 arrays it is optional and must match their shape.
    where : str
        Names the data's origin (e.g. an .npz path) at the start of every error message.

    Returns
    -------
    Dataset
        C-contiguous rows (uint8 images or float32 features) and int64 labels in 0..K-1;
        x_test and y_test are None when not given. The rows may share memory with the inputs.

    Raises
    ------
    UserError
        For any malformed input, with a one-line message naming `where` and the split.
    """
    if x_train is None or y_train is None:
        raise UserError(f"{where}: x_train and y_train are both required")
    if (x_test is None) != (y_test is None):
        given, missing = ("y_test", "x_test") if x_test is None else ("x_test", "y_test")
        raise UserError(f"{where}: {given} is given without {missing}; give both or neither")
    if image_shape is not None:
        image_shape = _check_image_shape(image_shape, where)

    # Labels are checked before the (possibly large) float conversion of the rows.
    x_train = _checked_x(x_train, "x_train", where)
    y_train, train_kind = _labels(y_train, "y_train", len(x_train), where)
    if x_test is not None:
        x_test = _checked_x(x_test, "x_test", where)
        y_test, test_kind = _labels(y_test, "y_test", len(x_test), where)
        if test_kind != train_kind:
            raise UserError(f"{where}: y_train holds {train_kind} labels but y_test holds {test_kind} labels")
    y_train, y_test, names = _encode_labels(y_train, y_test, train_kind, class_names, where)

    x_train, shape = _rows(x_train, "x_train", image_shape, where)
    if x_test is not None:
        x_test, test_shape = _rows(x_test, "x_test", image_shape, where)
        if (shape, x_train.shape[1]) != (test_shape, x_test.shape[1]):
            raise UserError(
                f"{where}: x_train holds {_layout(x_train, shape)} but x_test holds {_layout(x_test, test_shape)}"
            )
    return Dataset(x_train, y_train, x_test, y_test, names, shape)


def _layout(x: np.ndarray, shape: tuple[int, int, int] | None) -> str:
    if shape is None:
        return f"feature vectors of {x.shape[1]} columns"
    return "images " + "x".join(map(str, shape)) + " (CxHxW)"


def _check_image_shape(image_shape, where: str) -> tuple[int, int, int]:
    """image_shape as a tuple of 3 positive Python ints."""
    try:
        values = np.asarray(image_shape)
        ok = values.shape == (3,) and values.dtype.kind in "iu" and bool((values > 0).all())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{where}: image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    return tuple(int(v) for v in values)


def _as_array(x, name: str, where: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
        raise UserError(f"{where}: {name} is not a rectangular array ({exc})") from exc


def _checked_x(x, name: str, where: str) -> np.ndarray:
    """x as an array, checked for being a non-empty numeric array of a supported rank."""
    x = _as_array(x, name, where)
    if x.dtype.kind not in "biuf":
        raise UserError(f"{where}: {name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise UserError(
            f"{where}: {name} must be (N, D) rows, (N, H, W) or (N, H, W, C) images, got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise UserError(f"{where}: {name} has 0 rows")
    if 0 in x.shape[1:]:
        raise UserError(f"{where}: {name} has an empty dimension (shape {x.shape})")
    return x


def _rows(x: np.ndarray, name: str, image_shape: tuple[int, int, int] | None, where: str):
    """(C-contiguous flat rows, image shape or None) for an array checked by _checked_x."""
    n = x.shape[0]
    if x.dtype != np.uint8 or (x.ndim == 2 and image_shape is None):
        if x.ndim != 2:
            raise UserError(
                f"{where}: {name} has shape {x.shape} and dtype {x.dtype}, but images must be uint8 "
                f"(0..255) and feature vectors 2-D (N, D); convert with .astype(np.uint8) or reshape to (N, D)"
            )
        if image_shape is not None:
            raise UserError(
                f"{where}: image_shape is for flat uint8 images, but {name} holds {x.dtype} feature vectors"
            )
        return _features(x, name, where), None
    if x.ndim == 2:
        if int(np.prod(image_shape)) != x.shape[1]:
            raise UserError(
                f"{where}: image_shape {image_shape} has {int(np.prod(image_shape))} values per image "
                f"but {name} has {x.shape[1]} columns"
            )
        return np.ascontiguousarray(x), image_shape
    if x.ndim == 3:
        shape = (1, x.shape[1], x.shape[2])
        flat = np.ascontiguousarray(x).reshape(n, -1)
    else:
        if x.shape[3] > 4 and x.shape[1] in (1, 3, 4):
            raise UserError(
                f"{where}: {name} has shape {x.shape}, which looks channels-first (N, C, H, W); pass "
                f"channels-last (N, H, W, C) images, e.g. x.transpose(0, 2, 3, 1), or flat rows with image_shape"
            )
        shape = (x.shape[3], x.shape[1], x.shape[2])
        flat = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(n, -1)  # one uint8 copy into planes
    if image_shape is not None and image_shape != shape:
        raise UserError(f"{where}: image_shape {image_shape} does not match {name}'s images {shape} (C, H, W)")
    return flat, shape


def _features(x: np.ndarray, name: str, where: str) -> np.ndarray:
    """x as C-contiguous float32, refusing NaN, inf and values that overflow float32."""
    with np.errstate(over="ignore"):  # overflow becomes inf and is reported below
        out = np.asarray(x, dtype=np.float32, order="C")
    # A float64 sum of float32 values cannot overflow, so it is finite exactly when every value
    # is: a cheap first check that allocates nothing; the bad value is only located on failure.
    if x.dtype.kind == "f" and not np.isfinite(out.sum(dtype=np.float64)):
        for start in range(0, len(out), _FINITE_CHUNK_ROWS):
            bad = np.argwhere(~np.isfinite(out[start : start + _FINITE_CHUNK_ROWS]))
            if len(bad):
                row, col = int(bad[0][0]) + start, int(bad[0][1])
                value = float(x[row, col])
                if np.isnan(value):
                    what = "NaN"
                elif np.isinf(value):
                    what = f"{value} (infinite)"
                else:
                    what = f"{value!r} (beyond float32's range)"
                raise UserError(
                    f"{where}: {name} has the value {what} at row {row}, column {col}; "
                    f"features must be finite float32 numbers"
                )
    return out


def _labels(y, name: str, n: int, where: str) -> tuple[np.ndarray, str]:
    """(1-D labels, 'integer' or 'string'), checked against the row count n."""
    y = _as_array(y, name, where)
    if y.ndim != 1:
        raise UserError(f"{where}: {name} must be 1-D (one label per row), got shape {y.shape}")
    if len(y) != n:
        raise UserError(f"{where}: {name} has {len(y)} labels but x_{name[2:]} has {n} rows")
    if y.dtype.kind == "O":  # e.g. pandas columns: accept all-str, all-bytes or all-int contents
        items = y.tolist()
        for kinds in ((str,), (bytes,), (int, np.integer)):
            if all(isinstance(v, kinds) and not isinstance(v, bool) for v in items):
                y = np.array(items, dtype=np.int64 if int in kinds else None)
                break
    if y.dtype.kind == "S":
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}: {name} holds bytes labels that are not UTF-8 ({exc})") from exc
    if y.dtype.kind == "U":
        return y, "string"
    if y.dtype.kind == "u" and y.max() > np.iinfo(np.int64).max:
        raise UserError(f"{where}: {name} has label {int(y.max())}, beyond the int64 range")
    if y.dtype.kind in "iu":
        return y.astype(np.int64, copy=False), "integer"
    hint = "; convert whole-number labels with .astype(np.int64)" if y.dtype.kind in "bf" else ""
    raise UserError(f"{where}: {name} must hold integer or string labels, got dtype {y.dtype}{hint}")


def _show(label) -> str:
    """A label as it would be typed: 42, 'cat'."""
    label = label.item() if isinstance(label, np.generic) else label
    return repr(label)


def _class_names(class_names, where: str) -> list[str]:
    if isinstance(class_names, (str, bytes)):
        raise UserError(f"{where}: class_names must be a list of names, got the single string {class_names!r}")
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(class_names).tolist()]
        ok = np.asarray(class_names).ndim == 1
    except (TypeError, ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise UserError(f"{where}: class_names must be a 1-D list of names, got {class_names!r}")
    if len(names) < 2:
        raise UserError(f"{where}: class_names must name at least 2 classes, got {names!r}")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise UserError(f"{where}: class_names lists {dup!r} more than once")
    return names


def _encode_labels(y_train, y_test, kind: str, class_names, where: str):
    """(int64 train labels, int64 test labels or None, class names)."""
    if class_names is None:
        classes = np.unique(y_train)
        names = [str(c) for c in classes.tolist()]
        lookup = None
    else:
        names = _class_names(class_names, where)
        lookup = {name: i for i, name in enumerate(names)}
    encoded = []
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if y is None:
            encoded.append(None)
            continue
        uniq, inverse = np.unique(y, return_inverse=True)
        if lookup is None:
            codes = np.searchsorted(classes, uniq)
            known = (codes < len(classes)) & (classes[np.minimum(codes, len(classes) - 1)] == uniq)
        elif kind == "integer":
            codes = uniq
            known = (uniq >= 0) & (uniq < len(names))
        else:
            codes = np.array([lookup.get(s, -1) for s in uniq.tolist()], dtype=np.int64)
            known = codes >= 0
        if not known.all():
            row = int(np.argmax(~known[inverse]))  # the first offending row, in data order
            bad = y[row]
            if lookup is None:
                why = "which y_train never has; every test class needs training examples"
            elif kind == "integer":
                why = f"but integer labels index class_names, so they must be in 0..{len(names) - 1}"
            else:
                why = "which is not in class_names"
            raise UserError(f"{where}: {name} has label {_show(bad)} (row {row}) {why}")
        encoded.append(np.ascontiguousarray(codes.astype(np.int64)[inverse]))
    y_train, y_test = encoded
    present = np.unique(y_train)
    if len(present) < 2:
        raise UserError(
            f"{where}: y_train has a single class ({names[present[0]]!r}); a classifier needs at least 2"
        )
    if y_test is not None:
        missing = np.setdiff1d(np.unique(y_test), present)
        if len(missing):  # only reachable with class_names (otherwise caught above)
            raise UserError(
                f"{where}: y_test has class {names[missing[0]]!r}, which y_train never has; "
                f"every test class needs training examples"
            )
    return y_train, y_test, names
