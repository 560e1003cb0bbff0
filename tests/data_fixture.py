"""Tiny image-folder datasets written with Pillow, for tests.

Usage from any test module: ``from data_fixture import write_image, write_folder, random_images``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def random_images(n: int, height: int, width: int, channels: int | None, seed: int = 0) -> np.ndarray:
    """(n, H, W) uint8 images when channels is None, else (n, H, W, channels)."""
    shape = (n, height, width) if channels is None else (n, height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_image(path: Path, pixels: np.ndarray, mode: str | None = None, **save_args) -> Path:
    """Save (H, W) or (H, W, C) uint8 pixels to `path` (format from the suffix), creating folders.

    `mode` converts the image before saving (e.g. 'P', '1', 'LA'); a grayscale image becomes 'P'
    with a grey palette. The format follows the suffix, so '.PNG' or '.Jpeg' work too.
    """
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels))
    if mode == "P" and image.mode == "RGB":
        # an adaptive palette keeps images of at most 256 colours exact (the default web palette dithers)
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    elif mode is not None and image.mode != mode:
        image = image.convert(mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=_format(path), **save_args)
    return path


def write_folder(root: Path, splits: dict[str, dict[str, list[np.ndarray]]], suffix: str = ".png") -> Path:
    """Write ``root/<split>/<class>/img<i><suffix>`` for ``splits = {split: {class: [pixels, ...]}}``.

    Files are named img0, img1, ... so name order is list order (for fewer than 10 images).
    """
    root = Path(root)
    for split, classes in splits.items():
        for name, images in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, pixels in enumerate(images):
                write_image(root / split / name / f"img{i}{suffix}", pixels)
    return root


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF"}[suffix]
