"""Tests for fastfcnn.data: loading, validation, download, split and channel statistics."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from cifar_fixture import CLASS_NAMES, make_synthetic, write_cifar10

from fastfcnn.data import cifar10 as data
from fastfcnn.data import (
    ARCHIVE_NAME,
    FOLDER_NAME,
    channel_stats,
    default_data_dir,
    load_cifar10,
    resolve_data_dir,
    stratified_split,
)
from fastfcnn.data import Dataset
from fastfcnn.errors import UserError


@pytest.fixture(scope="module")
def arrays():
    return make_synthetic(50, 20, seed=0)


def assert_matches(ds: Dataset, arrays, class_names=CLASS_NAMES) -> None:
    x_train, y_train, x_test, y_test = arrays
    for got, want, dtype in [(ds.x_train, x_train, np.uint8), (ds.y_train, y_train, np.int64),
                             (ds.x_test, x_test, np.uint8), (ds.y_test, y_test, np.int64)]:
        assert got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    assert ds.class_names == list(class_names)


# --- loading -----------------------------------------------------------------------------


def test_folder_and_tarball_give_identical_data(tmp_path, arrays):
    names = [f"class{i}" for i in range(10)]
    write_cifar10(tmp_path / "folder", *arrays, class_names=names)
    archive = write_cifar10(tmp_path / "tar", *arrays, class_names=names, tarball=True)
    assert archive == tmp_path / "tar" / ARCHIVE_NAME
    assert [p.name for p in archive.parent.iterdir()] == [ARCHIVE_NAME]

    from_folder = load_cifar10(tmp_path / "folder", download=False)
    from_tar = load_cifar10(str(tmp_path / "tar"), download=False)
    assert_matches(from_folder, arrays, names)
    assert_matches(from_tar, arrays, names)


@pytest.mark.parametrize("tarball", [False, True])
def test_training_batches_of_unequal_size_load_in_order(tmp_path, tarball):
    # 53 rows in 5 files: 11, 11, 11, 10, 10 (the official files are equal; the loader copies
    # equal ones into place as it reads them and concatenates the rest at the end)
    arrays = make_synthetic(53, 20, seed=4)
    write_cifar10(tmp_path, *arrays, tarball=tarball)
    assert_matches(load_cifar10(str(tmp_path), download=False), arrays)


def test_tarball_is_extracted_once_for_later_loads(tmp_path, arrays):
    archive = write_cifar10(tmp_path, *arrays, tarball=True)
    load_cifar10(tmp_path, download=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ARCHIVE_NAME, FOLDER_NAME])  # no temp left
    archive.unlink()  # the second load must come from the extracted folder
    assert_matches(load_cifar10(tmp_path, download=False), arrays)


def test_unwritable_dir_reads_tarball_in_memory(tmp_path, arrays, monkeypatch):
    write_cifar10(tmp_path, *arrays, tarball=True)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(data.tempfile, "mkdtemp", refuse)
    assert_matches(load_cifar10(tmp_path, download=False), arrays)
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE_NAME]


def test_missing_meta_or_label_names_gives_standard_names(tmp_path, arrays):
    folder = write_cifar10(tmp_path, *arrays, class_names=["x"] * 10)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"num_vis": 3072}, protocol=2))
    assert load_cifar10(tmp_path).class_names == CLASS_NAMES
    (folder / "batches.meta").unlink()
    assert load_cifar10(tmp_path).class_names == CLASS_NAMES


def test_env_var_and_default_dirs(tmp_path, arrays, monkeypatch):
    write_cifar10(tmp_path / "env", *arrays)
    monkeypatch.setenv("FASTFCNN_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(str(tmp_path / "other")) == tmp_path / "other"
    assert_matches(load_cifar10(download=False), arrays)

    monkeypatch.delenv("FASTFCNN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "fastfcnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "fastfcnn"


def test_missing_data_without_download_names_the_dir(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(UserError, match="not found") as info:
        load_cifar10(where, download=False)
    assert str(where) in str(info.value)


# --- download ----------------------------------------------------------------------------


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


@pytest.fixture
def served_tarball(tmp_path, arrays, monkeypatch):
    """Serve a test archive's bytes from a fake urlopen; return (bytes, list of urlopen calls)."""
    payload = write_cifar10(tmp_path / "source", *arrays, tarball=True).read_bytes()
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return FakeResponse(payload)

    monkeypatch.setattr(data, "urlopen", fake_urlopen)
    return payload, calls


def test_download_with_bad_md5_fails_and_leaves_nothing(tmp_path, served_tarball):
    target = tmp_path / "dl"
    with pytest.raises(UserError, match="MD5"):
        load_cifar10(target)
    assert list(target.iterdir()) == []


def test_download_with_good_md5_loads(tmp_path, arrays, served_tarball, monkeypatch):
    payload, calls = served_tarball
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    target = tmp_path / "dl"
    assert_matches(load_cifar10(target), arrays)
    assert calls == [(data.CIFAR10_URL, data.DOWNLOAD_TIMEOUT)]
    assert (target / ARCHIVE_NAME).read_bytes() == payload
    assert sorted(p.name for p in target.iterdir()) == sorted([ARCHIVE_NAME, FOLDER_NAME])


@pytest.mark.parametrize("error", [URLError("no route to host"), TimeoutError("timed out")])
def test_network_failure_names_the_dir(tmp_path, monkeypatch, error):
    def fail(url, timeout=None):
        raise error

    monkeypatch.setattr(data, "urlopen", fail)
    target = tmp_path / "dl"
    with pytest.raises(UserError, match="download failed") as info:
        load_cifar10(target)
    assert str(target) in str(info.value) and "--data-dir" in str(info.value)
    assert list(target.iterdir()) == []


# --- validation --------------------------------------------------------------------------


def test_truncated_tarball(tmp_path, arrays):
    archive = write_cifar10(tmp_path, *arrays, tarball=True)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or truncated") as info:
        load_cifar10(tmp_path, download=False)
    assert str(archive) in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE_NAME]  # no partial extraction left


def test_invalid_member_in_tarball_is_not_extracted(tmp_path, arrays):
    x_train, y_train, x_test, y_test = arrays
    write_cifar10(tmp_path, x_train, y_train, x_test[:, :100], y_test, tarball=True)
    with pytest.raises(UserError, match=f"{FOLDER_NAME}/test_batch"):
        load_cifar10(tmp_path, download=False)
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE_NAME]


def test_corrupt_pickle_names_the_file(tmp_path, arrays):
    folder = write_cifar10(tmp_path, *arrays)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(UserError, match="data_batch_3") as info:
        load_cifar10(tmp_path, download=False)
    assert str(batch) in str(info.value)


def rewrite_batch(path: Path, **changes) -> None:
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data": np.zeros((10, 3000), np.uint8)}, "shape"),
        ({"data": np.zeros((10, 3072), np.float32)}, "uint8"),
        ({"labels": list(range(9))}, "10 rows"),
        ({"labels": [0] * 9 + [10]}, "0..9"),
        ({"labels": [-1] + [0] * 9}, "0..9"),
        ({"labels": None}, "b'labels'"),
        ({"data": None}, "b'data'"),
    ],
)
def test_malformed_batch(tmp_path, arrays, changes, message):
    folder = write_cifar10(tmp_path, *arrays)  # 50 training rows -> 10 per batch
    rewrite_batch(folder / "data_batch_2", **changes)
    with pytest.raises(UserError, match=message) as info:
        load_cifar10(tmp_path, download=False)
    assert str(folder / "data_batch_2") in str(info.value)


def test_missing_batch(tmp_path, arrays):
    folder = write_cifar10(tmp_path, *arrays, n_batches=4)
    with pytest.raises(UserError, match="missing") as info:
        load_cifar10(tmp_path, download=False)
    assert str(folder / "data_batch_5") in str(info.value)


# --- stratified_split --------------------------------------------------------------------


def test_stratified_split_exact_per_class_counts():
    y = np.repeat(np.arange(10), 100)
    train, val = stratified_split(y, 50, np.random.default_rng(0))
    assert train.dtype == val.dtype == np.int64
    assert len(val) == 50 and len(train) == 950
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    np.testing.assert_array_equal(np.bincount(y[val], minlength=10), [5] * 10)


def test_stratified_split_largest_remainder():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)  # quotas for 15: 7.5, 4.5, 3.0 -> 8, 4, 3
    _, val = stratified_split(y, 15, np.random.default_rng(1))
    np.testing.assert_array_equal(np.bincount(y[val]), [8, 4, 3])
    _, val = stratified_split(y, 7, np.random.default_rng(1))  # 3.5, 2.1, 1.4 -> 4, 2, 1
    np.testing.assert_array_equal(np.bincount(y[val]), [4, 2, 1])


def test_stratified_split_randomness_comes_from_rng():
    y = np.repeat(np.arange(10), 100)
    a = stratified_split(y, 100, np.random.default_rng(7))
    b = stratified_split(y, 100, np.random.default_rng(7))
    c = stratified_split(y, 100, np.random.default_rng(8))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_sizes():
    y = np.arange(20) % 4
    train, val = stratified_split(y, 0, np.random.default_rng(0))
    assert val.size == 0 and val.dtype == np.int64
    np.testing.assert_array_equal(train, np.arange(20))
    for bad in (-1, 20, 21):
        with pytest.raises(UserError, match="validation size"):
            stratified_split(y, bad, np.random.default_rng(0))


# --- channel_stats -----------------------------------------------------------------------


def reference_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    planes = x.astype(np.float64).reshape(len(x), 3, 1024)
    return planes.mean(axis=(0, 2)), planes.std(axis=(0, 2))


def test_channel_stats_matches_numpy(arrays):
    x = np.concatenate([arrays[0], np.full((3, 3072), 255, np.uint8)])
    mean, std = channel_stats(x, chunk_rows=7)  # several chunks, last one partial
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (3,)
    want_mean, want_std = reference_stats(x)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(std, want_std, rtol=1e-5)
    np.testing.assert_allclose(channel_stats(x)[0], want_mean, rtol=1e-5)  # default chunking


def test_channel_stats_on_index_subset(arrays):
    x = arrays[0]
    idx = np.array([3, 1, 4, 15, 9, 26, 5])
    mean, std = channel_stats(x, idx=idx, chunk_rows=3)
    want_mean, want_std = reference_stats(x[idx])
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(std, want_std, rtol=1e-5)


def test_channel_stats_separates_channels():
    x = np.zeros((4, 3072), np.uint8)
    x[:, 1024:2048] = 100
    x[:2, 2048:] = 255
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, [0, 100, 127.5])
    np.testing.assert_allclose(std, [0, 0, 127.5])


# --- the synthetic fixture itself --------------------------------------------------------


def test_synthetic_data_is_learnable():
    x_train, y_train, x_test, y_test = make_synthetic(200, 100, seed=3)
    assert x_train.shape == (200, 3072) and x_train.dtype == np.uint8 and y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_train), [20] * 10)
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(10)])
    dist = ((x_test[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(axis=2)
    assert (dist.argmin(axis=1) == y_test).mean() > 0.9
    np.testing.assert_array_equal(make_synthetic(200, 100, seed=3)[0], x_train)


def test_leftovers_of_killed_downloads_are_cleaned_up(tmp_path, arrays):
    import os
    import time

    write_cifar10(tmp_path, *arrays)
    part = tmp_path / f".{ARCHIVE_NAME}-abc.part"
    staging = tmp_path / f".{FOLDER_NAME}-xyz"
    fresh = tmp_path / f".{ARCHIVE_NAME}-new.part"
    for p in (part, fresh):
        p.write_bytes(b"partial")
    staging.mkdir()
    (staging / "data_batch_1").write_bytes(b"half")
    old = time.time() - 2 * data.STALE_SECONDS
    for p in (part, staging):
        os.utime(p, (old, old))
    load_cifar10(tmp_path, download=False)
    assert not part.exists() and not staging.exists()
    assert fresh.exists(), "a download in progress in another process must be left alone"


def test_an_archive_with_the_official_name_must_be_the_official_file(tmp_path, arrays, monkeypatch):
    from fastfcnn.data import load_data

    monkeypatch.setattr(data, "VERIFY_OFFICIAL_MD5", True)
    archive = write_cifar10(tmp_path / "d", *arrays, tarball=True)
    with pytest.raises(UserError, match="named like the official CIFAR-10 archive but its MD5 is"):
        load_cifar10(tmp_path / "d", download=False)
    mine = archive.rename(tmp_path / "my-copy.tar.gz")             # a copy of one's own, passed by name
    assert_matches(load_data(mine), arrays)
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(mine.read_bytes()).hexdigest())
    (tmp_path / "d" / ARCHIVE_NAME).write_bytes(mine.read_bytes())
    assert_matches(load_cifar10(tmp_path / "d", download=False), arrays)
