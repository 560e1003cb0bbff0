"""Softmax + cross-entropy: loss and gradient in one numerically stable pass; softmax alone for
prediction."""
import numpy as np
from numba import prange

from .config import kernel, sized_kernel


@sized_kernel(lambda logits, *rest: logits.size)
def softmax_xent_grad(logits, labels, smoothing, dlogits, row_loss):
    """logits (B,C) float32, labels (B,) int64, smoothing in [0,1).

    Writes dlogits (B,C) = (softmax(logits) - target) / B, the gradient of the batch-mean loss,
    and row_loss (B,) = -sum(target * log softmax(logits)), where target puts 1 - smoothing on the
    label and spreads smoothing evenly over all C classes. dlogits must not be logits.
    Returns (the sum of row_loss, in float64; the number of rows whose argmax, the first on ties,
    is the label): a step's loss and accuracy come with its gradient, not from two more passes.
    """
    n, c = logits.shape
    inv_n = np.float32(1) / np.float32(n)
    off = np.float32(smoothing) / np.float32(c)
    on = np.float32(1) - np.float32(smoothing) + off
    total = 0.0
    correct = 0
    for i in prange(n):
        row, d = logits[i], dlogits[i]
        m = row[0]
        best = 0
        for j in range(1, c):
            m = max(m, row[j])
            if row[j] > row[best]:
                best = j
        z = np.float32(0)
        for j in range(c):           # one exp per element: e_j parked in dlogits until z is known
            e = np.exp(row[j] - m)
            d[j] = e
            z += e
        log_z = np.log(z)
        scale = inv_n / z
        loss = np.float32(0)
        for j in range(c):
            t = on if j == labels[i] else off
            d[j] = d[j] * scale - t * inv_n
            loss -= t * (row[j] - m - log_z)
        row_loss[i] = loss
        total += np.float64(loss)
        if best == labels[i]:
            correct += 1
    return total, correct


@kernel
def softmax(logits, probs):
    """probs (B,C) float32 = softmax of each row of logits (B,C) float32; probs may be logits.

    The row max is subtracted first, so logits of any size (1e4, say) cannot overflow exp.
    """
    n, c = logits.shape
    for i in prange(n):
        row, dst = logits[i], probs[i]
        m = row[0]
        for j in range(1, c):
            m = max(m, row[j])
        z = np.float32(0)
        for j in range(c):
            e = np.exp(row[j] - m)   # row[j] is read before dst[j] is written: safe in place
            dst[j] = e
            z += e
        inv_z = np.float32(1) / z    # z >= 1 (the max term is exp(0)): never a division by 0
        for j in range(c):
            dst[j] *= inv_z
