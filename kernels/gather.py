"""Assemble a training batch from the uint8 dataset."""
import numpy as np
from numba import prange

from .config import kernel, serial_kernel


@kernel
def gather_batch(x, idx, out):
    """out (B,D) uint8 = x[idx]; x (N,D) uint8, idx (B,) int64."""
    d = x.shape[1]
    for i in prange(idx.shape[0]):
        src, dst = x[idx[i]], out[i]
        for k in range(d):
            dst[k] = src[k]


# How gather_augment fills the pixels a shift moves in from outside the image.
PAD_ZERO = 0     # with 0
PAD_REFLECT = 1  # mirrored about the edge pixel, like np.pad(mode="reflect")

CHANNELS = 3


@kernel
def gather_augment(x, idx, shift_y, shift_x, flip, pad_mode, out):
    """out[i] = augment(x[idx[i]]) for channel-planar square images (3 planes of side x side).

    Image i is translated so that out pixel (r, c) shows source pixel (r + shift_y[i],
    c + shift_x[i]), i.e. a random crop of the image padded by max |shift| on each side; pixels
    from outside the image are 0 (PAD_ZERO) or mirrored (PAD_REFLECT, |shift| < side). Then it
    is mirrored left-right if flip[i]. x (N,D) uint8, idx/shift_y/shift_x (B,) int64,
    flip (B,) bool, out (B,D) uint8.
    """
    d = x.shape[1]
    plane = d // CHANNELS
    side = int(np.sqrt(plane))
    reflect = pad_mode == PAD_REFLECT
    for i in prange(idx.shape[0]):
        src = idx[i]
        for ch in range(CHANNELS):
            base = ch * plane
            for r in range(side):
                y = _source(r + shift_y[i], side, reflect)
                for c in range(side):
                    xx = _source((side - 1 - c if flip[i] else c) + shift_x[i], side, reflect)
                    v = np.uint8(0)
                    if y >= 0 and xx >= 0:
                        v = x[src, base + y * side + xx]
                    out[i, base + r * side + c] = v


@serial_kernel
def _source(k, side, reflect):
    """The source index for position k of a line of `side` pixels: mirrored into range if
    reflect, else -1 when outside."""
    if 0 <= k < side:
        return k
    if reflect:
        return -k if k < 0 else 2 * side - 2 - k
    return -1
