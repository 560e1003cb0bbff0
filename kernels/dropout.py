"""Inverted dropout on hidden activations, with a mask the orchestrator draws."""
import numpy as np
from numba import prange

from .config import kernel


@kernel
def dropout(x, u, p):
    """In place: x (B,H) *= (u >= p) / (1 - p); u (B,H) float32 uniform draws in [0, 1), p in [0, 1).

    Applied to a hidden activation in the forward pass and, with the same u, to the gradient of
    that activation in the backward pass.
    """
    n, h = x.shape
    p32 = np.float32(p)
    scale = np.float32(1) / (np.float32(1) - p32)
    for i in prange(n):
        xi, ui = x[i], u[i]
        for j in range(h):
            xi[j] = xi[j] * scale if ui[j] >= p32 else np.float32(0)
