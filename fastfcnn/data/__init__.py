"""Every data source becomes a Dataset: CIFAR-10 (official layout), .npz arrays, image folders.

`load_data(path)` picks the reader from what `path` is; `from_arrays` serves in-memory arrays
(the Python API and the .npz reader).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .arrays import from_arrays
from .cifar10 import (
    ARCHIVE_NAME,
    CIFAR10_MD5,
    CIFAR10_URL,
    CLASS_NAMES,
    FOLDER_NAME,
    IMAGE_SHAPE,
    default_data_dir,
    load_cifar10,
    load_cifar10_archive,
    resolve_data_dir,
)
from .dataset import Dataset, channel_stats, column_stats, input_stats, stratified_split

__all__ = [
    "Dataset", "from_arrays", "load_data", "load_cifar10", "load_npz", "load_image_folder",
    "default_data_dir", "resolve_data_dir", "stratified_split", "channel_stats", "column_stats",
    "input_stats", "ARCHIVE_NAME", "FOLDER_NAME", "CIFAR10_MD5", "CIFAR10_URL", "CLASS_NAMES", "IMAGE_SHAPE",
]


def load_npz(path) -> Dataset:
    from .npz import load_npz as load
    return load(path)


def load_image_folder(path, image_size=None) -> Dataset:
    from .folder import load_image_folder as load
    return load(path, image_size=image_size)


def load_data(path: Path | str | None = None, data_dir: Path | str | None = None, download: bool = True,
              image_size: tuple[int, int] | None = None) -> Dataset:
    """The dataset at `path`, or CIFAR-10 from `data_dir` when no path is given.

    path may be an .npz file of arrays, an image folder (``train/<class>/*`` and
    ``test/<class>/*``), a CIFAR-10 archive in the official layout (``*.tar.gz``, taken as the
    user's own copy: no MD5 check), or a folder holding CIFAR-10 (``cifar-10-batches-py/`` or the
    official archive).
    image_size (height, width) resizes the images of an image folder.
    """
    if image_size is not None and (path is None or not (Path(path).expanduser() / "train").is_dir()):
        raise UserError(f"--image-size applies to image folders; {path or 'CIFAR-10'} is not one")
    if path is None:
        return load_cifar10(resolve_data_dir(data_dir), download=download)
    path = Path(path).expanduser()
    if path.is_file():
        if path.name.lower().endswith((".tar.gz", ".tgz")):
            return load_cifar10_archive(path)
        if path.suffix.lower() != ".npz":
            raise UserError(f"--data {path}: expected an .npz file, a CIFAR-10 .tar.gz or a folder")
        return load_npz(path)
    if not path.is_dir():
        raise UserError(f"--data {path}: no such file or folder")
    if (path / "train").is_dir():
        return load_image_folder(path, image_size=image_size)
    if (path / FOLDER_NAME).is_dir() or (path / ARCHIVE_NAME).is_file():
        return load_cifar10(path, download=False)
    raise UserError(f"--data {path}: a folder must hold train/<class>/ image folders (and test/<class>/), "
                    f"or CIFAR-10's {FOLDER_NAME}/ or {ARCHIVE_NAME}")
