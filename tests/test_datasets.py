"""Tests for the non-CIFAR data sources: from_arrays, .npz files and image folders (+ read_image)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from data_fixture import random_images, write_folder, write_image

from fastfcnn.data import Dataset, from_arrays, load_data
from fastfcnn.data.folder import load_image_folder, read_image
from fastfcnn.data.npz import load_npz
from fastfcnn.errors import UserError

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def check_dataset(ds: Dataset) -> None:
    """The invariants every source must produce."""
    assert isinstance(ds, Dataset)
    splits = [(ds.x_train, ds.y_train)] + ([(ds.x_test, ds.y_test)] if ds.x_test is not None else [])
    for x, y in splits:
        assert x.ndim == 2 and x.flags.c_contiguous and len(x) == len(y)
        assert x.dtype == (np.float32 if ds.image_shape is None else np.uint8)
        assert y.dtype == np.int64 and y.flags.c_contiguous and y.ndim == 1
        assert y.min() >= 0 and y.max() < len(ds.class_names)
    if ds.image_shape is not None:
        assert int(np.prod(ds.image_shape)) == ds.x_train.shape[1]
    assert all(isinstance(n, str) for n in ds.class_names)


# --- from_arrays: layouts --------------------------------------------------------------------


def test_flat_uint8_without_image_shape_is_features():
    x = random_images(4, 3, 5, None).reshape(4, 15)
    ds = from_arrays(x, [0, 1, 0, 1])
    check_dataset(ds)
    assert ds.image_shape is None and ds.kind == "features"
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))
    assert ds.x_test is None and ds.y_test is None


def test_flat_uint8_with_image_shape_is_planar_images_without_copy():
    x = random_images(4, 1, 3 * 5 * 7, None, seed=1).reshape(4, -1)
    ds = from_arrays(x, [0, 1, 0, 1], x[:2], [1, 0], image_shape=(3, 5, 7))
    check_dataset(ds)
    assert ds.image_shape == (3, 5, 7) and ds.kind == "image"
    assert np.shares_memory(ds.x_train, x)  # uint8 stays as given: no float (or any) copy
    np.testing.assert_array_equal(ds.x_test, x[:2])


def test_nhw_is_one_channel_images_non_square():
    x = random_images(3, 5, 7, None)
    ds = from_arrays(x, [1, 2, 1])
    check_dataset(ds)
    assert ds.image_shape == (1, 5, 7)
    np.testing.assert_array_equal(ds.x_train, x.reshape(3, 35))


@pytest.mark.parametrize("channels", [1, 3])
def test_nhwc_becomes_channel_planar(channels):
    x = random_images(3, 5, 7, channels, seed=2)
    ds = from_arrays(x, ["a", "b", "a"], x[:1], ["b"])
    check_dataset(ds)
    assert ds.image_shape == (channels, 5, 7)
    np.testing.assert_array_equal(ds.x_train.reshape(3, channels, 5, 7), x.transpose(0, 3, 1, 2))
    # one pixel by hand: image 2, row 4, column 6, last channel -> plane c, offset 4*7 + 6
    c = channels - 1
    assert ds.x_train[2, c * 35 + 4 * 7 + 6] == x[2, 4, 6, c]
    np.testing.assert_array_equal(ds.x_test, ds.x_train[:1])


def test_image_shape_may_confirm_nhwc():
    x = random_images(2, 5, 7, 3)
    assert from_arrays(x, [0, 1], image_shape=(3, 5, 7)).image_shape == (3, 5, 7)
    with pytest.raises(UserError, match=r"image_shape \(3, 7, 5\) does not match x_train's images \(3, 5, 7\)"):
        from_arrays(x, [0, 1], image_shape=(3, 7, 5))


def test_float64_features_become_contiguous_float32():
    x = np.asfortranarray(np.random.default_rng(0).normal(size=(5, 4)))
    ds = from_arrays(x, [0, 1, 0, 1, 1], x[:2] * 2, [1, 0])
    check_dataset(ds)
    assert ds.image_shape is None
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, (x[:2] * 2).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16, np.float16, bool])
def test_other_numeric_dtypes_are_features(dtype):
    x = (np.arange(12).reshape(4, 3) % 3).astype(dtype)
    ds = from_arrays(x, [0, 1, 0, 1])
    check_dataset(ds)
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))


def test_python_lists_are_accepted():
    ds = from_arrays([[0.5, 1.0], [2.0, 3.0]], ["x", "y"])
    check_dataset(ds)
    np.testing.assert_array_equal(ds.x_train, [[0.5, 1.0], [2.0, 3.0]])


# --- from_arrays: labels ---------------------------------------------------------------------


def test_integer_labels_are_renumbered_in_sorted_order():
    x = np.zeros((6, 2))
    ds = from_arrays(x, np.array([42, 3, 7, 7, 3, 42], dtype=np.int32), x[:3], [7, 42, 3])
    check_dataset(ds)
    assert ds.class_names == ["3", "7", "42"]  # numeric order, not string order
    np.testing.assert_array_equal(ds.y_train, [2, 0, 1, 1, 0, 2])
    np.testing.assert_array_equal(ds.y_test, [1, 2, 0])


@pytest.mark.parametrize("labels", [
    np.array(["dog", "cat", "cat", "emu"]),
    np.array([b"dog", b"cat", b"cat", b"emu"]),
    np.array(["dog", "cat", "cat", "emu"], dtype=object),
    ["dog", "cat", "cat", "emu"],
])
def test_string_labels(labels):
    x = np.zeros((4, 2))
    ds = from_arrays(x, labels, x[:2], labels[:2])
    check_dataset(ds)
    assert ds.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(ds.y_train, [1, 0, 0, 2])
    np.testing.assert_array_equal(ds.y_test, [1, 0])


def test_class_names_indexed_by_integer_labels():
    x = np.zeros((4, 2))
    ds = from_arrays(x, [2, 0, 2, 0], x[:1], [0], class_names=["plane", "car", "bird"])
    check_dataset(ds)
    assert ds.class_names == ["plane", "car", "bird"]  # unused 'car' stays: the model has 3 outputs
    np.testing.assert_array_equal(ds.y_train, [2, 0, 2, 0])


def test_class_names_with_string_labels_map_to_positions():
    x = np.zeros((4, 2))
    ds = from_arrays(x, ["dog", "cat", "dog", "cat"], x[:1], ["cat"], class_names=("dog", "ant", "cat"))
    check_dataset(ds)
    assert ds.class_names == ["dog", "ant", "cat"]
    np.testing.assert_array_equal(ds.y_train, [0, 2, 0, 2])
    np.testing.assert_array_equal(ds.y_test, [2])


# --- from_arrays: errors ---------------------------------------------------------------------

X4 = np.zeros((4, 3))
Y4 = [0, 1, 0, 1]
IMG = random_images(4, 5, 7, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(x_train=X4, y_train=[0, 1, 0]), r"y_train has 3 labels but x_train has 4 rows"),
    (dict(x_train=X4, y_train=Y4, x_test=X4[:2], y_test=[0]), r"y_test has 1 labels but x_test has 2 rows"),
    (dict(x_train=np.zeros((0, 3)), y_train=[]), r"x_train has 0 rows"),
    (dict(x_train=X4, y_train=Y4, x_test=np.zeros((0, 3)), y_test=[]), r"x_test has 0 rows"),
    (dict(x_train=np.zeros((4, 0)), y_train=Y4), r"x_train has an empty dimension"),
    (dict(x_train=X4, y_train=Y4, x_test=np.zeros((2, 4)), y_test=[0, 1]),
     r"x_train holds feature vectors of 3 columns but x_test holds feature vectors of 4 columns"),
    (dict(x_train=IMG, y_train=Y4, x_test=random_images(2, 7, 5, 3), y_test=[0, 1]),
     r"x_train holds images 3x5x7 \(CxHxW\) but x_test holds images 3x7x5"),
    (dict(x_train=IMG, y_train=Y4, x_test=IMG[..., 0], y_test=[0, 1, 0, 1]),
     r"x_train holds images 3x5x7 .* but x_test holds images 1x5x7"),
    (dict(x_train=IMG, y_train=Y4, x_test=IMG.reshape(4, -1), y_test=Y4),
     r"x_train holds images .* but x_test holds feature vectors of 105 columns"),
    (dict(x_train=X4, y_train=Y4, y_test=[0]), r"y_test is given without x_test"),
    (dict(x_train=X4, y_train=Y4, x_test=X4), r"x_test is given without y_test"),
    (dict(x_train=None, y_train=Y4), r"x_train and y_train are both required"),
    (dict(x_train=np.zeros(4), y_train=Y4), r"x_train must be \(N, D\) rows, .* got shape \(4,\)"),
    (dict(x_train=np.zeros((4, 2, 2, 2, 2), np.uint8), y_train=Y4), r"x_train must be .* got shape \(4, 2, 2, 2, 2\)"),
    (dict(x_train=np.full((4, 2), "a"), y_train=Y4), r"x_train must be a numeric array, got dtype <U1"),
    (dict(x_train=np.zeros((4, 2), dtype=object), y_train=Y4), r"x_train must be a numeric array, got dtype object"),
    (dict(x_train=np.zeros((4, 2), dtype=complex), y_train=Y4), r"x_train must be a numeric array, got dtype complex128"),
    (dict(x_train=[[1, 2], [3]], y_train=[0, 1]), r"x_train is not a rectangular array"),
    (dict(x_train=X4, y_train=np.array(Y4)[:, None]), r"y_train must be 1-D \(one label per row\), got shape \(4, 1\)"),
    (dict(x_train=X4, y_train=Y4, x_test=X4, y_test=np.zeros((4, 2), int)), r"y_test must be 1-D"),
    (dict(x_train=X4, y_train=[0.0, 1.0, 0.0, 1.0]), r"y_train must hold integer or string labels, got dtype float64; "
                                                       r"convert whole-number labels with \.astype"),
    (dict(x_train=X4, y_train=[True, False, True, False]), r"y_train must hold integer or string labels, got dtype bool"),
    (dict(x_train=X4, y_train=np.array([0, "a", 1, 2], dtype=object)), r"y_train must hold integer or string labels, got dtype object"),
    (dict(x_train=X4, y_train=Y4, x_test=X4[:1], y_test=["a"]),
     r"y_train holds integer labels but y_test holds string labels"),
    (dict(x_train=np.zeros((4, 5, 7)), y_train=Y4), r"x_train has shape \(4, 5, 7\) and dtype float64, "
                                                         r"but images must be uint8"),
    (dict(x_train=np.zeros((4, 5, 7, 3), np.int64), y_train=Y4), r"x_train has shape .* int64, but images must be uint8"),
    (dict(x_train=IMG, y_train=Y4, x_test=IMG.astype(np.float32), y_test=Y4), r"x_test has shape .* images must be uint8"),
    (dict(x_train=X4, y_train=Y4, image_shape=(1, 1, 3)),
     r"image_shape is for flat uint8 images, but x_train holds float64 feature vectors"),
    (dict(x_train=np.zeros((4, 6), np.uint8), y_train=Y4, image_shape=(1, 2, 2)),
     r"image_shape \(1, 2, 2\) has 4 values per image but x_train has 6 columns"),
    (dict(x_train=np.zeros((4, 6), np.uint8), y_train=Y4, image_shape=(6,)),
     r"image_shape must be three positive integers"),
    (dict(x_train=np.zeros((4, 6), np.uint8), y_train=Y4, image_shape=(-1, 2, -3)), r"image_shape must be three positive"),
    (dict(x_train=np.zeros((4, 3, 8, 8), np.uint8), y_train=Y4), r"x_train has shape \(4, 3, 8, 8\), which looks channels-first \(N, C, H, W\).*transpose\(0, 2, 3, 1\)"),
    (dict(x_train=X4, y_train=[3, 7, 3, 7], x_test=X4[:2], y_test=[7, 42]),
     r"y_test has label 42 \(row 1\) which y_train never has"),
    (dict(x_train=X4, y_train=["a", "b", "a", "b"], x_test=X4[:1], y_test=["zebra"]),
     r"y_test has label 'zebra' \(row 0\) which y_train never has"),
    (dict(x_train=X4, y_train=[5, 5, 5, 5]), r"y_train has a single class \('5'\); a classifier needs at least 2"),
    (dict(x_train=X4, y_train=[0, 3, 0, 1], class_names=["a", "b", "c"]),
     r"y_train has label 3 \(row 1\) but integer labels index class_names, so they must be in 0\.\.2"),
    (dict(x_train=X4, y_train=[0, -1, 0, 1], class_names=["a", "b", "c"]), r"y_train has label -1 \(row 1\) but integer"),
    (dict(x_train=X4, y_train=["a", "b", "a", "dog"], class_names=["a", "b"]),
     r"y_train has label 'dog' \(row 3\) which is not in class_names"),
    (dict(x_train=X4, y_train=Y4, x_test=X4[:1], y_test=[2], class_names=["a", "b", "c"]),
     r"y_test has class 'c', which y_train never has"),
    (dict(x_train=X4, y_train=[1, 1, 1, 1], class_names=["a", "b"]), r"y_train has a single class \('b'\)"),
    (dict(x_train=X4, y_train=Y4, class_names=["a", "b", "a"]), r"class_names lists 'a' more than once"),
    (dict(x_train=X4, y_train=Y4, class_names="ab"), r"class_names must be a list of names, got the single string 'ab'"),
    (dict(x_train=X4, y_train=Y4, class_names=["only"]), r"class_names must name at least 2 classes"),
    (dict(x_train=X4, y_train=Y4, class_names=[["a", "b"]]), r"class_names must be a 1-D list of names"),
])
def test_from_arrays_errors(kwargs, match):
    with pytest.raises(UserError, match=r"^mydata: " + match):
        from_arrays(**kwargs, where="mydata")


@pytest.mark.parametrize("bad, split, text", [
    (np.nan, "x_train", "NaN"),
    (np.inf, "x_train", r"inf \(infinite\)"),
    (-np.inf, "x_test", r"-inf \(infinite\)"),
    (1e39, "x_test", r"1e\+39 \(beyond float32's range\)"),
])
def test_non_finite_features_name_split_row_and_column(bad, split, text):
    x_train = np.ones((5, 4))
    x_test = np.ones((4, 4))
    target = x_train if split == "x_train" else x_test
    target[2, 3] = bad
    target[-1, 0] = bad  # a later row: the first bad value (row-major) is reported
    with pytest.raises(UserError, match=rf"^arrays: {split} has the value {text} at row 2, column 3; "
                                        r"features must be finite"):
        from_arrays(x_train, [0, 1, 0, 1, 0], x_test, [0, 1, 0, 1])


def test_non_finite_search_spans_chunks():
    x = np.zeros((10_000, 2), dtype=np.float32)
    x[9_000, 1] = np.nan
    with pytest.raises(UserError, match=r"row 9000, column 1"):
        from_arrays(x, np.arange(10_000) % 2)


# --- .npz ------------------------------------------------------------------------------------

NPZ_CASES = {
    "flat uint8 images": (dict(x_train=random_images(4, 1, 105, None).reshape(4, -1), image_shape=np.array([3, 5, 7])),
                          (3, 5, 7)),
    "flat uint8 features": (dict(x_train=random_images(4, 1, 6, None).reshape(4, -1)), None),
    "NHW": (dict(x_train=random_images(4, 5, 7, None)), (1, 5, 7)),
    "NHWC 1": (dict(x_train=random_images(4, 5, 7, 1)), (1, 5, 7)),
    "NHWC 3": (dict(x_train=random_images(4, 5, 7, 3)), (3, 5, 7)),
    "float64 features": (dict(x_train=np.random.default_rng(0).normal(size=(4, 6))), None),
    "int32 features": (dict(x_train=np.arange(24, dtype=np.int32).reshape(4, 6)), None),
}
LABEL_CASES = {
    "ints 3/7/42": (dict(y_train=np.array([42, 3, 7, 3]), y_test=np.array([7, 3])), ["3", "7", "42"], [2, 0, 1, 0]),
    "strings": (dict(y_train=np.array(["b", "a", "c", "a"]), y_test=np.array(["c", "a"])), ["a", "b", "c"], [1, 0, 2, 0]),
    "class_names": (dict(y_train=np.array([1, 0, 1, 0]), y_test=np.array([0, 1]), class_names=np.array(["no", "yes"])),
                    ["no", "yes"], [1, 0, 1, 0]),
}


@pytest.mark.parametrize("layout", NPZ_CASES)
@pytest.mark.parametrize("labels", LABEL_CASES)
def test_npz_round_trip(tmp_path, layout, labels):
    arrays, shape = NPZ_CASES[layout]
    label_arrays, names, codes = LABEL_CASES[labels]
    arrays = {**arrays, "x_test": arrays["x_train"][:2], **label_arrays}
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    ds = load_npz(path)
    check_dataset(ds)
    assert ds.image_shape == shape
    assert ds.class_names == names
    np.testing.assert_array_equal(ds.y_train, codes)
    expected = from_arrays(arrays["x_train"], arrays["y_train"], image_shape=arrays.get("image_shape"))
    np.testing.assert_array_equal(ds.x_train, expected.x_train)
    np.testing.assert_array_equal(ds.x_test, expected.x_train[:2])
    assert load_data(path).describe() == ds.describe()  # load_data dispatches .npz here


def test_npz_compressed_and_extra_keys(tmp_path):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, x_train=np.eye(3), y_train=[0, 1, 2], x_test=np.eye(3)[:1], y_test=[0], notes=np.arange(3))
    ds = load_npz(str(path))
    check_dataset(ds)
    assert ds.class_names == ["0", "1", "2"]


def test_npz_missing_keys_are_listed(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.eye(2), y_train=[0, 1], extra=[1])
    with pytest.raises(UserError, match=r"data\.npz lacks the array\(s\) x_test, y_test \(found: extra, x_train, y_train\)"):
        load_npz(path)


def test_npz_errors_name_the_file(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.eye(2), y_train=[0, 1], x_test=np.eye(2), y_test=[0, 1, 1])
    with pytest.raises(UserError, match=rf"^{path}: y_test has 3 labels but x_test has 2 rows"):
        load_npz(path)


@pytest.mark.parametrize("content", [b"this is not a zip file at all", b"", b"PK\x03\x04 truncated zip"])
def test_npz_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"cannot read {path} as an \.npz archive"):
        load_npz(path)


def test_npz_truncated_archive(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.eye(50), y_train=np.arange(50) % 2, x_test=np.eye(50), y_test=np.arange(50) % 2)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=rf"{path}.*corrupt"):
        load_npz(path)


def test_npz_damaged_member_is_named(tmp_path):
    path = tmp_path / "data.npz"
    x = np.full((20, 20), 7.0)
    np.savez(path, x_train=x, y_train=np.arange(20) % 2, x_test=x, y_test=np.arange(20) % 2)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:  # flip one data byte of x_train.npy (stored uncompressed)
        info = z.getinfo("x_train.npy")
    header = 30 + len(info.filename) + len(info.extra)
    raw[info.header_offset + header + info.file_size - 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=rf"^{path}: cannot read x_train .*corrupt or truncated"):
        load_npz(path)


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "data.npz"
    labels = np.array(["a", "b"], dtype=object)
    np.savez(path, x_train=np.eye(2), y_train=labels, x_test=np.eye(2), y_test=labels)
    with pytest.raises(UserError, match=r"y_train is an array of Python objects.*dtype=str"):
        load_npz(path)
    np.savez(path, x_train=np.eye(2), y_train=[0, 1], x_test=np.eye(2), y_test=[0, 1],
             class_names=np.array(["a", "b"], dtype=object))
    with pytest.raises(UserError, match=r"class_names is an array of Python objects"):
        load_npz(path)


def test_npz_missing_file_and_npy(tmp_path):
    with pytest.raises(UserError, match=r"nope\.npz: no such file"):
        load_npz(tmp_path / "nope.npz")
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.eye(2))
    with pytest.raises(UserError, match=r"holds a single array \(\.npy format\), not an \.npz archive"):
        load_npz(path)


# --- image folders ---------------------------------------------------------------------------

H, W = 6, 10  # non-square on purpose: catches height/width mix-ups


def test_grayscale_png_folder_exact_pixels(tmp_path):
    imgs = random_images(7, H, W, None, seed=3)
    write_folder(tmp_path, {"train": {"dog": [imgs[0], imgs[1]], "cat": [imgs[2], imgs[3], imgs[4]]},
                            "test": {"dog": [imgs[5]], "cat": [imgs[6]]}})
    ds = load_image_folder(tmp_path)
    check_dataset(ds)
    assert ds.class_names == ["cat", "dog"] and ds.image_shape == (1, H, W)
    np.testing.assert_array_equal(ds.x_train, imgs[[2, 3, 4, 0, 1]].reshape(5, -1))
    np.testing.assert_array_equal(ds.y_train, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds.x_test, imgs[[6, 5]].reshape(2, -1))
    np.testing.assert_array_equal(ds.y_test, [0, 1])


def test_rgb_png_folder_is_channel_planar(tmp_path):
    imgs = random_images(4, H, W, 3, seed=4)
    write_folder(tmp_path, {"train": {"a": [imgs[0]], "b": [imgs[1], imgs[2]]}, "test": {"b": [imgs[3]]}})
    ds = load_data(tmp_path)  # load_data dispatches a folder with train/ here
    check_dataset(ds)
    assert ds.image_shape == (3, H, W) and ds.class_names == ["a", "b"]
    np.testing.assert_array_equal(ds.x_train.reshape(3, 3, H, W), imgs[:3].transpose(0, 3, 1, 2))
    # one pixel by hand: image 1, row 5, column 9, green -> plane 1, offset 5*W + 9
    assert ds.x_train[1, 1 * H * W + 5 * W + 9] == imgs[1, 5, 9, 1]
    np.testing.assert_array_equal(ds.x_test.reshape(1, 3, H, W), imgs[3:].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ds.y_test, [1])


def test_files_sorted_by_name_and_others_ignored(tmp_path):
    imgs = random_images(4, H, W, None, seed=5)
    write_image(tmp_path / "train" / "a" / "z.PNG", imgs[0])     # upper-case extension counts
    write_image(tmp_path / "train" / "a" / "b.bmp", imgs[1])
    write_image(tmp_path / "train" / "a" / ".hidden.png", imgs[2])  # hidden: ignored
    write_image(tmp_path / "train" / "a" / "nested" / "x.png", imgs[2])  # nested folder: ignored
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "a" / "thumbs.gif").write_bytes(b"GIF89a")  # not a listed extension
    write_image(tmp_path / "train" / "b" / "m.png", imgs[3])
    write_image(tmp_path / "train" / ".cache" / "x.png", imgs[3])  # hidden class folder: ignored
    (tmp_path / "train" / "README").write_text("loose files in train/ are ignored")
    write_image(tmp_path / "test" / "b" / "t.png", imgs[3])
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ["a", "b"]
    np.testing.assert_array_equal(ds.x_train, imgs[[1, 0, 3]].reshape(3, -1))


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG"])
@pytest.mark.parametrize("channels", [None, 3])
def test_jpeg_folder_shape(tmp_path, suffix, channels):
    imgs = random_images(3, H, W, channels, seed=6)
    write_folder(tmp_path, {"train": {"x": [imgs[0]], "y": [imgs[1]]}, "test": {"x": [imgs[2]]}}, suffix=suffix)
    ds = load_image_folder(tmp_path)
    check_dataset(ds)
    assert ds.image_shape == (1 if channels is None else 3, H, W)
    assert ds.x_train.shape == (2, int(np.prod(ds.image_shape)))


def test_mixed_grayscale_and_rgb_load_as_rgb(tmp_path):
    grey, rgb = random_images(1, H, W, None, seed=7)[0], random_images(1, H, W, 3, seed=8)[0]
    write_folder(tmp_path, {"train": {"a": [grey], "b": [rgb]}, "test": {"a": [grey]}})
    ds = load_image_folder(tmp_path)
    assert ds.image_shape == (3, H, W)
    np.testing.assert_array_equal(ds.x_train[0].reshape(3, H, W), np.stack([grey] * 3))  # replicated planes
    np.testing.assert_array_equal(ds.x_train[1].reshape(3, H, W), rgb.transpose(2, 0, 1))


def test_mode_conversions(tmp_path):
    rgb = random_images(1, H, W, 3, seed=9)[0]
    grey = random_images(1, H, W, None, seed=10)[0]
    rgba = np.dstack([rgb, np.full((H, W), 17, np.uint8)])
    la = np.dstack([grey, np.full((H, W), 200, np.uint8)])
    # RGBA -> RGB and P (colour palette, only 4 colours so the palette is exact) -> RGB
    few = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [9, 9, 9]], np.uint8)[np.arange(H * W).reshape(H, W) % 4]
    write_image(tmp_path / "c" / "train" / "a" / "rgba.png", rgba)
    write_image(tmp_path / "c" / "train" / "b" / "pal.png", few, mode="P")
    write_image(tmp_path / "c" / "test" / "a" / "rgb.png", rgb)
    ds = load_image_folder(tmp_path / "c")
    assert ds.image_shape == (3, H, W)
    np.testing.assert_array_equal(ds.x_train[0].reshape(3, H, W), rgb.transpose(2, 0, 1))  # alpha dropped
    np.testing.assert_array_equal(ds.x_train[1].reshape(3, H, W), few.transpose(2, 0, 1))
    # LA -> L, '1' -> L (0/255), grey palette -> L, 16-bit -> L scaled
    bits = (grey > 127).astype(np.uint8) * 255
    wide = grey.astype(np.uint16) * 257  # 0..65535, maps back to grey exactly
    write_image(tmp_path / "g" / "train" / "a" / "la.png", la)
    write_image(tmp_path / "g" / "train" / "a" / "one.png", bits, mode="1")
    write_image(tmp_path / "g" / "train" / "b" / "pal.png", grey, mode="P")
    write_image(tmp_path / "g" / "test" / "b" / "wide.png", wide)
    assert Image.open(tmp_path / "g" / "test" / "b" / "wide.png").mode.startswith("I")
    assert Image.open(tmp_path / "g" / "train" / "b" / "pal.png").mode == "P"
    ds = load_image_folder(tmp_path / "g")
    assert ds.image_shape == (1, H, W)
    np.testing.assert_array_equal(ds.x_train.reshape(3, H, W), [grey, bits, grey])
    np.testing.assert_array_equal(ds.x_test.reshape(H, W), grey)


def test_image_size_resizes_every_image(tmp_path):
    a = random_images(1, 12, 20, 3, seed=11)[0]
    b = random_images(1, 9, 4, 3, seed=12)[0]
    flat = np.full((30, 30, 3), (10, 20, 30), np.uint8)
    write_folder(tmp_path, {"train": {"a": [a], "b": [b]}, "test": {"a": [flat]}})
    write_image(tmp_path / "test" / "b" / "big.jpg", np.full((64, 48), 99, np.uint8))  # JPEG: draft-decoded
    ds = load_image_folder(tmp_path, image_size=(H, W))
    check_dataset(ds)
    assert ds.image_shape == (3, H, W)
    expected = np.asarray(Image.fromarray(a).resize((W, H), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ds.x_train[0].reshape(3, H, W), expected.transpose(2, 0, 1))
    assert (ds.x_test[0].reshape(3, H, W) == np.array([10, 20, 30])[:, None, None]).all()
    assert np.abs(ds.x_test[1].astype(int) - 99).max() <= 2  # a flat grey JPEG stays flat grey


@pytest.mark.parametrize("image_size", [(0, 5), (5, -1), (5,), (5, 5, 5), (2.0, 3), "6x10", (True, 4)])
def test_image_size_must_be_two_positive_ints(tmp_path, image_size):
    write_folder(tmp_path, {"train": {"a": [np.zeros((2, 2), np.uint8)]}, "test": {"a": [np.zeros((2, 2), np.uint8)]}})
    with pytest.raises(UserError, match=r"image size must be two positive integers \(height, width\)"):
        load_image_folder(tmp_path, image_size=image_size)


def _two_class_folder(root, test=True):
    img = np.zeros((H, W), np.uint8)
    write_folder(root, {"train": {"a": [img], "b": [img]}, **({"test": {"a": [img]}} if test else {})})
    return root


def test_folder_errors(tmp_path):
    img = np.zeros((H, W), np.uint8)
    with pytest.raises(UserError, match=r"no train/ folder \(expected .*train/<class>/<image>"):
        load_image_folder(tmp_path)

    root = _two_class_folder(tmp_path / "notest", test=False)
    with pytest.raises(UserError, match=r"notest: no test/ folder; an image folder needs both train/ and test/"):
        load_image_folder(root)

    root = tmp_path / "noclasses"
    write_image(root / "train" / "loose.png", img)
    (root / "test").mkdir()
    with pytest.raises(UserError, match=r"noclasses/train has no class folders"):
        load_image_folder(root)

    root = _two_class_folder(tmp_path / "emptytest", test=False)
    (root / "test").mkdir()
    with pytest.raises(UserError, match=r"emptytest/test has no class folders"):
        load_image_folder(root)

    root = _two_class_folder(tmp_path / "emptyclass")
    (root / "train" / "c").mkdir()
    (root / "train" / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"emptyclass/train/c: class folder has no images"):
        load_image_folder(root)

    root = tmp_path / "oneclass"
    write_folder(root, {"train": {"only": [img]}, "test": {"only": [img]}})
    with pytest.raises(UserError, match=r"has a single class folder \('only'\); a classifier needs at least 2"):
        load_image_folder(root)

    root = _two_class_folder(tmp_path / "newclass")
    write_image(root / "test" / "zebra" / "z.png", img)
    with pytest.raises(UserError, match=r"newclass/test/zebra: class 'zebra' has no folder in .*train"):
        load_image_folder(root)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_image_is_named(tmp_path, damage):
    root = _two_class_folder(tmp_path)
    bad = write_image(root / "train" / "b" / "zz_bad.png", random_images(1, H, W, 3)[0])
    raw = bad.read_bytes()
    bad.write_bytes({"garbage": b"\x89PNG not really", "truncated": raw[: len(raw) * 2 // 3], "empty": b""}[damage])
    with pytest.raises(UserError, match=r"zz_bad\.png: not a readable image"):
        load_image_folder(root)


def test_mixed_sizes_name_a_file_of_each_size(tmp_path):
    root = _two_class_folder(tmp_path)
    write_image(root / "train" / "b" / "wide.png", np.zeros((H, W + 3), np.uint8))
    with pytest.raises(UserError, match=rf"images differ in size: \S+img0\.png is {W}x{H} but \S+wide\.png "
                                        rf"is {W + 3}x{H} \(width x height\); pass --image-size"):
        load_image_folder(root)
    assert load_image_folder(root, image_size=(H, W)).x_train.shape == (3, H * W)


# --- read_image ------------------------------------------------------------------------------


def test_read_image_exact_pixels(tmp_path):
    rgb = random_images(1, H, W, 3, seed=13)[0]
    grey = random_images(1, H, W, None, seed=14)[0]
    row = read_image(write_image(tmp_path / "rgb.png", rgb), (3, H, W))
    assert row.shape == (3 * H * W,) and row.dtype == np.uint8 and row.flags.c_contiguous
    np.testing.assert_array_equal(row.reshape(3, H, W), rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "g.png", grey), (1, H, W)), grey.ravel())
    # pure representation changes are made for the model
    rgba = np.dstack([rgb, np.zeros((H, W), np.uint8)])
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "rgba.png", rgba), (3, H, W)).reshape(3, H, W),
                                  rgb.transpose(2, 0, 1))
    la = np.dstack([grey, np.full((H, W), 255, np.uint8)])
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "la.png", la), (1, H, W)), grey.ravel())
    grey_palette = write_image(tmp_path / "p.png", grey, mode="P")  # fits either model
    np.testing.assert_array_equal(read_image(grey_palette, (1, H, W)), grey.ravel())
    np.testing.assert_array_equal(read_image(grey_palette, (3, H, W)).reshape(3, H, W), np.stack([grey] * 3))


def test_read_image_wrong_size_and_resize(tmp_path):
    path = write_image(tmp_path / "small.png", random_images(1, H, W, 3)[0])
    with pytest.raises(UserError, match=rf"small\.png: the image is {W}x{H} but the model takes 32x16 "
                                        r"\(width x height\); pass --resize"):
        read_image(path, (3, 16, 32))
    row = read_image(path, (3, 16, 32), resize=True)
    assert row.shape == (3 * 16 * 32,)
    jpeg = write_image(tmp_path / "big.jpg", np.full((80, 120, 3), 128, np.uint8))
    assert np.abs(read_image(jpeg, (3, 8, 12), resize=True).astype(int) - 128).max() <= 2


def test_read_image_wrong_channel_count(tmp_path):
    rgb = write_image(tmp_path / "rgb.png", random_images(1, H, W, 3)[0])
    grey = write_image(tmp_path / "grey.png", random_images(1, H, W, None)[0])
    colour_palette = write_image(tmp_path / "pal.png", random_images(1, H, W, 3)[0], mode="P")
    with pytest.raises(UserError, match=r"rgb\.png: wrong channel count: the image is colour \(3 channels\) "
                                        r"but the model takes grayscale \(1 channel\) images"):
        read_image(rgb, (1, H, W))
    with pytest.raises(UserError, match=r"grey\.png: wrong channel count: the image is grayscale"):
        read_image(grey, (3, H, W))
    with pytest.raises(UserError, match=r"pal\.png: wrong channel count"):
        read_image(colour_palette, (1, H, W))
    with pytest.raises(UserError, match=r"4-channel images; image files can only feed"):
        read_image(rgb, (4, H, W))


def test_read_image_unreadable(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(UserError, match=r"bad\.jpg: not a readable image"):
        read_image(bad, (3, H, W))
    with pytest.raises(UserError, match=r"missing\.png: no such file"):
        read_image(tmp_path / "missing.png", (3, H, W))


def test_pillow_is_not_imported_by_the_data_package():
    code = "import sys, fastfcnn.data, fastfcnn.data.folder, fastfcnn.data.npz; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
