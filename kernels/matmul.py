"""The matrix products of every layer: two kernels, each shaped for the products it serves.

`gemm_nt` (the forward product out = x @ w.T of narrow layers) reads both operands along their
rows, so each output element is a contiguous dot product that LLVM vectorises into packed FMAs
(fastmath lets it reassociate). A 4x6 register tile reuses every loaded vector four or six
times. The reduction dimension is cut into blocks of KC so the six rows of b a tile reads
(6 x KC floats) stay in L1 while the tile walks down the rows of a (MB x KC, in L2); partial sums
of later blocks are added to `out`.
Parallel over MB x NB blocks of `out`: every element of `out` is written by exactly one prange
iteration, so results are race-free and identical run to run for a given thread count.
A dot product ends in a horizontal sum of its vector, which costs little when the reduction is
the 3072 inputs of a layer; in the backward products it runs over the 128 or 256 rows of a batch,
where those sums took about a third of the time: hence a second kernel.

`gemm_op` (backward: dw = dy.T @ x, dx = dy @ w; and the forward products where it pays, see
op_suits) is built the other way round, like BLAS: a register tile of outer products
(kernels/vtile.py: 8x32 with AVX-512, 6x16 with AVX2, written as vector IR) over packed panels, with
no horizontal sums and no transposed copies of its operands.

Row slices (`a[i, k0:k1]`) index from 0 in the hot loop: an index Numba can prove non-negative
needs no wraparound check, which would otherwise turn every vector load into a gather.
"""
import time

import numba
import numpy as np
from numba import prange

from ..network import aligned_empty
from . import vtile
from .config import AVX512, kernel, num_threads, serial_kernel
from .prefetch import prefetch
from .transpose import block_t6, block_t8, block_t16

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


# The outer-product products (gemm_op) first pack op(a) whole into OM-row panels (K, OM), in
# parallel over the panels, then cut out into blocks of up to about 4 OMB x ONB, one per parallel
# task (_row_blocks, _col_blocks), and the reduction into blocks of OKC. Each task packs its slice of b into ON-column panels (OKC, ON), so
# the micro-kernel streams both operands from contiguous memory: a b panel (32 KB with AVX-512)
# stays in L1 while the a panels stream from L2. op(a) used to be packed by every task, once per
# block column.
OM, ON = (8, 32) if AVX512 else (6, 16)   # the register tile: see kernels/vtile.py
tile = vtile.tile_8x32 if AVX512 else vtile.tile_6x16
OKC = 256
OMB = 256 // OM * OM    # about 256, a multiple of OM
ONB = 256 // ON * ON    # about 256, a multiple of ON
_PB = ONB * OKC
_EDGE = OM * ON
# Packing at least this many words of op(a) (or of a shared op(b), over two or more k blocks) runs
# in parallel: starting the threads costs about 1.5 us, packing 8192 floats about 2 us on one.
PAR_PACK = 8192
PACK_FLOATS = _PB + _EDGE    # per thread: b panels, edge tile


def packed_a_floats(m: int, k: int) -> int:
    """Floats gemm_op needs for op(a) (m, k) packed whole."""
    return (m + OM - 1) // OM * OM * k


def packed_b_floats(k: int) -> int:
    """Floats gemm_op needs to pack op(b) (k, n) once for all its tasks when out is one block of
    columns (n <= ONB); without them each task packs the same b for itself."""
    return max(1, (k + OKC - 1) // OKC) * OKC * ONB


def pack_workspace(a_floats: int = 0) -> np.ndarray:
    """Scratch for gemm_op: PACK_FLOATS per Numba thread (about 0.3 MB each), then a_floats for
    op(a) packed whole and a shared op(b): at least packed_a_floats(m, k) + packed_b_floats(k) of
    the largest product it serves (packed_a_floats alone: each task packs b for itself).
    Its data starts on a 64-byte cache line (NumPy aligns to 16 bytes), and so does every thread's
    row: a vector load of a packed panel row then never spans two lines."""
    return aligned_empty(numba.config.NUMBA_NUM_THREADS * PACK_FLOATS + a_floats)


@serial_kernel
def _pack_rows(src, panels, c0, c1, k0, kn, kd):
    """panels[t, kd + k, q] = src[k0 + k, c0 + t*w + q], zero past column c1
    (w = panels.shape[2]): a row of src gives one k of a panel."""
    w = panels.shape[2]
    for t in range((c1 - c0 + w - 1) // w):
        p = panels[t]
        s0 = c0 + t * w
        cols = min(w, c1 - s0)
        for k in range(kn):
            row = src[k0 + k, s0 : s0 + cols]
            dst = p[kd + k]
            for q in range(cols):
                dst[q] = row[q]
            for q in range(cols, w):
                dst[q] = np.float32(0)


@serial_kernel
def _pack_cols(src, panels, r0, r1, k0, kn, kd):
    """panels[t, kd + k, q] = src[r0 + t*w + q, k0 + k], zero past row r1
    (w = panels.shape[2]): a row of src gives one column of a panel."""
    w = panels.shape[2]
    for t in range((r1 - r0 + w - 1) // w):
        p = panels[t]
        s0 = r0 + t * w
        rows = min(w, r1 - s0)
        # 16 k by 16 rows (or a whole 8- or 6-row panel) at a time, transposed in registers
        step = 16 if w % 16 == 0 else (w if w == 8 or w == 6 else 0)
        blocks, q_full = kn // 16, rows // step * step if step else 0
        for qb in range(0, q_full, max(step, 1)):
            for b in range(blocks):
                if step == 16:
                    block_t16(src, s0 + qb, k0 + 16 * b, p, kd + 16 * b, qb)
                elif step == 8:
                    block_t8(src, s0 + qb, k0 + 16 * b, p, kd + 16 * b, qb)
                else:
                    block_t6(src, s0 + qb, k0 + 16 * b, p, kd + 16 * b, qb)
        for q in range(w):
            if q < rows:
                row = src[s0 + q, k0 : k0 + kn]
                for k in range(blocks * 16 if q < q_full else 0, kn):
                    p[kd + k, q] = row[k]
            else:
                for k in range(kn):
                    p[kd + k, q] = np.float32(0)


# What _op_fault finds wrong with gemm_op's arguments (0: nothing); op_fault_message says it in words.
BAD_MODE, BAD_SHAPES, SMALL_PACK = 1, 2, 3


def check_layout(name, a, b, out, bias, mask, pack) -> None:
    """Raise unless the arrays have the ranks (and pack the dtype) gemm_op's kernel is typed for,
    and a and b contiguous rows (the packing and the tiles load them as vectors). These are checked
    here, before the call: an array the kernel has not seen the layout of would otherwise be
    compiled for (tens of seconds) only to be refused. The kernel checks the rest (_op_fault)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{name}: a and b must be matrices")
    if out.ndim != 2 or mask.ndim != 2 or bias.ndim != 1:
        raise ValueError(f"{name}: out and mask must be matrices and bias a vector")
    if pack.ndim != 1 or pack.dtype != np.float32:
        raise ValueError(f"{name}: pack must be a flat float32 array (pack_workspace)")
    if (a.strides[1] != 4 and a.shape[1] > 1 and a.size) or (b.strides[1] != 4 and b.shape[1] > 1 and b.size):
        raise ValueError(f"{name}: the rows of a and b must be contiguous (strides {a.strides}, {b.strides})")


@serial_kernel
def _op_fault(a, trans_a, b, trans_b, out, bias, mask, mode, pack, k_panel, threads):
    """What is wrong with gemm_op's arguments, checked in the kernel before it touches them (it
    indexes without bounds checks; check_layout has checked the layouts): BAD_MODE, BAD_SHAPES,
    SMALL_PACK (no room for `threads` rows of per-thread scratch and op(a), (m, k_panel) words,
    packed whole), or 0. Here the checks cost nothing; in Python they would add about a
    microsecond to every call."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if mode != PLAIN and mode != BIAS and mode != BIAS_RELU and mode != MASK:
        return BAD_MODE
    if (a.shape != ((k, m) if trans_a else (m, k)) or b.shape != ((n, k) if trans_b else (k, n))
            or (mode == MASK and mask.shape != out.shape)
            or ((mode == BIAS or mode == BIAS_RELU) and bias.shape[0] != n)):
        return BAD_SHAPES
    if pack.size < threads * PACK_FLOATS + (m + OM - 1) // OM * OM * k_panel:
        return SMALL_PACK
    return 0


def op_fault_message(fault, name, a, trans_a, b, trans_b, out, bias, mask, mode, pack) -> str:
    """The error for a fault _op_fault found, with the shapes it was found in."""
    if fault == BAD_MODE:
        return f"{name}: unknown mode {mode}"
    if fault == BAD_SHAPES:
        return (f"{name}: shapes do not fit: a {a.shape}, trans_a {trans_a}, b {b.shape}, trans_b {trans_b}, "
                f"out {out.shape}, bias {bias.shape}, mask {mask.shape}")
    k = a.shape[0] if trans_a else a.shape[1]
    return (f"{name}: pack ({pack.size} floats) is too small for a {out.shape[0]}x{k} op(a) on "
            f"{num_threads()} threads: make it with pack_workspace")


def gemm_op(a, trans_a, b, trans_b, out, bias, mask, mode, pack):
    """out = epilogue(op(a) @ op(b)), op(a) = a.T if trans_a else a, op(b) likewise.

    a (K,M) if trans_a else (M,K); b (N,K) if trans_b else (K,N); out (M,N); mode and the bias
    (N,) and mask (M,N) it reads as in gemm_nt; pack = pack_workspace(), which two calls running
    at the same time must not share.
    Register tiles of OM x ON outer products (kernels/vtile.py): no horizontal sums, so a
    reduction as short as a batch costs nothing extra, and neither operand needs a transposed
    copy (the packing reads them as stored). Every element of out, and of op(a)'s packed panels,
    is written by one prange iteration; the pack row a thread uses for b is rewritten before it
    is read, and the block shapes change no element's order of summation, so results do not
    depend on the thread count. A (K, N) b is read packed or in place, whichever the first calls
    of the shape measured faster (B_PLANS); the bits are the same either way.

    The kernel indexes without bounds checks, so it checks its arguments before it touches them
    (_op_fault; the layouts, which its types fix, are checked here). That, and everything else
    (blocks, workspace views) is worked out inside the kernel, where it costs nothing next to the
    microseconds of Python a small product would otherwise pay on every call.
    """
    check_layout("gemm_op", a, b, out, bias, mask, pack)
    threads = num_threads()
    plan = False                                 # a transposed b is always packed
    if not trans_b:
        key = (out.shape, a.shape[0] if trans_a else a.shape[1], trans_a, threads)
        plan = B_PLANS.get(key)
        if plan is None:
            plan = B_PLANS[key] = ([], [])       # the times of the calls packed, in place
    trial = plan.__class__ is not bool
    in_place = len(plan[0]) > len(plan[1]) if trial else plan     # trials alternate, starting packed
    start = time.perf_counter()
    fault = _gemm_op(a, trans_a, b, trans_b, out, bias, mask, mode, pack, min_block_rows(out.shape[1]), threads,
                     in_place)
    if fault:
        raise ValueError(op_fault_message(fault, "gemm_op", a, trans_a, b, trans_b, out, bias, mask, mode, pack))
    if trial:
        plan[in_place].append(time.perf_counter() - start)
        if len(plan[1]) > PLAN_TRIALS:
            B_PLANS[key] = min(plan[1][1:]) < min(plan[0][1:])


# How gemm_op reads a (K, N) right operand (the backward products: dw = dy.T @ x, dx = dy @ w):
# packed into panels, or in place. Both give the same bits (the tile reads the same values in the
# same order); which is faster depends on the CPU and the shape. In place saves a pass over b, but
# the kn rows of a panel lie a row of b apart, and for the usual power-of-two-like widths they fall
# into a few L1 sets, so every tile reads them from L2 again. On Zen 4 that hides behind the 16
# cycles of FMAs a k step of the AVX-512 8x32 tile takes, and the first-layer dw of both bench nets
# is faster in place; behind the 6 cycles of the AVX2 6x16 tile it does not, and large products are
# faster packed (small ones still gain in place: there the packing costs more than it saves). A CPU
# with two full-width FMA units per core halves the 8x32 tile's time per k as well. So gemm_op
# measures, like an FFTW plan: the first calls of each shape (out.shape, k, trans_a, thread count)
# alternate the two ways, one untimed and PLAN_TRIALS timed calls each, and the way with the better
# best time serves every later call. B_PLANS maps a shape to that decision, or to its trials so far.
B_PLANS = {}
PLAN_TRIALS = 3


def b_plans() -> list:
    """gemm_op's decisions so far, one dict per shape and thread count: the output's shape, k,
    trans_a (True: a dw product, dy.T @ x), threads, and in_place (False: b is packed)."""
    return [{"out": list(out), "k": k, "trans_a": trans_a, "threads": threads, "in_place": plan}
            for (out, k, trans_a, threads), plan in B_PLANS.items() if plan.__class__ is bool]


@serial_kernel
def split_pack(pack, m, n, k_panel, mb, threads):
    """gemm_op's workspace (pack_workspace, checked by _op_fault) cut into its per-thread rows
    (threads, PACK_FLOATS), the panels of op(a), (m, k) packed as (ceil(m/OM), k_panel, OM) words
    (k_panel: k, or the pairs of k of the bf16 products), and the panels of a shared op(b),
    (ceil(k_panel/OKC), ceil(n/ON), OKC, ON) words.

    op(b) is shared when out is one block of columns cut into mb > 1 blocks of rows (a
    narrow layer's products: the seed net's first-layer forward product) and the workspace has
    room for it; otherwise its first dimension is 0 and each task packs b for itself."""
    threads = np.int64(threads)                  # numba.get_num_threads() is an int32
    per_thread = threads * PACK_FLOATS
    words = (m + OM - 1) // OM * OM * k_panel
    pa = pack[per_thread : per_thread + words].reshape(((m + OM - 1) // OM, k_panel, OM))
    kbs = max(1, (k_panel + OKC - 1) // OKC)
    nts = (n + ON - 1) // ON
    start = per_thread + words
    if n > ONB or mb <= 1 or pack.size < start + kbs * nts * OKC * ON:
        kbs, nts = 0, 1
    pbs = pack[start : start + kbs * nts * OKC * ON].reshape((kbs, nts, OKC, ON))
    return pack[:per_thread].reshape((threads, PACK_FLOATS)), pa, pbs


@serial_kernel
def _row_blocks(m, n, threads, min_rows=OMB):
    """How many blocks of rows out is cut into; the kernel gives each block a run of whole OM-row
    register-tile panels, as even as can be, and prange each thread an equal run of blocks.

    An output of one block of columns (n <= ONB) with min_rows below OMB (min_block_rows; the bf16
    products pass OM for every shape) shares one packing of op(b) among its blocks, so it is cut
    by rows only, into two blocks per thread: every thread gets the same rows to within a panel
    (the seed net's 128 rows in AVX2's 6-row panels: 11 panels each), and blocks of a few panels
    keep the slice of op(a) a block reads per k block in L1.

    Otherwise each task packs its b panels once per k block, so taller blocks pack b fewer times
    (the wide net's dw0 = dy.T @ x, 1024x3072: 4x fewer times at 1024 rows, about 10 % faster):
    blocks of up to 4 x OMB rows while that leaves at least two tasks per thread, halving down to
    min_rows."""
    panels = max((m + OM - 1) // OM, 1)
    nb = (n + ONB - 1) // ONB
    if nb == 1 and min_rows < OMB:
        return min(2 * threads, panels)
    rows = 4 * OMB
    while True:
        mb = (m + rows - 1) // rows
        if mb * nb >= 2 * threads or rows // 2 < min_rows:
            return min(max(mb, 1), panels)
        rows //= 2


# gemm_nt reads its left operand once per NB columns of out; from this size on (1 MB, an L2 cache)
# that no longer stays in L2, and packing both operands once pays: the seed net's first layer
# (128 x 3072) is past it, its 64 x 64 layer and any batch of one far below.
NARROW_OP_FLOATS = 1 << 18
# Below that, gemm_op still wins from this many output rows per thread (it reads such an input in
# place, packs only the weights, and has no horizontal sums): a 64 x 64 by 64 product on one
# thread, 128 x 64 by 64 on two (the seed net's second layer). With fewer, gemm_nt's 32 x 48 blocks
# keep the threads busier.
NARROW_OP_ROWS = 64


def op_suits(m: int, n: int, k: int, threads: int) -> bool:
    """Whether the forward product of an (m, k) input and an (m, n) output suits gemm_op rather
    than gemm_nt: one block of columns (cut by rows among the threads, op(b) packed once: see
    min_block_rows), at least a register tile wide, with an input too large for gemm_nt to keep in
    L2 or NARROW_OP_ROWS rows for every thread; or at least one full block of ONB columns for every
    thread. (A 10-class output would waste most of every tile.)"""
    if n <= ONB:
        return n >= ON and (m * k >= NARROW_OP_FLOATS or m >= NARROW_OP_ROWS * threads)
    return (m + OMB - 1) // OMB * (n // ONB) >= threads


@serial_kernel
def _col_blocks(m, n, mb, threads):
    """How many blocks of columns out is cut into: runs of whole ON-column tiles, as even as can be
    (_col_span), at least ceil(n / ONB) of them (a task packs at most ONB columns of b).

    prange hands each thread an equal run of the mb x nb tasks, so with fewer tasks than threads, or
    a count that does not divide, some threads wait for the others: 256-column blocks would keep 12
    of 16 threads busy in the seed net's dw0 = dy.T @ x (64 x 3072), 4 of 16 in the wide net's
    dx = dy @ w (256 x 1024), and leave one of 2 idle a third of the time for 768 units. When the
    tasks do not divide among the threads, counts of blocks up to twice as many as there are, or as
    the threads need, are tried, and the fewest that finish soonest are taken (_makespan). More
    blocks read op(a) more often, so a count that divides is kept. An output of one block of
    columns is cut by rows into twice as many blocks as threads (_row_blocks), but no finer than a
    panel: the seed net's 16 panels of first-layer output on 12 threads give 4 threads two
    blocks each, and cutting its 64 columns in two evens that out (its tasks still share one
    packing of op(b): split_pack)."""
    nb = max((n + ONB - 1) // ONB, 1)
    tiles = (n + ON - 1) // ON
    if (mb * nb) % threads == 0:
        return nb
    best, best_span = nb, _makespan(m, n, mb, nb, threads)
    for c in range(nb + 1, min(tiles, 2 * max(nb, (threads + mb - 1) // mb)) + 1):
        span = _makespan(m, n, mb, c, threads)
        if span < best_span:
            best, best_span = c, span
    return best


@serial_kernel
def _col_span(n, nb, cb):
    """The columns (j0, j1) of block cb of nb: a run of whole ON-column tiles (the last one may be
    partial), as even as can be."""
    tiles = (n + ON - 1) // ON
    return cb * tiles // nb * ON, min((cb + 1) * tiles // nb * ON, n)


@serial_kernel
def _makespan(m, n, mb, nb, threads):
    """The most output elements any thread computes when prange hands `threads` threads equal
    contiguous runs of the mb x nb tasks (block t: rows t // nb, columns t % nb)."""
    panels = max((m + OM - 1) // OM, 1)
    tasks = mb * nb
    span = 0
    for th in range(threads):
        work = 0
        for t in range(th * tasks // threads, (th + 1) * tasks // threads):
            rb = t // nb
            rows = min((rb + 1) * panels // mb * OM, m) - rb * panels // mb * OM
            j0, j1 = _col_span(n, nb, t % nb)
            work += rows * (j1 - j0)
        span = max(span, work)
    return span


def col_blocks(m: int, n: int, threads: int) -> tuple:
    """(blocks of rows, blocks of columns) gemm_op cuts an (m, n) output into on `threads` threads:
    its tasks are their product."""
    mb = _row_blocks(m, n, threads, min_block_rows(n))
    return mb, _col_blocks(m, n, mb, threads)


def min_block_rows(n: int) -> int:
    """The shortest block of rows gemm_op gives a task (see _row_blocks): an output of one block of
    columns shares one packing of op(b) among all tasks (split_pack), so it can be cut as finely
    as a register tile to keep every thread busy; a wider one keeps OMB rows, as each task packs
    its own columns of b once per block of rows."""
    return OM if n <= ONB else OMB


@serial_kernel
def _pack_a(a, trans_a, pa, p, m):
    """Panel p of op(a) (rows p*OM ... of the (m, K) matrix) into pa[p], zero past row m."""
    r0 = p * OM
    kk = pa.shape[1]
    for k0 in range(0, kk, OKC):                 # a block of k at a time, so the panel stays in L1
        kn = min(OKC, kk - k0)
        if trans_a:                              # a (K, M)
            _pack_rows(a, pa[p : p + 1], r0, min(r0 + OM, m), k0, kn, k0)
        else:                                    # a (M, K)
            _pack_cols(a, pa[p : p + 1], r0, min(r0 + OM, m), k0, kn, k0)


@serial_kernel
def _pack_b(b, trans_b, pb, j0, j1, k0, kn):
    """Columns j0..j1 of op(b) for the k block k0..k0+kn into the panels pb (., OKC, ON)."""
    if trans_b:                                  # b (N, K)
        _pack_cols(b, pb, j0, j1, k0, kn, 0)
    else:                                        # b (K, N)
        _pack_rows(b, pb, j0, j1, k0, kn, 0)


@serial_kernel
def _k_panel(k):
    """The rows of op(a)'s panels for a reduction of length k: k floats (bf16.py: pairs)."""
    return k


@serial_kernel
def _words(x):
    """x as the element type of the packed panels (bf16.py: its 32-bit words)."""
    return x


@serial_kernel
def _reads_a(trans_a, n):
    """Whether the tiles read op(a) where it lies rather than from packed panels: when a is (M, K),
    each of a tile's OM rows of a is a run of k in memory that the tile walks as fast as a packed
    panel, and when out is one block of columns (n <= ONB) packing a is a whole pass over it for
    the few tiles that read each panel (two, in the seed net's first-layer forward product).
    A wider out reuses each packed panel for many tiles, and reading rows a power of two apart in
    place makes them collide in L1; a transposed a (K, M) has only OM floats of a panel per row.
    (bf16.py: never; its panels hold bf16 pairs.)"""
    return not trans_a and n <= ONB


@serial_kernel
def _in_place(a, pa, i, k0, kn):
    """Rows i..i+OM of a (M, K) for the k block k0..k0+kn as the tile reads a panel: (kn, OM).
    pa goes unused here; bf16.py's version, with the same arguments, returns its packed panel."""
    return a[i : i + OM, k0 : k0 + kn].T


@serial_kernel
def _reads_b(trans_b):
    """Whether the tiles can read op(b) where it lies: when b is (K, N), the ON columns of a panel
    are a run of each row of b, so a tile's vector loads of pb can come from b's rows as they are
    (gemm_op decides whether they do: see B_PLANS). A transposed b (N, K) has to be packed: its
    panel rows are columns of b. (bf16.py: never; its panels hold bf16 pairs.)"""
    return not trans_b


@serial_kernel
def _b_panel(b, pb, jt, j, j1, k0, kn, in_place):
    """What the tile reads for the columns j..j+ON of op(b) and the k block k0..k0+kn, (kn, ON):
    b itself (in_place, b (K, N), all ON columns there), else the panel packed in pb (in place, a
    block's last, partial panel is packed alone into pb[0])."""
    if not in_place:
        return pb[jt]
    if j + ON <= j1:
        return b[k0 : k0 + kn, j : j + ON]
    return pb[0]


@kernel
def _gemm_op(a, trans_a, b, trans_b, out, bias, mask, mode, pack, min_rows, threads, b_in_place):
    """gemm_op's kernel. The source is compiled again by kernels/bf16.py with its own packing, tile,
    _k_panel and _words, on bf16 pairs. pbs: op(b) packed once for all tasks, a (ONB-column)
    block of panels per k block, or empty (split_pack says when). threads: numba.get_num_threads(),
    from the caller (called outside a prange, it would make the kernel uncacheable). b_in_place: read
    a (K, N) b in place rather than packed (same bits either way; see B_PLANS)."""
    k_panel = _k_panel(a.shape[0] if trans_a else a.shape[1])
    fault = _op_fault(a, trans_a, b, trans_b, out, bias, mask, mode, pack, k_panel, threads)
    if fault:
        return fault
    m, n = out.shape
    mb = _row_blocks(m, n, threads, min_rows)
    rows, pa_floats, pbs_floats = split_pack(pack, m, n, k_panel, mb, threads)
    packb, pa, pbs = _words(rows), _words(pa_floats), _words(pbs_floats)
    kk = pa.shape[1]
    in_place = _reads_a(trans_a, n)
    if in_place:                                 # only a last, partial panel needs its zero rows
        if m % OM:
            _pack_a(a, trans_a, pa, m // OM, m)
    elif pa.size >= PAR_PACK:                    # op(a) into panels pa[p] (K, OM), once for all tasks
        for p in prange(pa.shape[0]):
            _pack_a(a, trans_a, pa, p, m)
    else:                                        # small: cheaper than starting the threads
        for p in range(pa.shape[0]):
            _pack_a(a, trans_a, pa, p, m)
    b_in_place = b_in_place and _reads_b(trans_b)
    shared = pbs.shape[0] > 0 and not b_in_place
    if shared and pbs.shape[0] > 1 and pbs.size >= PAR_PACK:   # op(b), which every task would pack whole
        for kb in prange(pbs.shape[0]):
            _pack_b(b, trans_b, pbs[kb], 0, n, kb * OKC, min(OKC, kk - kb * OKC))
    elif shared:
        for kb in range(pbs.shape[0]):
            _pack_b(b, trans_b, pbs[kb], 0, n, kb * OKC, min(OKC, kk - kb * OKC))
    panels = (m + OM - 1) // OM
    nb = _col_blocks(m, n, mb, threads)
    for t in prange(mb * nb):
        ws = rows[numba.get_thread_id()]         # < get_num_threads(), the rows of pack
        pb = packb[numba.get_thread_id()][:_PB].reshape((ONB // ON, OKC, ON))
        edge = ws[_PB : _PB + _EDGE].reshape((OM, ON))
        i0 = (t // nb) * panels // mb * OM       # block t // nb: a run of whole panels
        i1 = min(((t // nb) + 1) * panels // mb * OM, m)
        j0, j1 = _col_span(n, nb, t % nb)
        jb = j0 // ON if shared else 0           # shared panels start at column 0, a task's own at j0
        for k0 in range(0, max(kk, 1), OKC):     # one empty block when kk == 0, so out is still written
            kn = min(OKC, kk - k0)
            if shared:
                pb = pbs[k0 // OKC]
            elif not b_in_place:
                _pack_b(b, trans_b, pb, j0, j1, k0, kn)
            elif (j1 - j0) % ON:                 # only a last, partial panel needs its zero columns
                _pack_b(b, trans_b, pb, j1 - (j1 - j0) % ON, j1, k0, kn)
            n_i = (i1 - i0 + OM - 1) // OM
            n_j = (j1 - j0 + ON - 1) // ON
            # while this block computes, prefetch the rows of b the next k block packs (after the
            # last one, the first of the next task's columns), spread over the tiles: each row's
            # first line would otherwise cost a memory latency in the packing
            last_k = k0 + OKC >= kk
            k1, k2, pj0, pj1 = k0 + OKC, min(k0 + 2 * OKC, kk), j0, j1
            if last_k:
                k1, k2 = 0, min(OKC, kk)
                pj0, pj1 = _col_span(n, nb, (t + 1) % nb)
            n_pf = 0 if shared or (last_k and t + 1 == mb * nb) else (pj1 - pj0 if trans_b else k2 - k1)
            n_q = n_i * n_j
            # tile q prefetches rows q * n_pf // n_q up to (q + 1) * n_pf // n_q, and the tiles are
            # walked by counters: a division per tile would cost a few percent of a short one
            pf_step, pf_rem = n_pf // max(n_q, 1), n_pf % max(n_q, 1)
            pf0, pf_err, it, jt = 0, 0, 0, 0
            for q in range(n_q):
                pf1 = pf0 + pf_step
                pf_err += pf_rem
                if pf_err >= n_q:
                    pf_err -= n_q
                    pf1 += 1
                _prefetch_rows(b, trans_b, pf0, pf1, pj0, pj1, k1, k2)
                pf0 = pf1
                i = i0 + it * OM
                j = j0 + jt * ON
                full = i + OM <= i1 and j + ON <= j1
                dst = out if full else edge      # a partial tile is computed whole into edge, then cropped
                # two call sites, one panel type each: a single one would unify a packed panel and a
                # view of a into one strided type, and the packed panels' tiles would pay for it
                b_panel = _b_panel(b, pb, jt + jb, j, j1, k0, kn, b_in_place)
                if in_place and i + OM <= m:
                    tile(_in_place(a, pa, i, k0, kn), b_panel, dst, i if full else 0, j if full else 0, kn,
                         full and k0 > 0)
                else:
                    tile(pa[i // OM, k0 : k0 + kn], b_panel, dst, i if full else 0, j if full else 0, kn,
                         full and k0 > 0)
                if not full:
                    _add_edge(edge, out, i, min(i + OM, i1), j, min(j + ON, j1), k0 > 0)
                if kk <= OKC:    # out written once: along its rows, so the stores fill its lines in order
                    jt += 1
                    if jt == n_j:
                        it, jt = it + 1, 0
                else:            # out stays in L2 across k blocks: one b panel in L1 while a streams past
                    it += 1
                    if it == n_i:
                        it, jt = 0, jt + 1
        _epilogue(out, i0, i1, j0, j1, bias, mask, mode)
    return 0


@serial_kernel
def _prefetch_rows(b, trans_b, r0, r1, j0, j1, k1, k2):
    """Prefetch rows r0..r1 of what _pack_cols / _pack_rows will read of b for the k block
    k1..k2 and the columns j0..j1 of out, one cache line (16 floats) at a time."""
    for r in range(r0, r1):
        if trans_b:                              # b (N, K): row j0 + r, columns k1..k2
            for c in range(k1, k2, 16):
                prefetch(b, j0 + r, c)
        else:                                    # b (K, N): row k1 + r, columns j0..j1
            for c in range(j0, j1, 16):
                prefetch(b, k1 + r, c)


@serial_kernel
def _add_edge(edge, out, i0, i1, j0, j1, accumulate):
    for i in range(i1 - i0):
        src = edge[i]
        dst = out[i0 + i, j0:j1]
        for j in range(j1 - j0):
            dst[j] = dst[j] + src[j] if accumulate else src[j]
