"""Every Numba kernel against its NumPy twin in fastfcnn.reference, on awkward shapes."""
import inspect

import numpy as np
import pytest

from fastfcnn import kernels as K
from fastfcnn import reference as R

RTOL = 1e-4
PACK = K.pack_workspace(max(K.matmul.packed_a_floats(129, 3072), K.matmul.packed_a_floats(3072, 129)))
# ^ room for op(a) of every product below: batches up to 129, widths up to 3072
BATCHES = [1, 7, 129]
WIDTHS = [1, 10, 33, 3072]


def close(a, b, rtol=RTOL):
    """Max abs error relative to the largest reference magnitude (robust to entries near 0)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = max(float(np.abs(b).max()), 1e-30) if b.size else 1.0
    err = float(np.abs(a.astype(np.float64) - b).max()) / scale if b.size else 0.0
    assert err <= rtol, f"relative error {err:.2e} > {rtol:.0e}"


def randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def both(name, *args, outputs):
    """Run kernel and reference on private copies of args; return the outputs of each."""
    results = []
    for impl in (K, R):
        a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
        ret = getattr(impl, name)(*a)
        results.append(([a[i] for i in outputs], ret))
    return results


def test_same_functions_and_signatures():
    assert sorted(K.__all__) == sorted(n for n in K.__all__ if hasattr(R, n))
    for name in K.__all__:
        fn = getattr(K, name)
        kernel_sig = inspect.signature(getattr(fn, "py_func", fn))   # pack_workspace is plain Python
        assert kernel_sig == inspect.signature(getattr(R, name)), name


@pytest.mark.parametrize("mode", [R.PLAIN, R.BIAS, R.BIAS_RELU, R.MASK])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 33, 10), (5, 3, 9), (129, 70, 33), (4, 8, 4)])
def test_gemm_nt(m, k, n, mode):
    rng = np.random.default_rng(m * 100 + k + n)
    a, b, bias, mask = randn(rng, m, k), randn(rng, n, k), randn(rng, n), randn(rng, m, n)
    (k_out,), _ = both("gemm_nt", a, b, np.zeros((m, n), np.float32), bias, mask, mode, outputs=[2])[0]
    (r_out,), _ = both("gemm_nt", a, b, np.zeros((m, n), np.float32), bias, mask, mode, outputs=[2])[1]
    close(k_out, r_out)
    if mode == R.BIAS_RELU:
        assert (k_out >= 0).all() and (k_out == 0).any() == (r_out == 0).any()


@pytest.mark.parametrize("batch,d", [(1, 1), (7, 33), (129, 3072)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_normalise(batch, d, dtype):
    rng = np.random.default_rng(batch + d)
    xb = rng.integers(0, 256, (batch, d)).astype(dtype)
    mean = rng.uniform(50, 200, d).astype(np.float32)
    inv_std = (1 / rng.uniform(30, 80, d)).astype(np.float32)
    (k,), (r,) = (out for out, _ in both("normalise", xb, mean, inv_std, np.full((batch, d), np.nan, np.float32),
                                         outputs=[3]))
    np.testing.assert_array_equal(k, r)    # one subtraction and one product per element, in float32
    np.testing.assert_allclose(k, (xb.astype(np.float64) - mean) * inv_std, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch,d", [(1, 1), (7, 33), (129, 3072)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_gather_normalise_is_gather_then_normalise(batch, d, dtype):
    """The fused kernel gives the bits of gather_batch followed by normalise, rows repeated or not."""
    rng = np.random.default_rng(batch + d)
    x = rng.integers(0, 256, (300, d)).astype(dtype)
    idx = rng.integers(0, 300, batch).astype(np.int64)
    idx[-1] = idx[0]
    mean = rng.uniform(50, 200, d).astype(np.float32)
    inv_std = (1 / rng.uniform(30, 80, d)).astype(np.float32)
    two_pass = np.full((batch, d), np.nan, np.float32)
    K.normalise(x[idx], mean, inv_std, two_pass)
    (k,), (r,) = (out for out, _ in both("gather_normalise", x, idx, mean, inv_std,
                                         np.full((batch, d), np.nan, np.float32), outputs=[4]))
    np.testing.assert_array_equal(k, two_pass)
    np.testing.assert_array_equal(r, two_pass)
    np.testing.assert_allclose(k, (x[idx].astype(np.float64) - mean) * inv_std, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d,h", [(3072, 33), (33, 10), (10, 1), (1, 33), (33, 600)])   # 600: gemm_op on 1-2 threads
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("features", [False, True])   # uint8 pixels, or tabular float32 features
def test_input_linear_forward(batch, d, h, relu, features):
    rng = np.random.default_rng(batch + d + h)
    if features:
        xb = randn(rng, batch, d) * np.float32(3) + np.float32(1)
        mean = randn(rng, d)
        inv_std = (1 / rng.uniform(0.5, 4, d)).astype(np.float32)
    else:
        xb = rng.integers(0, 256, (batch, d), dtype=np.uint8)
        mean = rng.uniform(50, 200, d).astype(np.float32)
        inv_std = (1 / rng.uniform(30, 80, d)).astype(np.float32)
    w, b = randn(rng, h, d) * np.float32(0.05), randn(rng, h)
    args = (xb, mean, inv_std, w, b, relu, np.zeros((batch, d), np.float32), np.zeros((batch, h), np.float32),
            PACK)
    (kx, ko), _ = both("input_linear_forward", *args, outputs=[6, 7])[0]
    (rx, ro), _ = both("input_linear_forward", *args, outputs=[6, 7])[1]
    close(kx, rx)
    close(ko, ro)
    np.testing.assert_allclose(kx, (xb.astype(np.float32) - mean) * inv_std, rtol=1e-6, atol=1e-6)




@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d,h", [(33, 10), (3072, 1), (1, 33), (10, 3072)])   # (10, 3072): gemm_op's path
@pytest.mark.parametrize("relu", [True, False])
def test_linear_forward(batch, d, h, relu):
    rng = np.random.default_rng(batch * d + h)
    args = (randn(rng, batch, d), randn(rng, h, d), randn(rng, h), relu, np.zeros((batch, h), np.float32),
            PACK)
    (k_out,), _ = both("linear_forward", *args, outputs=[4])[0]
    (r_out,), _ = both("linear_forward", *args, outputs=[4])[1]
    close(k_out, r_out)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d,h", [(3072, 33), (33, 10), (10, 1), (1, 33)])
def test_linear_grad_params(batch, d, h):
    rng = np.random.default_rng(batch + 3 * d + h)
    dy, x = randn(rng, batch, h), np.maximum(randn(rng, batch, d), 0)
    args = (dy, x, np.zeros((h, d), np.float32), np.zeros(h, np.float32), PACK)
    (kw, kb), _ = both("linear_grad_params", *args, outputs=[2, 3])[0]
    (rw, rb), _ = both("linear_grad_params", *args, outputs=[2, 3])[1]
    close(kw, rw)
    close(kb, rb)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d,h", [(3072, 33), (33, 10), (10, 1), (1, 33)])
def test_linear_grad_input(batch, d, h):
    rng = np.random.default_rng(batch + d + 5 * h)
    x = np.maximum(randn(rng, batch, d), 0)   # a ReLU output: about half the entries are 0
    args = (randn(rng, batch, h), randn(rng, h, d), x, np.full((batch, d), 7, np.float32),
            PACK)
    (k_dx,), _ = both("linear_grad_input", *args, outputs=[3])[0]
    (r_dx,), _ = both("linear_grad_input", *args, outputs=[3])[1]
    close(k_dx, r_dx)
    assert (k_dx[x == 0] == 0).all()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("classes", [1, 10, 33])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_xent_grad(batch, classes, smoothing):
    rng = np.random.default_rng(batch + classes)
    logits = randn(rng, batch, classes) * np.float32(5)
    logits[0, 0] = 80.0  # exp(80) overflows float32: only a max-shifted softmax survives it
    labels = rng.integers(0, classes, batch).astype(np.int64)
    args = (logits, labels, smoothing, np.zeros((batch, classes), np.float32), np.zeros(batch, np.float32))
    (k_d, k_loss), (k_sum, k_correct) = both("softmax_xent_grad", *args, outputs=[3, 4])[0]
    (r_d, r_loss), (r_sum, r_correct) = both("softmax_xent_grad", *args, outputs=[3, 4])[1]
    assert np.isfinite(k_d).all() and np.isfinite(k_loss).all()
    close(k_d, r_d)
    close(k_loss, r_loss)
    # the returned statistics: the row losses summed, and the rows whose argmax is the label
    assert k_sum == pytest.approx(float(k_loss.astype(np.float64).sum()), rel=1e-12)
    assert r_sum == pytest.approx(k_sum, rel=1e-5)
    assert k_correct == r_correct == np.count_nonzero(logits.argmax(axis=1) == labels)
    # each row of the gradient sums to zero: softmax and target both sum to one
    np.testing.assert_allclose(k_d.sum(axis=1), 0, atol=1e-6)


def test_softmax_xent_known_value():
    logits = np.zeros((2, 4), np.float32)
    labels = np.array([0, 3], np.int64)
    d, loss = np.zeros((2, 4), np.float32), np.zeros(2, np.float32)
    K.softmax_xent_grad(logits, labels, 0.0, d, loss)
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)
    np.testing.assert_allclose(d[0], np.array([-0.75, 0.25, 0.25, 0.25]) / 2, rtol=1e-6)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("classes", [1, 2, 10, 33])
def test_softmax(batch, classes):
    rng = np.random.default_rng(batch * 10 + classes)
    logits = randn(rng, batch, classes) * np.float32(5)
    logits[0, 0] = 1e4       # exp(1e4) overflows float32 (and float64): only a max-shifted softmax survives
    logits[-1, -1] = -1e4
    (k_p,), _ = both("softmax", logits, np.zeros((batch, classes), np.float32), outputs=[1])[0]
    (r_p,), _ = both("softmax", logits, np.zeros((batch, classes), np.float32), outputs=[1])[1]
    assert np.isfinite(k_p).all() and (k_p >= 0).all()
    close(k_p, r_p, rtol=1e-6)
    np.testing.assert_allclose(k_p.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(k_p[0, 0], 1.0, rtol=1e-6)   # 1e4 dwarfs the other logits of row 0
    expected = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(k_p, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_softmax_in_place_and_shift_invariant():
    rng = np.random.default_rng(4)
    logits = randn(rng, 7, 10)
    probs = np.zeros_like(logits)
    K.softmax(logits, probs)
    shifted = np.zeros_like(logits)
    K.softmax(logits + np.float32(1e3), shifted)   # softmax(z + k) == softmax(z)
    np.testing.assert_allclose(shifted, probs, rtol=1e-3, atol=1e-7)  # 1e3 + z keeps ~4 digits of z
    in_place = logits.copy()
    K.softmax(in_place, in_place)
    # not bit-equal: with aliased rows LLVM takes its scalar loop, which sums z in another order
    np.testing.assert_allclose(in_place, probs, rtol=1e-6)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("classes", [1, 2, 10, 33])
def test_softmax_agrees_with_softmax_xent_grad(batch, classes):
    """Without smoothing, dlogits * B + onehot(label) is the softmax, and row_loss = -log p[label]."""
    rng = np.random.default_rng(batch + 3 * classes)
    logits = randn(rng, batch, classes) * np.float32(5)
    labels = rng.integers(0, classes, batch).astype(np.int64)
    probs, d, loss = np.zeros_like(logits), np.zeros_like(logits), np.zeros(batch, np.float32)
    K.softmax(logits, probs)
    K.softmax_xent_grad(logits, labels, 0.0, d, loss)
    rows = np.arange(batch)
    from_grad = d * np.float32(batch)
    from_grad[rows, labels] += 1
    np.testing.assert_allclose(probs, from_grad, atol=1e-5)
    np.testing.assert_allclose(probs[rows, labels], np.exp(-loss), rtol=1e-5)


@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_xent_grad_counts_the_first_argmax(batch):
    rng = np.random.default_rng(batch)
    logits = randn(rng, batch, 10)
    labels = rng.integers(0, 10, batch).astype(np.int64)
    labels[0] = np.argmax(logits[0])
    logits[-1] = 1.0                   # a tie across the row: the first class is the prediction
    labels[-1] = 0
    if batch > 2:
        logits[1], labels[1] = 1.0, 3  # tied, and the label is not the first class
    expected = int((logits.argmax(1) == labels).sum())
    stats = [impl.softmax_xent_grad(logits, labels, 0.0, np.zeros_like(logits), np.zeros(batch, np.float32))[1]
             for impl in (K, R)]
    assert stats == [expected, expected] and expected >= 1


@pytest.mark.parametrize("shape", [(1,), (33,), (10, 3072), (7, 1)])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_update(shape, nesterov):
    rng = np.random.default_rng(len(shape))
    args = (randn(rng, *shape), randn(rng, *shape), randn(rng, *shape),
            np.float32(0.05), np.float32(0.9), np.float32(5e-4), nesterov)
    (kp, kv), _ = both("sgd_momentum_update", *args, outputs=[0, 2])[0]
    (rp, rv), _ = both("sgd_momentum_update", *args, outputs=[0, 2])[1]
    close(kp, rp)
    close(kv, rv)
    p, g, v = (a.astype(np.float64) for a in args[:3])
    g = g + 5e-4 * p
    v = 0.9 * v + g
    expected = p - 0.05 * (g + 0.9 * v if nesterov else v)
    np.testing.assert_allclose(kp, expected, rtol=1e-5, atol=1e-6)
    assert kp.dtype == np.float32


@pytest.mark.parametrize("batch", BATCHES)
def test_gather_batch(batch):
    rng = np.random.default_rng(batch)
    x = rng.integers(0, 256, (300, 3072), dtype=np.uint8)
    idx = rng.integers(0, 300, batch).astype(np.int64)
    out_k, out_r = np.zeros((batch, 3072), np.uint8), np.zeros((batch, 3072), np.uint8)
    K.gather_batch(x, idx, out_k)
    R.gather_batch(x, idx, out_r)
    np.testing.assert_array_equal(out_k, x[idx])
    np.testing.assert_array_equal(out_r, x[idx])


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("d", [1, 33, 3072])
def test_gather_batch_float32(batch, d):
    """Tabular data: float32 features are gathered bit for bit, like uint8 pixels."""
    rng = np.random.default_rng(batch + d)
    x = randn(rng, 300, d)
    idx = rng.integers(0, 300, batch).astype(np.int64)
    out_k, out_r = np.zeros((batch, d), np.float32), np.zeros((batch, d), np.float32)
    K.gather_batch(x, idx, out_k)
    R.gather_batch(x, idx, out_r)
    np.testing.assert_array_equal(out_k, x[idx])
    np.testing.assert_array_equal(out_r, x[idx])


def test_kernels_are_deterministic():
    rng = np.random.default_rng(7)
    a, b = randn(rng, 129, 3072), randn(rng, 33, 3072)
    outs = []
    for _ in range(3):
        out = np.empty((129, 33), np.float32)
        K.gemm_nt(a, b, out, b[0], out, R.PLAIN)
        outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("shape", [(1,), (33,), (10, 3072), (7, 1)])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("step", [1, 2, 1000])
def test_adam_update(shape, decoupled, step):
    rng = np.random.default_rng(len(shape) + step)
    m0, v0 = randn(rng, *shape) * np.float32(0.1), np.abs(randn(rng, *shape)) * np.float32(0.01)
    args = (randn(rng, *shape), randn(rng, *shape), m0, v0, np.float32(1e-3), np.float32(0.9),
            np.float32(0.999), np.float32(1e-8), np.float32(0.05), decoupled, step)
    (kp, km, kv), _ = both("adam_update", *args, outputs=[0, 2, 3])[0]
    (rp, rm, rv), _ = both("adam_update", *args, outputs=[0, 2, 3])[1]
    close(kp, rp)
    close(km, rm)
    close(kv, rv)
    p, g, m, v = (a.astype(np.float64) for a in args[:4])
    if decoupled:
        p = p * (1 - 1e-3 * 0.05)
    else:
        g = g + 0.05 * p
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    expected = p - 1e-3 * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    np.testing.assert_allclose(kp, expected, rtol=1e-5, atol=1e-6)
    assert kp.dtype == np.float32


def test_adam_first_step_moves_every_weight_by_lr():
    """With bias correction the first update is lr * sign(grad) (up to eps), whatever |grad| is."""
    rng = np.random.default_rng(0)
    p, g = randn(rng, 5, 7), randn(rng, 5, 7)
    before = p.copy()
    K.adam_update(p, g, np.zeros_like(p), np.zeros_like(p), np.float32(0.01), np.float32(0.9),
                  np.float32(0.999), np.float32(1e-8), np.float32(0), False, 1)
    np.testing.assert_allclose(before - p, 0.01 * np.sign(g), rtol=1e-4)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("h", [1, 10, 33])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout(batch, h, p):
    rng = np.random.default_rng(batch + h)
    x, u = randn(rng, batch, h), rng.random((batch, h), dtype=np.float32)
    (kx,), _ = both("dropout", x, u, p, outputs=[0])[0]
    (rx,), _ = both("dropout", x, u, p, outputs=[0])[1]
    close(kx, rx)
    np.testing.assert_allclose(kx, np.where(u >= p, x / (1 - p), 0), rtol=1e-6)


def augment_inputs(rng, batch, pad):
    x = rng.integers(0, 256, (50, 3072), dtype=np.uint8)
    idx = rng.integers(0, 50, batch).astype(np.int64)
    sy = rng.integers(-pad, pad + 1, batch).astype(np.int64)
    sx = rng.integers(-pad, pad + 1, batch).astype(np.int64)
    flip = rng.random(batch) < 0.5
    return x, idx, sy, sx, flip


CIFAR = (3, 32, 32)   # channels, height, width


def images(a, shape=CIFAR):
    return a.reshape(len(a), *shape)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("pad_mode", [K.PAD_ZERO, K.PAD_REFLECT])
@pytest.mark.parametrize("pad", [0, 1, 4, 31])
def test_gather_augment_matches_reference(batch, pad_mode, pad):
    rng = np.random.default_rng(batch + pad)
    x, idx, sy, sx, flip = augment_inputs(rng, batch, pad)
    outs = []
    for impl in (K, R):
        out = np.zeros((batch, 3072), np.uint8)
        impl.gather_augment(x, idx, sy, sx, flip, pad_mode, *CIFAR, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_gather_augment_identity_and_flip_twice():
    rng = np.random.default_rng(1)
    x, idx, _, _, _ = augment_inputs(rng, 7, 0)
    zero = np.zeros(7, np.int64)
    out = np.zeros((7, 3072), np.uint8)
    K.gather_augment(x, idx, zero, zero, np.zeros(7, bool), K.PAD_ZERO, *CIFAR, out)
    np.testing.assert_array_equal(out, x[idx])
    K.gather_augment(x, idx, zero, zero, np.ones(7, bool), K.PAD_REFLECT, *CIFAR, out)
    np.testing.assert_array_equal(images(out), images(x[idx])[:, :, :, ::-1])
    twice = np.zeros_like(out)
    K.gather_augment(out, np.arange(7, dtype=np.int64), zero, zero, np.ones(7, bool), K.PAD_ZERO, *CIFAR,
                     twice)
    np.testing.assert_array_equal(twice, x[idx])


def test_gather_augment_zero_pad_shifts_content_and_fills_zeros():
    rng = np.random.default_rng(2)
    x = rng.integers(1, 256, (3, 3072), dtype=np.uint8)   # no zero pixels in the source
    idx = np.array([0, 1, 2], np.int64)
    sy, sx = np.array([2, -3, 0], np.int64), np.array([-1, 0, 4], np.int64)
    out = np.zeros((3, 3072), np.uint8)
    K.gather_augment(x, idx, sy, sx, np.zeros(3, bool), K.PAD_ZERO, *CIFAR, out)
    src, got = images(x), images(out)
    np.testing.assert_array_equal(got[0, :, :30, 1:], src[0, :, 2:, :31])
    assert not got[0, :, 30:].any() and not got[0, :, :, :1].any()
    np.testing.assert_array_equal(got[1, :, 3:], src[1, :, :29])
    assert not got[1, :, :3].any()
    np.testing.assert_array_equal(got[2, :, :, :28], src[2, :, :, 4:])
    assert not got[2, :, :, 28:].any()


def test_gather_augment_reflect_matches_np_pad():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (1, 3072), dtype=np.uint8)
    padded = np.pad(images(x)[0], ((0, 0), (4, 4), (4, 4)), mode="reflect")
    out = np.zeros((1, 3072), np.uint8)
    for dy in range(-4, 5):
        for dx in (-4, -1, 3):
            K.gather_augment(x, np.zeros(1, np.int64), np.array([dy]), np.array([dx]), np.zeros(1, bool),
                             K.PAD_REFLECT, *CIFAR, out)
            np.testing.assert_array_equal(images(out)[0], padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx])


AUG_SHAPES = [(1, 28, 28), (3, 32, 32), (3, 48, 64), (2, 5, 7), (4, 9, 3)]   # channels, height, width


def shape_inputs(rng, shape, dtype, batch, pad_y, pad_x):
    """Images of `shape` (distinct values, so a misplaced pixel shows), indices, shifts up to the pads
    and flips that cover both cases."""
    d = int(np.prod(shape))
    if dtype == np.uint8:
        x = rng.integers(0, 256, (20, d), dtype=np.uint8)
    else:
        x = randn(rng, 20, d)
    idx = rng.integers(0, 20, batch).astype(np.int64)
    sy = rng.integers(-pad_y, pad_y + 1, batch).astype(np.int64)
    sx = rng.integers(-pad_x, pad_x + 1, batch).astype(np.int64)
    sy[0], sx[0] = pad_y, -pad_x      # the extremes are always in the batch
    sy[-1], sx[-1] = -pad_y, pad_x
    flip = np.arange(batch) % 2 == 1
    return x, idx, sy, sx, flip


@pytest.mark.parametrize("shape", AUG_SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("pad_mode", [K.PAD_ZERO, K.PAD_REFLECT])
@pytest.mark.parametrize("pad", [1, 4, 100])   # 100: as far as the mode allows (past the image if zero)
def test_gather_augment_shapes_match_reference(shape, dtype, pad_mode, pad):
    _, h, w = shape
    if pad_mode == K.PAD_REFLECT:
        pad_y, pad_x = min(pad, h - 1), min(pad, w - 1)
    else:
        pad_y, pad_x = min(pad, h + 1), min(pad, w + 1)
    rng = np.random.default_rng(h * w + pad)
    x, idx, sy, sx, flip = shape_inputs(rng, shape, dtype, 9, pad_y, pad_x)
    outs = []
    for impl in (K, R):
        out = np.full((9, x.shape[1]), 7, dtype)   # 7: a pixel left unwritten shows
        impl.gather_augment(x, idx, sy, sx, flip, pad_mode, *shape, out)
        outs.append(out)
    assert outs[0].dtype == dtype
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 5, 7)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("pad_mode", [K.PAD_ZERO, K.PAD_REFLECT])
def test_gather_augment_normalise_is_augment_then_normalise(shape, dtype, pad_mode):
    """Each plane normalised by the task that augmented it: the bits of gather_augment followed by
    normalise, in out, and the augmented batch itself in raw."""
    rng = np.random.default_rng(int(np.prod(shape)))
    x, idx, sy, sx, flip = shape_inputs(rng, shape, dtype, 9, 3, 3)
    d = x.shape[1]
    mean = rng.uniform(50, 200, d).astype(np.float32)
    inv_std = (1 / rng.uniform(30, 80, d)).astype(np.float32)
    raw = np.full((9, d), 7, dtype)
    K.gather_augment(x, idx, sy, sx, flip, pad_mode, *shape, raw)
    two_pass = np.full((9, d), np.nan, np.float32)
    K.normalise(raw, mean, inv_std, two_pass)
    for (k_raw, k_out), _ in both("gather_augment_normalise", x, idx, sy, sx, flip, pad_mode, *shape, mean, inv_std,
                                  np.full((9, d), 7, dtype), np.full((9, d), np.nan, np.float32), outputs=[11, 12]):
        np.testing.assert_array_equal(k_raw, raw)
        np.testing.assert_array_equal(k_out, two_pass)
    for impl in (K, R):
        with pytest.raises(ValueError, match="same shape"):
            impl.gather_augment_normalise(x, idx, sy, sx, flip, pad_mode, *shape, mean, inv_std, raw,
                                          np.zeros((8, d), np.float32))
        with pytest.raises(ValueError, match="out one row per idx"):
            impl.gather_augment_normalise(x, idx[:4], sy, sx, flip, pad_mode, *shape, mean, inv_std, raw,
                                          two_pass)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_gather_augment_mirrored_rows_whatever_the_layout(dtype, order):
    """Mirrored rows of 8 pixels or more are copied 8 at a time, reversed in a register; the
    remainders, and images whose pixels are not adjacent in memory (a Fortran-ordered x), take the
    pixel-by-pixel copy. Every image mirrored, every shift up to the pad."""
    shape = (3, 32, 29)
    rng = np.random.default_rng(29)
    x, idx, sy, sx, _ = shape_inputs(rng, shape, dtype, 12, 4, 4)
    x = np.asarray(x, order=order)
    flip = np.ones(12, bool)
    outs = []
    for impl in (K, R):
        out = np.full((12, x.shape[1]), 7, dtype)
        impl.gather_augment(x, idx, sy, sx, flip, K.PAD_REFLECT, *shape, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    into_float = np.full((12, x.shape[1]), 7, np.float32)      # another dtype: cast as it is copied
    K.gather_augment(x, idx, sy, sx, flip, K.PAD_REFLECT, *shape, into_float)
    np.testing.assert_array_equal(into_float, outs[1].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_gather_augment_non_square_zero_pad_and_flip(dtype):
    shape = (2, 5, 7)
    rng = np.random.default_rng(5)
    x = (rng.integers(1, 256, (2, 70)) if dtype == np.uint8 else rng.uniform(1, 2, (2, 70))).astype(dtype)
    idx = np.array([0, 1, 0, 1], np.int64)      # no zero pixels in the source
    sy, sx = np.array([2, -1, 0, 6], np.int64), np.array([-3, 4, 8, 0], np.int64)
    flip = np.array([False, True, False, False])
    out = np.zeros((4, 70), dtype)
    K.gather_augment(x, idx, sy, sx, flip, K.PAD_ZERO, *shape, out)
    src, got = images(x, shape), images(out, shape)
    np.testing.assert_array_equal(got[0, :, :3, 3:], src[0, :, 2:, :4])
    assert not got[0, :, 3:].any() and not got[0, :, :, :3].any()
    shifted = np.zeros_like(src[1])
    shifted[:, 1:, :3] = src[1, :, :4, 4:]
    np.testing.assert_array_equal(got[1], shifted[:, :, ::-1])
    assert not got[2].any() and not got[3].any()     # shifted right off the image / down off it


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_gather_augment_non_square_reflect_matches_np_pad(dtype):
    shape = (2, 5, 7)
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (1, 70)).astype(dtype)
    padded = np.pad(images(x, shape)[0], ((0, 0), (4, 4), (6, 6)), mode="reflect")
    out = np.zeros((1, 70), dtype)
    for dy in range(-4, 5):
        for dx in range(-6, 7):
            for flip in (False, True):
                K.gather_augment(x, np.zeros(1, np.int64), np.array([dy]), np.array([dx]), np.array([flip]),
                                 K.PAD_REFLECT, *shape, out)
                crop = padded[:, 4 + dy:9 + dy, 6 + dx:13 + dx]
                np.testing.assert_array_equal(images(out, shape)[0], crop[:, :, ::-1] if flip else crop)


@pytest.mark.parametrize("impl", [K, R], ids=["kernels", "reference"])
def test_gather_augment_rejects_bad_shapes_and_reflect_shifts(impl):
    x, idx, one = np.zeros((2, 70), np.uint8), np.zeros(1, np.int64), np.ones(1, np.int64)
    out = np.zeros((1, 70), np.uint8)
    no_flip = np.zeros(1, bool)
    with pytest.raises(ValueError, match="channels"):
        impl.gather_augment(x, idx, idx, idx, no_flip, K.PAD_ZERO, 3, 5, 7, out)     # 105 != 70
    with pytest.raises(ValueError, match="channels"):
        impl.gather_augment(x, idx, idx, idx, no_flip, K.PAD_ZERO, 2, 5, 7, np.zeros((2, 70), np.uint8))
    with pytest.raises(ValueError, match="reflect"):
        impl.gather_augment(x, idx, 5 * one, idx, no_flip, K.PAD_REFLECT, 2, 5, 7, out)   # |shift_y| == height
    with pytest.raises(ValueError, match="reflect"):
        impl.gather_augment(x, idx, idx, -7 * one, no_flip, K.PAD_REFLECT, 2, 5, 7, out)  # |shift_x| == width
    impl.gather_augment(x, idx, 5 * one, -7 * one, no_flip, K.PAD_ZERO, 2, 5, 7, out)     # zero pad: any shift
    assert not out.any()


SIZED = {   # kernels compiled twice (kernels/config.sized_kernel): arguments, the indices of outputs
    "sgd_momentum_update": lambda rng, n: ((randn(rng, n, 33), randn(rng, n, 33), randn(rng, n, 33),
                                            np.float32(0.1), np.float32(0.9), np.float32(5e-4), True), [0, 2]),
    "adam_update": lambda rng, n: ((randn(rng, n, 33), randn(rng, n, 33), randn(rng, n, 33),
                                    np.abs(randn(rng, n, 33)), np.float32(1e-3), np.float32(0.9),
                                    np.float32(0.999), np.float32(1e-8), np.float32(0.01), False, 3), [0, 2, 3]),
    "softmax_xent_grad": lambda rng, n: ((randn(rng, n, 33) * np.float32(4), rng.integers(0, 33, n).astype(np.int64),
                                          0.1, np.zeros((n, 33), np.float32), np.zeros(n, np.float32)), [3, 4]),
    "bias_grad": lambda rng, n: ((randn(rng, n, 33), np.zeros(33, np.float32)), [1]),
}


@pytest.mark.parametrize("name", sorted(SIZED))
@pytest.mark.parametrize("rows", [3, 700])     # 99 and 23,100 elements: both sides of PARALLEL_MIN_WORK
def test_sized_kernels_serial_and_parallel_agree(name, rows):
    """The serial and the parallel build of a kernel compute the same, and the dispatcher picks
    by size, so small calls never open a parallel region."""
    from fastfcnn.kernels import config, linear
    fn = getattr(K, name, None) or getattr(linear, name)
    args, outs = SIZED[name](np.random.default_rng(rows), rows)
    got = {}
    for build in ("serial", "parallel"):
        a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
        getattr(fn, build)(*a)
        got[build] = [a[i] for i in outs]
    for s, p in zip(got["serial"], got["parallel"]):
        np.testing.assert_allclose(s, p, rtol=1e-6, atol=1e-6)   # vector and scalar code round alike but for fastmath
    picked = "parallel" if args[0].size >= config.PARALLEL_MIN_WORK else "serial"
    a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    fn(*a)
    for x, want in zip((a[i] for i in outs), got[picked]):
        np.testing.assert_array_equal(x, want)


def test_softmax_xent_grad_builds_return_the_same_statistics():
    rng = np.random.default_rng(0)
    logits, labels = randn(rng, 700, 33), rng.integers(0, 33, 700).astype(np.int64)
    stats = [build(logits, labels, 0.1, np.zeros_like(logits), np.zeros(700, np.float32))
             for build in (K.softmax_xent_grad.serial, K.softmax_xent_grad.parallel, R.softmax_xent_grad)]
    assert stats[0][1] == stats[1][1] == stats[2][1] == np.count_nonzero(logits.argmax(axis=1) == labels)
    assert stats[0][0] == pytest.approx(stats[1][0], rel=1e-12) and stats[0][0] == pytest.approx(stats[2][0], rel=1e-5)
