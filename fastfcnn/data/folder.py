"""Image files -> uint8 channel-planar rows: a ``train/<class>/``, ``test/<class>/`` folder tree
(:func:`load_image_folder`) or one image for a trained model (:func:`read_image`).

Pillow is imported inside the functions, so ``import fastfcnn`` does not pay for it.

Every image is reduced to one of two modes: 'L' (grayscale, 1 channel) or 'RGB' (3 channels).
Conversions that only change the representation are done silently: RGBA -> RGB and LA -> L
(the alpha channel is dropped, not composited), CMYK/YCbCr -> RGB, 1-bit -> L (0 or 255),
16-bit grayscale ('I;16', 'I') -> L scaled by 255/65535, and palette images ('P', 'PA') -> L
when every palette entry is grey, RGB otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .dataset import Dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")  # matched case-insensitively
_EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)
_GREY_MODES = ("1", "L", "LA", "La", "I", "F")  # plus every 'I;16*' variant


def load_image_folder(path: Path | str, image_size: tuple[int, int] | None = None) -> Dataset:
    """Load ``PATH/train/<class>/<image>`` and ``PATH/test/<class>/<image>`` as a Dataset.

    The classes are the train subfolders, in sorted order (label k is the k-th name); test
    subfolders must be among them, though the test set may lack some classes. Images are
    .png, .jpg, .jpeg or .bmp files (any case); other files, nested folders and hidden entries
    (names starting with '.') are ignored. Within a class, files are taken in name order.

    All images must share one size unless `image_size` is given, in which case every image is
    resized to it (bilinear; JPEGs much larger than the target are first decoded at a reduced
    scale, which is much faster). The channel count is 1 when every image is grayscale and 3
    otherwise: a folder mixing grayscale and colour images is loaded as RGB, grayscale images
    becoming three equal planes (a lossless change, and mixed folders are common in scraped
    data). See the module docstring for how other modes are converted.

    Files are listed and their headers read first, so the output array is allocated once and
    each image is decoded straight into its row.

    Parameters
    ----------
    path : Path or str
        The folder holding ``train/`` and ``test/``.
    image_size : (height, width), optional
        Resize every image to this size.

    Returns
    -------
    Dataset
        (N, C*H*W) uint8 channel-planar rows, int64 labels, the class folder names and
        ``image_shape = (C, H, W)``.

    Raises
    ------
    UserError
        Naming the folder or file: a missing ``train/`` or ``test/`` folder, one without class
        folders, fewer than 2 training classes, a class folder without images, a test class that
        has no train folder, an unreadable or corrupt image, or (without `image_size`) images of
        different sizes; also an `image_size` that is not two positive integers.
    """
    from PIL import Image

    size = None if image_size is None else _check_image_size(image_size)
    root = Path(path).expanduser()
    train_dir, test_dir = root / "train", root / "test"
    layout = f"expected {train_dir}/<class>/<image> and {test_dir}/<class>/<image>"
    if not train_dir.is_dir():
        raise UserError(f"{root}: no train/ folder ({layout})")
    if not test_dir.is_dir():
        raise UserError(f"{root}: no test/ folder; an image folder needs both train/ and test/ ({layout})")
    train, test = _list_split(train_dir), _list_split(test_dir)
    classes = [name for name, _ in train]
    if len(classes) < 2:
        raise UserError(f"{train_dir} has a single class folder ({classes[0]!r}); a classifier needs at least 2")
    index = {name: k for k, name in enumerate(classes)}
    for name, _ in test:
        if name not in index:
            raise UserError(f"{test_dir / name}: class {name!r} has no folder in {train_dir}; "
                            f"every test class needs training images")

    splits = [[(file, index[name]) for name, files in split for file in files] for split in (train, test)]
    # Pass 1: headers only (Pillow opens lazily), to fix the mode and size before decoding.
    modes, sizes = {}, {}  # first file seen with each target mode / each (width, height)
    for file, _ in splits[0] + splits[1]:
        try:
            with Image.open(file) as im:
                modes.setdefault(_natural_mode(im), file)
                sizes.setdefault(im.size, file)
        except MemoryError:
            raise
        except Exception as exc:  # a damaged image can fail in many different ways
            raise _unreadable(file, exc) from exc
    mode = "RGB" if "RGB" in modes else "L"
    if size is None:
        if len(sizes) > 1:
            (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
            raise UserError(
                f"{root}: images differ in size: {file_a} is {_wxh(size_a)} but {file_b} is {_wxh(size_b)} "
                f"(width x height); pass --image-size to resize them all to one size"
            )
        size = next(iter(sizes))
    else:
        size = (size[1], size[0])  # Pillow sizes are (width, height)
    shape = (3 if mode == "RGB" else 1, size[1], size[0])

    # Pass 2: decode every image straight into its row of one preallocated array per split.
    out = []
    for split in splits:
        x = np.empty((len(split), shape[0] * shape[1] * shape[2]), dtype=np.uint8)
        for row, (file, _) in zip(x, split):
            try:
                with Image.open(file) as im:
                    pixels = _decode(im, mode, size)
            except MemoryError:
                raise
            except Exception as exc:
                raise _unreadable(file, exc) from exc
            _store(row, pixels, shape)
        out += [x, np.array([label for _, label in split], dtype=np.int64)]
    x_train, y_train, x_test, y_test = out
    return Dataset(x_train, y_train, x_test, y_test, classes, shape)


def read_image(path: Path | str, image_shape: tuple[int, int, int], resize: bool = False) -> np.ndarray:
    """Read one image file as a flat uint8 channel-planar row for a model of `image_shape`.

    Only representation changes are made to match the model's channel count (RGBA -> RGB,
    palette -> RGB, LA -> L, ...; see the module docstring); a colour image for a grayscale
    model, or a grayscale image for an RGB model, is an error rather than a guess.

    Parameters
    ----------
    path : Path or str
        Any image file Pillow can read.
    image_shape : (C, H, W)
        The model's input shape; C must be 1 (grayscale) or 3 (RGB).
    resize : bool
        Resize (bilinear) an image of another size to H x W instead of refusing it.

    Returns
    -------
    np.ndarray
        (C*H*W,) uint8: channel c is ``[c*H*W:(c+1)*H*W]``, each plane row-major.

    Raises
    ------
    UserError
        If the file is missing or unreadable, has the wrong channel count, or has another size
        and `resize` is false.
    """
    from PIL import Image

    try:
        channels, height, width = (int(v) for v in image_shape)
    except (TypeError, ValueError) as exc:
        raise UserError(f"image_shape must be (C, H, W), got {image_shape!r}") from exc
    if channels not in (1, 3):
        raise UserError(f"the model takes {channels}-channel images; image files can only feed "
                        f"1-channel (grayscale) or 3-channel (RGB) models")
    path = Path(path).expanduser()
    want = "RGB" if channels == 3 else "L"
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        im = Image.open(path)
    except MemoryError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    with im:
        natural = _natural_mode(im)
        if natural != want and not (want == "RGB" and im.mode in ("P", "PA")):  # grey palettes fit RGB too
            raise UserError(f"{path}: wrong channel count: the image is {_describe_mode(natural)} but the model "
                            f"takes {_describe_mode(want)} images")
        if im.size != (width, height) and not resize:
            raise UserError(f"{path}: the image is {_wxh(im.size)} but the model takes {_wxh((width, height))} "
                            f"(width x height); pass --resize to resize it")
        try:
            pixels = _decode(im, want, (width, height))
        except MemoryError:
            raise
        except Exception as exc:
            raise _unreadable(path, exc) from exc
    row = np.empty(channels * height * width, dtype=np.uint8)
    _store(row, pixels, (channels, height, width))
    return row


def _check_image_size(image_size) -> tuple[int, int]:
    """image_size as (height, width) Python ints, both positive."""
    try:
        values = tuple(image_size)
        ok = len(values) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                      for v in values)
    except TypeError:
        ok = False
    if not ok:
        raise UserError(f"image size must be two positive integers (height, width), got {image_size!r}")
    return int(values[0]), int(values[1])


def _list_split(folder: Path) -> list[tuple[str, list[Path]]]:
    """[(class name, sorted image files)] for the class folders of train/ or test/."""
    try:
        class_dirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                            key=lambda p: p.name)
    except OSError as exc:
        raise UserError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    if not class_dirs:
        raise UserError(f"{folder} has no class folders (expected {folder}/<class>/<image>, "
                        f"images in {_EXTENSIONS_TEXT})")
    classes = []
    for class_dir in class_dirs:
        try:
            files = sorted((p for p in class_dir.iterdir()
                            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                           key=lambda p: p.name)
        except OSError as exc:
            raise UserError(f"cannot list {class_dir}: {exc.strerror or exc}") from exc
        if not files:
            raise UserError(f"{class_dir}: class folder has no images ({_EXTENSIONS_TEXT})")
        classes.append((class_dir.name, files))
    return classes


def _natural_mode(im) -> str:
    """'L' or 'RGB': what an opened (not yet decoded) image is, from its header alone."""
    if im.mode in _GREY_MODES or im.mode.startswith("I;16"):
        return "L"
    if im.mode in ("P", "PA"):
        palette = im.palette  # PNG and BMP palettes are read with the header
        if palette is not None and palette.mode in ("RGB", "RGBA"):
            entries = np.frombuffer(bytes(palette.palette), dtype=np.uint8)
            entries = entries[: len(entries) // len(palette.mode) * len(palette.mode)].reshape(-1, len(palette.mode))
            if (entries[:, 0] == entries[:, 1]).all() and (entries[:, 1] == entries[:, 2]).all():
                return "L"
    return "RGB"


def _decode(im, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode an opened image as uint8 (H, W) for 'L' or (H, W, 3) for 'RGB', resized to
    size (width, height) if it differs."""
    from PIL import Image

    if size is not None and im.size != size:
        im.draft(None, size)  # JPEG only (a no-op otherwise): decode at 1/2..1/8 scale, still >= size
    if im.mode == "I" or im.mode.startswith("I;16"):
        # 16-bit grayscale: convert('L') would clip at 255, so scale 0..65535 to 0..255 instead.
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    if im.mode != mode:
        im = im.convert(mode)  # drops alpha; palette, 1-bit, CMYK... to plain L or RGB
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im)


def _store(row: np.ndarray, pixels: np.ndarray, shape: tuple[int, int, int]) -> None:
    """Write (H, W) or (H, W, C) pixels into a flat row, channel-planar."""
    if pixels.ndim == 2:
        row[:] = pixels.reshape(-1)
    else:
        row.reshape(shape)[...] = pixels.transpose(2, 0, 1)


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _describe_mode(mode: str) -> str:
    return "grayscale (1 channel)" if mode == "L" else "colour (3 channels)"


def _unreadable(file: Path, exc: Exception) -> UserError:
    return UserError(f"{file}: not a readable image; it is corrupt or not an image ({type(exc).__name__}: {exc})")
