"""Assemble a training batch from the uint8 dataset."""
from numba import prange

from .config import kernel


@kernel
def gather_batch(x, idx, out):
    """out (B,D) uint8 = x[idx]; x (N,D) uint8, idx (B,) int64."""
    d = x.shape[1]
    for i in prange(idx.shape[0]):
        src = idx[i]
        for k in range(d):
            out[i, k] = x[src, k]
