"""Assemble a training batch from the dataset (uint8 images or float32 features)."""
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .config import kernel, serial_kernel
from .prefetch import prefetch

# The rows of a batch are random rows of a dataset far larger than the caches: each task first asks
# for the row (or image plane) the task AHEAD places later will copy, so that it arrives from
# memory while this one copies (1, 4 or 8 ahead did no better than 2).
AHEAD = 2


@serial_kernel
def _prefetch_span(x, row, c0, c1):
    """Prefetch x[row, c0:c1], a cache line (64 bytes) at a time."""
    for c in range(c0, c1, 64 // x.itemsize):
        prefetch(x, row, c)


@serial_kernel
def _prefetch_ahead(x, idx, i):
    """Prefetch the row of x that task i + AHEAD of a gather over idx will read, if there is one."""
    if i + AHEAD < idx.shape[0]:
        _prefetch_span(x, idx[i + AHEAD], 0, x.shape[1])


@serial_kernel
def normalise_row(src, mean, inv_std, dst):
    """dst = (src - mean) * inv_std, elementwise over 1-d views of one length (src uint8 or
    float32): the one normalisation that normalise and the normalising gathers share, so their
    bits agree by construction."""
    for k in range(src.shape[0]):
        dst[k] = (np.float32(src[k]) - mean[k]) * inv_std[k]


@kernel
def gather_batch(x, idx, out):
    """out (B,D) = x[idx]; x (N,D) uint8 or float32, idx (B,) int64, out (B,D) of x's dtype."""
    for i in prange(idx.shape[0]):
        _prefetch_ahead(x, idx, i)
        src, dst = x[idx[i]], out[i]
        for k in range(x.shape[1]):
            dst[k] = src[k]


@kernel
def gather_normalise(x, idx, mean, inv_std, out):
    """out (B,D) float32 = (x[idx] - mean) * inv_std, per feature: gather_batch and
    linear.normalise in one pass, for a batch that is not augmented. x (N,D) uint8 or float32,
    idx (B,) int64, mean and inv_std (D,) float32. The rows go from the dataset straight into the
    first layer's input: the raw batch is never written (a pass over it each way saved)."""
    for i in prange(idx.shape[0]):
        _prefetch_ahead(x, idx, i)
        normalise_row(x[idx[i]], mean, inv_std, out[i])


# How gather_augment fills the pixels a shift moves in from outside the image.
PAD_ZERO = 0     # with 0
PAD_REFLECT = 1  # mirrored about the edge pixel, like np.pad(mode="reflect")


@kernel
def gather_augment(x, idx, shift_y, shift_x, flip, pad_mode, channels, height, width, out):
    """out[i] = augment(x[idx[i]]) for channel-planar images (channels planes of height x width).

    Image i is translated so that out pixel (r, c) shows source pixel (r + shift_y[i],
    c + shift_x[i]), i.e. a random crop of the image padded by |shift| on each side; pixels
    from outside the image are 0 (PAD_ZERO, any shift) or mirrored (PAD_REFLECT, which needs
    |shift_y| < height and |shift_x| < width). Then it is mirrored left-right if flip[i].
    x (N,D) uint8 or float32 with D = channels*height*width, plane c in columns c*H*W:(c+1)*H*W,
    row-major inside; idx/shift_y/shift_x (B,) int64, flip (B,) bool, out (B,D) of x's dtype.
    """
    _augment_checks(x, idx, shift_y, shift_x, pad_mode, channels, height, width, out)
    reflect = pad_mode == PAD_REFLECT
    # One task per (image, channel plane): a batch of 1 still spreads over `channels` threads,
    # and each output element is written by exactly one task.
    for t in prange(idx.shape[0] * channels):
        _augment_plane(x, idx, shift_y, shift_x, flip, reflect, channels, height, width, out, t)


@kernel
def gather_augment_normalise(x, idx, shift_y, shift_x, flip, pad_mode, channels, height, width, mean, inv_std,
                             raw, out):
    """out (B,D) float32 = (gather_augment(...) - mean) * inv_std, per feature: gather_augment into
    raw (B,D) of x's dtype, and each image plane normalised by the task that wrote it, while it is
    in L1 (the same bits as gather_augment then linear.normalise, without a second pass over the
    batch). Arguments as gather_augment's; mean and inv_std (D,) float32."""
    _augment_checks(x, idx, shift_y, shift_x, pad_mode, channels, height, width, raw)
    if out.shape[0] != raw.shape[0] or out.shape[1] != raw.shape[1]:
        raise ValueError("gather_augment_normalise: raw and out must have the same shape")
    reflect = pad_mode == PAD_REFLECT
    plane = height * width
    for t in prange(idx.shape[0] * channels):
        _augment_plane(x, idx, shift_y, shift_x, flip, reflect, channels, height, width, raw, t)
        i = t // channels
        base = (t - i * channels) * plane
        normalise_row(raw[i, base : base + plane], mean[base : base + plane], inv_std[base : base + plane],
                      out[i, base : base + plane])


@serial_kernel
def _augment_checks(x, idx, shift_y, shift_x, pad_mode, channels, height, width, out):
    """gather_augment's arguments, checked, not trusted: a wrong shape or reflect shift would
    read outside x."""
    plane = height * width
    if x.shape[1] != channels * plane or out.shape[1] != x.shape[1] or out.shape[0] != idx.shape[0]:
        raise ValueError("gather_augment: x and out need channels*height*width columns, out one row per idx")
    if pad_mode == PAD_REFLECT:
        for i in range(idx.shape[0]):
            if abs(shift_y[i]) >= height or abs(shift_x[i]) >= width:
                raise ValueError("gather_augment: reflect padding needs |shift_y| < height, |shift_x| < width")


@serial_kernel
def _augment_plane(x, idx, shift_y, shift_x, flip, reflect, channels, height, width, out, t):
    """Task t of gather_augment: image t // channels, plane t % channels."""
    plane = height * width
    tasks = idx.shape[0] * channels
    if t + AHEAD < tasks:
        ahead = (t + AHEAD) // channels
        start = (t + AHEAD - ahead * channels) * plane
        _prefetch_span(x, idx[ahead], start, start + plane)
    i = t // channels
    base = (t - i * channels) * plane
    src = x[idx[i], base : base + plane]
    dst = out[i, base : base + plane]
    sy, sx, fl = shift_y[i], shift_x[i], flip[i]
    unit = src.strides[0] == src.itemsize and dst.strides[0] == dst.itemsize   # _reversed8 needs it
    # Output column c reads source column first + step * c (step -1 if flipped). The columns
    # [lo, hi) of every row read inside the image: a plain copy loop. Only the <= |sx|
    # columns either side need the padding rule. All of this is per image, not per row.
    if fl:
        first, step = width - 1 + sx, -1
        lo = min(max(0, sx), width)
        hi = max(min(width, width + sx), lo)
    else:
        first, step = sx, 1
        lo = min(max(0, -sx), width)
        hi = max(min(width, width - sx), lo)
    # Unflipped, the rows whose source row is inside the image, [r0, r1), are one shifted span
    # of the plane: one long copy loop instead of a short one per row. It also writes the
    # padding columns of the rows between, which the loops below then write as they should be.
    r0, r1 = min(max(0, -sy), height), max(min(height, height - sy), 0)
    block = not fl and r1 > r0 and hi > lo
    if block:
        delta = sy * width + sx
        for k in range(r0 * width + lo, (r1 - 1) * width + hi):
            dst[_u(k)] = src[_u(k + delta)]
        if lo > 0 or hi < width:
            for r in range(r0, r1):
                o, row = r * width, (r + sy) * width
                for c in range(lo):
                    _pad_pixel(src, dst, o + c, row, first + c, width, reflect)
                for c in range(hi, width):
                    _pad_pixel(src, dst, o + c, row, first + c, width, reflect)
    for r in range(height):
        if block and r0 <= r < r1:
            continue
        o = r * width
        y = _source(r + sy, height, reflect)
        if y < 0:
            for c in range(width):
                dst[_u(o + c)] = 0   # an int: Numba casts it to out's dtype (uint8 or float32)
            continue
        s = y * width + first
        if fl:
            c = lo
            while unit and c + REV <= hi:
                _reversed8(src, s - c - (REV - 1), dst, o + c)
                c += REV
            if unit and c < hi and hi - lo >= REV:     # the last 8, overlapping: no pixel loop
                _reversed8(src, s - (hi - REV) - (REV - 1), dst, o + hi - REV)
                c = hi
            for c in range(c, hi):
                dst[_u(o + c)] = src[_u(s - c)]
        else:
            for c in range(lo, hi):
                dst[_u(o + c)] = src[_u(s + c)]
        for c in range(lo):
            _pad_pixel(src, dst, o + c, y * width, first + step * c, width, reflect)
        for c in range(hi, width):
            _pad_pixel(src, dst, o + c, y * width, first + step * c, width, reflect)


# A mirrored row is copied 8 pixels at a time, reversed in a vector register: a row is 32 pixels,
# too short for the loop vectoriser, which wants 32 or 64 iterations of a uint8 loop.
REV = 8


@intrinsic
def _reversed8(typingctx, src, s, dst, d):
    """dst[d + j] = src[s + 7 - j] for j < 8: 1-d arrays with adjacent elements; no bounds checks.
    Of one dtype, a vector load, a reversing shuffle and a store; of two, element by element, cast."""
    def codegen(context, builder, signature, args):
        src_t, _, dst_t, _ = signature.args
        src_a = context.make_array(src_t)(context, builder, args[0])
        dst_a = context.make_array(dst_t)(context, builder, args[2])
        ps = cgutils.get_item_pointer(context, builder, src_t, src_a, [args[1]], wraparound=False)
        pd = cgutils.get_item_pointer(context, builder, dst_t, dst_a, [args[3]], wraparound=False)
        if src_t.dtype != dst_t.dtype:
            for j in range(REV):
                v = builder.load(builder.gep(ps, [ir.Constant(ir.IntType(64), REV - 1 - j)]))
                v = context.cast(builder, v, src_t.dtype, dst_t.dtype)
                builder.store(v, builder.gep(pd, [ir.Constant(ir.IntType(64), j)]))
            return context.get_dummy_value()
        vec = ir.VectorType(context.get_data_type(src_t.dtype), REV)
        v = builder.load(builder.bitcast(ps, vec.as_pointer()), align=1)
        v = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), REV), list(range(REV - 1, -1, -1))))
        builder.store(v, builder.bitcast(pd, vec.as_pointer()), align=1)
        return context.get_dummy_value()
    return types.void(src, types.intp, dst, types.intp), codegen


@serial_kernel
def _u(k):
    """k (>= 0) as an unsigned index. Numba wraps negative signed indices (k + len), a branch
    that keeps LLVM from vectorising the copy loops; the flipped (reversed) copy ran 12x slower."""
    return np.uint64(k)


@serial_kernel
def _pad_pixel(src, dst, o, row, k, width, reflect):
    """dst[o] = the pixel at column k (outside [0, width)) of the source row starting at src[row]."""
    s = _source(k, width, reflect)
    if s < 0:
        dst[_u(o)] = 0
    else:
        dst[_u(o)] = src[_u(row + s)]


@serial_kernel
def _source(k, side, reflect):
    """The source index for position k of a line of `side` pixels: mirrored into range if
    reflect, else -1 when outside."""
    if 0 <= k < side:
        return k
    if reflect:
        return -k if k < 0 else 2 * side - 2 - k
    return -1
