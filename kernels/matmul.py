"""The one matrix product every layer uses, plus the transpose that feeds it.

`gemm_nt` computes out = a @ b.T: both operands are read along their rows, so each output element
is a contiguous dot product that LLVM vectorises into packed FMAs (fastmath lets it reassociate).
A 4x6 register tile reuses every loaded vector four or six times. The reduction dimension is cut into
blocks of KC so the six rows of b a tile reads (6 x KC floats) stay in L1 while the tile walks
down the rows of a (MB x KC, in L2); partial sums of later blocks are added to `out`.
Parallel over MB x NB blocks of `out`: every element of `out` is written by exactly one prange
iteration, so results are race-free and identical run to run for a given thread count.

Row slices (`a[i, k0:k1]`) index from 0 in the hot loop: an index Numba can prove non-negative
needs no wraparound check, which would otherwise turn every vector load into a gather.
"""
import numpy as np
from numba import prange

from .config import kernel, serial_kernel

TM, TN = 4, 6  # register tile: TM rows of a x TN rows of b
KC = 1024    # reduction block (floats)
MB = 32      # rows of out per parallel task
NB = 48      # columns of out per parallel task (a multiple of TN)


# What gemm_nt does to each raw dot product before it is stored.
PLAIN = 0      # out = a @ b.T
BIAS = 1       # out = a @ b.T + bias
BIAS_RELU = 2  # out = max(a @ b.T + bias, 0)
MASK = 3       # out = (a @ b.T) * (mask > 0): the ReLU derivative of the layer input


@serial_kernel
def _epilogue(out, i0, i1, j0, j1, bias, mask, mode):
    if mode == PLAIN:
        return
    for i in range(i0, i1):
        row = out[i, j0:j1]
        if mode == MASK:
            keep = mask[i, j0:j1]
            for j in range(j1 - j0):
                if keep[j] <= 0:
                    row[j] = np.float32(0)
        else:
            add = bias[j0:j1]
            for j in range(j1 - j0):
                v = row[j] + add[j]
                row[j] = max(v, np.float32(0)) if mode == BIAS_RELU else v


@serial_kernel
def _tile4x6(a, b, out, i0, j0, k0, k1, accumulate):
    """out[i0:i0+4, j0:j0+6] (+)= a[i0:i0+4, k0:k1] @ b[j0:j0+6, k0:k1].T

    24 accumulators + 6 loaded vectors + 1 broadcast fit the 32 vector registers; each vector
    of a is used 6 times and each vector of b 4 times per load.
    """
    a0 = a[i0, k0:k1]; a1 = a[i0 + 1, k0:k1]; a2 = a[i0 + 2, k0:k1]; a3 = a[i0 + 3, k0:k1]
    b0 = b[j0, k0:k1]; b1 = b[j0 + 1, k0:k1]; b2 = b[j0 + 2, k0:k1]
    b3 = b[j0 + 3, k0:k1]; b4 = b[j0 + 4, k0:k1]; b5 = b[j0 + 5, k0:k1]
    z = np.float32(0)
    s00 = z; s01 = z; s02 = z; s03 = z; s04 = z; s05 = z
    s10 = z; s11 = z; s12 = z; s13 = z; s14 = z; s15 = z
    s20 = z; s21 = z; s22 = z; s23 = z; s24 = z; s25 = z
    s30 = z; s31 = z; s32 = z; s33 = z; s34 = z; s35 = z
    for k in range(k1 - k0):
        y0 = b0[k]; y1 = b1[k]; y2 = b2[k]; y3 = b3[k]; y4 = b4[k]; y5 = b5[k]
        x = a0[k]; s00 += x * y0; s01 += x * y1; s02 += x * y2; s03 += x * y3; s04 += x * y4; s05 += x * y5
        x = a1[k]; s10 += x * y0; s11 += x * y1; s12 += x * y2; s13 += x * y3; s14 += x * y4; s15 += x * y5
        x = a2[k]; s20 += x * y0; s21 += x * y1; s22 += x * y2; s23 += x * y3; s24 += x * y4; s25 += x * y5
        x = a3[k]; s30 += x * y0; s31 += x * y1; s32 += x * y2; s33 += x * y3; s34 += x * y4; s35 += x * y5
    _store6(out, i0, j0, s00, s01, s02, s03, s04, s05, accumulate)
    _store6(out, i0 + 1, j0, s10, s11, s12, s13, s14, s15, accumulate)
    _store6(out, i0 + 2, j0, s20, s21, s22, s23, s24, s25, accumulate)
    _store6(out, i0 + 3, j0, s30, s31, s32, s33, s34, s35, accumulate)


@serial_kernel
def _store6(out, i, j0, s0, s1, s2, s3, s4, s5, accumulate):
    if accumulate:
        s0 += out[i, j0]; s1 += out[i, j0 + 1]; s2 += out[i, j0 + 2]
        s3 += out[i, j0 + 3]; s4 += out[i, j0 + 4]; s5 += out[i, j0 + 5]
    out[i, j0] = s0; out[i, j0 + 1] = s1; out[i, j0 + 2] = s2
    out[i, j0 + 3] = s3; out[i, j0 + 4] = s4; out[i, j0 + 5] = s5


@serial_kernel
def _tile_edge(a, b, out, i0, i1, j0, j1, k0, k1, accumulate):
    """The partial tiles at the right and bottom edges, one dot product at a time."""
    for i in range(i0, i1):
        ai = a[i, k0:k1]
        for j in range(j0, j1):
            bj = b[j, k0:k1]
            s = out[i, j] if accumulate else np.float32(0)
            for k in range(k1 - k0):
                s += ai[k] * bj[k]
            out[i, j] = s


@kernel
def gemm_nt(a, b, out, bias, mask, mode):
    """out = epilogue(a @ b.T); a (M,K), b (N,K), out (M,N), bias (N,), mask (M,N), all float32.

    `mode` is PLAIN, BIAS, BIAS_RELU or MASK; bias and mask are only read by the modes that
    name them (pass any array of the right rank otherwise).
    """
    m, n = out.shape
    kk = a.shape[1]
    mb = (m + MB - 1) // MB
    nb = (n + NB - 1) // NB
    kb = max(1, (kk + KC - 1) // KC)    # one empty block when kk == 0, so out is still written
    for t in prange(mb * nb):
        i0 = (t // nb) * MB
        j0 = (t % nb) * NB
        i1 = min(i0 + MB, m)
        j1 = min(j0 + NB, n)
        for kbi in range(kb):
            k0 = kbi * KC
            k1 = min(k0 + KC, kk)
            for j in range(j0, j1, TN):
                je = min(j + TN, j1)
                for i in range(i0, i1, TM):
                    ie = min(i + TM, i1)
                    if ie - i == TM and je - j == TN:
                        _tile4x6(a, b, out, i, j, k0, k1, kbi > 0)
                    else:
                        _tile_edge(a, b, out, i, ie, j, je, k0, k1, kbi > 0)
        _epilogue(out, i0, i1, j0, j1, bias, mask, mode)


@kernel
def transpose(src, dst):
    """dst = src.T; src (M,N), dst (N,M). Parallel over 16-row blocks of dst.

    Each block is copied in 16x16 tiles, so the 16 rows of src and of dst a tile touches stay in
    L1 even when their stride is a multiple of 4 KB (every row in the same cache set): 3x faster
    than a block at a time on 1024x1024.
    """
    m, n = src.shape
    for jb in prange((n + 15) // 16):
        j0 = jb * 16
        j1 = min(j0 + 16, n)
        for i0 in range(0, m, 16):
            i1 = min(i0 + 16, m)
            s, d = src[i0:i1, j0:j1], dst[j0:j1, i0:i1]   # re-based views: indices from 0, no wraparound checks
            for j in range(j1 - j0):
                for i in range(i1 - i0):
                    d[j, i] = s[i, j]
