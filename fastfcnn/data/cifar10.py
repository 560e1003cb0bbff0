"""CIFAR-10 in the official python layout: find, download (MD5-checked), extract, validate.

Images stay uint8 end to end: the whole dataset takes about 180 MB as bytes and is never
copied to float here.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from urllib.error import URLError
from typing import BinaryIO
from urllib.request import urlopen

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from ..errors import UserError
from .dataset import Dataset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)  # channel-planar: the R plane, then G, then B
N_FEATURES = 3072
DOWNLOAD_TIMEOUT = 30.0  # seconds, per blocking network operation

_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILE = "test_batch"
_META_FILE = "batches.meta"  # optional: default class names are used without it
_FILES = (*_TRAIN_FILES, _TEST_FILE, _META_FILE)
_HINT = "put the official archive there or pass --data-dir"


def default_data_dir() -> Path:
    """Return ``$FASTFCNN_DATA`` if set, else ``$XDG_CACHE_HOME/fastfcnn`` or ``~/.cache/fastfcnn``."""
    if os.environ.get("FASTFCNN_DATA"):
        return Path(os.environ["FASTFCNN_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "fastfcnn"


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    """Return `data_dir` as a Path, or :func:`default_data_dir` when it is None."""
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser()


def load_cifar10(data_dir: Path | str | None = None, download: bool = True) -> Dataset:
    """Load CIFAR-10 from `data_dir`, downloading the official archive if needed.

    Looks for ``DIR/cifar-10-batches-py/`` first, then ``DIR/cifar-10-python.tar.gz``
    (extracted into DIR on first use when DIR is writable, read in memory otherwise),
    and finally downloads the archive into DIR when `download` is true.

    Parameters
    ----------
    data_dir : Path, str or None
        Directory holding the data; None means :func:`default_data_dir`.
    download : bool
        Whether to download the archive when neither the folder nor the archive exists.

    Returns
    -------
    Dataset
        The validated dataset: (N, 3072) uint8 channel-planar images of shape (3, 32, 32).

    Raises
    ------
    UserError
        If the data is missing and cannot be downloaded, or a file is corrupt or malformed.
    """
    root = resolve_data_dir(data_dir)
    folder, archive = root / FOLDER_NAME, root / ARCHIVE_NAME
    remove_stale_staging(root)
    if folder.is_dir():
        return _assemble(_folder_files(folder), lambda name: str(folder / name))
    if not archive.is_file():
        if not download:
            raise UserError(f"{_not_found(root)} and downloading is disabled; {_HINT}")
        _download(archive)
        return _load_archive(archive)           # just downloaded: its MD5 was checked on the way in
    _check_official(archive)
    return _load_archive(archive)


def load_cifar10_archive(archive: Path | str) -> Dataset:
    """Load CIFAR-10 from an archive in the official layout that the user names explicitly
    (``--data my-copy.tar.gz``): no MD5 check, since it need not be the official file."""
    archive = Path(archive)
    if not archive.is_file():
        raise UserError(f"no such archive: {archive}")
    return _load_archive(archive)


# The official file name promises the official bytes; tests that build their own archives turn this off.
VERIFY_OFFICIAL_MD5 = True


def _check_official(archive: Path) -> None:
    """An archive named like the official one must be the official one (its MD5 matches)."""
    if not VERIFY_OFFICIAL_MD5:
        return
    md5 = hashlib.md5()
    try:
        with open(archive, "rb") as f:
            while chunk := f.read(1 << 20):
                md5.update(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {archive}: {exc.strerror or exc}") from exc
    if md5.hexdigest() != CIFAR10_MD5:
        raise UserError(f"{archive} is named like the official CIFAR-10 archive but its MD5 is {md5.hexdigest()}, "
                        f"not {CIFAR10_MD5}: it is damaged or another file; delete it to download it again, or "
                        f"pass a copy of your own with --data FILE.tar.gz")


STALE_SECONDS = 3600  # a download or extraction that has not touched its file for this long is dead


def remove_stale_staging(root: Path) -> list[str]:
    """Delete what a killed download (.cifar-10-python.tar.gz-*.part) or extraction
    (.cifar-10-batches-py-*/) left in `root`. Only files idle for STALE_SECONDS go, so another
    process's download in progress is left alone. Returns the names removed."""
    removed = []
    now = time.time()
    for leftover in [*root.glob(f".{ARCHIVE_NAME}-*.part"), *root.glob(f".{FOLDER_NAME}-*")]:
        try:
            if now - leftover.stat().st_mtime < STALE_SECONDS:
                continue
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed.append(leftover.name)
        except OSError:
            pass
    return removed


def _not_found(root: Path) -> str:
    return f"CIFAR-10 not found in {root} (looked for {FOLDER_NAME}/ and {ARCHIVE_NAME})"


def _download(archive: Path) -> None:
    """Download the official archive to `archive`, via a temporary file, checking its MD5."""
    root = archive.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{ARCHIVE_NAME}-", suffix=".part", dir=root)
    except OSError as exc:
        raise UserError(f"{_not_found(root)} and it cannot be downloaded there ({exc}); {_HINT}") from exc
    tmp = Path(tmp_name)
    md5 = hashlib.md5()
    try:
        try:
            with os.fdopen(fd, "wb") as out, urlopen(CIFAR10_URL, timeout=DOWNLOAD_TIMEOUT) as response:
                size = int(response.headers.get("Content-Length") or 0) or None
                columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
                with Progress(*columns, console=Console(stderr=True)) as progress:
                    task = progress.add_task("CIFAR-10", total=size)
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        md5.update(chunk)
                        progress.advance(task, len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
            reason = exc.reason if isinstance(exc, URLError) else exc
            raise UserError(f"{_not_found(root)} and the download failed ({reason}); {_HINT}") from exc
        if md5.hexdigest() != CIFAR10_MD5:
            raise UserError(
                f"the CIFAR-10 download from {CIFAR10_URL} is corrupt (MD5 {md5.hexdigest()}, "
                f"expected {CIFAR10_MD5}); retry, put the official archive in {root} or pass --data-dir"
            )
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)  # only left on failure or interruption


def _load_archive(archive: Path) -> Dataset:
    """Load from the archive, leaving ``cifar-10-batches-py/`` next to it when the directory is writable."""
    root = archive.parent

    def location(name: str) -> str:
        return f"{archive} (member {FOLDER_NAME}/{name})"

    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}-", dir=root))
    except OSError:  # read-only directory: read the members in memory instead
        return _assemble(_archive_files(archive), location)
    try:
        try:
            for name, raw in _archive_files(archive):
                (staging / name).write_bytes(raw)
        except OSError:  # writing failed (e.g. disk full); archive errors arrive as UserError
            return _assemble(_archive_files(archive), location)
        dataset = _assemble(_folder_files(staging), location)
        staging.chmod(0o755)  # mkdtemp makes it private; the data itself is not secret
        try:
            staging.rename(root / FOLDER_NAME)
        except OSError:  # e.g. another process published the folder first
            pass
        return dataset
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _archive_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, contents)`` for the CIFAR-10 files in the archive, in archive order."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.isfile() and len(parts) == 2 and parts[0] == FOLDER_NAME and parts[1] in _FILES:
                    raw = tar.extractfile(member).read()
                    yield parts[1], raw
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"cannot read CIFAR-10 archive {archive} ({exc}); it is corrupt or truncated") from exc


def _folder_files(folder: Path) -> Iterator[tuple[str, BinaryIO]]:
    """Yield ``(name, open file)`` for the CIFAR-10 files present in `folder`; each file is
    unpickled straight from disk, so its raw bytes are never held in memory as well."""
    for name in _FILES:
        try:
            f = open(folder / name, "rb")
        except FileNotFoundError:
            continue  # reported by _assemble (or optional, for batches.meta)
        except OSError as exc:
            raise UserError(f"cannot read {folder / name}: {exc.strerror or exc}") from exc
        with f:
            yield name, f


def _assemble(files: Iterable[tuple[str, bytes | BinaryIO]], location: Callable[[str], str]) -> Dataset:
    """Validate the raw files and build the dataset; `location` names a file in error messages.

    Each training batch is copied into its slot of one preallocated array as soon as it is read
    and then dropped, so peak memory stays near one copy of the data plus one batch (the
    official batches are equal in size; unequal ones fall back to a final concatenation).
    """
    class_names = list(CLASS_NAMES)
    test = None
    x_train, rows = None, 0
    placed: dict[str, np.ndarray] = {}   # name -> labels of a batch already copied into x_train
    loose: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # batches of another size
    for name, raw in files:
        content = _unpickle(raw, location(name))
        del raw
        if name == _META_FILE:
            class_names = _class_names(content, location(name))
            continue
        x, y = _batch_arrays(content, location(name))
        del content
        if name == _TEST_FILE:
            test = (x, y)
            continue
        if x_train is None:
            rows = len(y)
            x_train = np.empty((rows * len(_TRAIN_FILES), N_FEATURES), np.uint8)
        if len(y) == rows:
            k = _TRAIN_FILES.index(name)
            x_train[k * rows : (k + 1) * rows] = x
            placed[name] = y
        else:
            loose[name] = (x, y)
        del x
    for name in (*_TRAIN_FILES, _TEST_FILE):
        if name not in placed and name not in loose and not (name == _TEST_FILE and test):
            raise UserError(f"CIFAR-10 batch file {location(name)} is missing")
    if loose:
        slots = {n: x_train[k * rows : (k + 1) * rows] for k, n in enumerate(_TRAIN_FILES) if n in placed}
        x_train = np.concatenate([slots[n] if n in placed else loose[n][0] for n in _TRAIN_FILES])
    y_train = np.concatenate([placed[n] if n in placed else loose[n][1] for n in _TRAIN_FILES])
    return Dataset(x_train, y_train, test[0], test[1], class_names, IMAGE_SHAPE)


class _BatchUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 batch holds (dicts, lists, bytes, str, numbers, NumPy arrays):
    any other global a pickle names is refused, so a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds; refused")


def _unpickle(raw: bytes | BinaryIO, where: str) -> dict:
    try:
        source = io.BytesIO(raw) if isinstance(raw, bytes) else raw
        content = _BatchUnpickler(source, encoding="bytes").load()
    except Exception as exc:  # a damaged pickle can fail in many different ways
        raise UserError(f"{where} is not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, dict):
        raise UserError(f"{where} does not hold a dict (got {type(content).__name__})")
    return content


def _batch_arrays(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch dict and return its (uint8 data, int64 labels), C-contiguous."""
    missing = [key for key in (b"data", b"labels") if key not in batch]
    if missing:
        raise UserError(f"{where} lacks the key(s) {', '.join(map(repr, missing))}")
    x = batch[b"data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != N_FEATURES:
        desc = f"{x.shape} {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise UserError(f"{where}: b'data' must be a uint8 array of shape (n, {N_FEATURES}), got {desc}")
    try:
        y = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: b'labels' is not a list of integers ({exc})") from exc
    if y.shape != (len(x),):
        raise UserError(f"{where}: b'labels' has shape {y.shape} but b'data' has {len(x)} rows")
    if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
        raise UserError(f"{where}: labels must be in 0..{len(CLASS_NAMES) - 1}, found {y.min()}..{y.max()}")
    return np.ascontiguousarray(x), y


def _class_names(meta: dict, where: str) -> list[str]:
    """Decode b'label_names' from batches.meta, or return the standard names if it is absent."""
    names = meta.get(b"label_names")
    if names is None:
        return list(CLASS_NAMES)
    try:
        decoded = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except (TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: b'label_names' is not a list of names ({exc})") from exc
    if len(decoded) != len(CLASS_NAMES):
        raise UserError(f"{where}: b'label_names' has {len(decoded)} names, expected {len(CLASS_NAMES)}")
    return decoded
