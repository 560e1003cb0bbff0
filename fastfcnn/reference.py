"""Pure-NumPy twins of every kernel in kernels/: same names, same arguments, same outputs.

This module is the oracle the tests hold the Numba kernels to and the baseline the benchmarks
measure them against. It favours the obvious NumPy expression over speed; workspace arguments
the NumPy version does not need are accepted and left untouched.
"""
import numpy as np

PLAIN, BIAS, BIAS_RELU, MASK = 0, 1, 2, 3


def gemm_nt(a, b, out, bias, mask, mode):
    np.matmul(a, b.T, out=out)
    if mode == MASK:
        out *= mask > 0
    elif mode in (BIAS, BIAS_RELU):
        out += bias
        if mode == BIAS_RELU:
            np.maximum(out, 0, out=out)


def gemm_op(a, trans_a, b, trans_b, out, bias, mask, mode, pack):
    gemm_nt(a.T if trans_a else a, b if trans_b else b.T, out, bias, mask, mode)


def pack_workspace(a_floats: int = 0) -> np.ndarray:
    return np.empty(0, np.float32)   # NumPy's BLAS packs for itself


def packed_a_floats(m: int, k: int) -> int:
    return 0                         # nothing to pack: pack_workspace ignores its size


def packed_b_floats(k: int) -> int:
    return 0


def normalise(xb, mean, inv_std, x):
    np.subtract(xb, mean, out=x, dtype=np.float32)
    x *= inv_std


def input_linear_forward(xb, mean, inv_std, w, b, relu, x, out, pack):
    normalise(xb, mean, inv_std, x)
    linear_forward(x, w, b, relu, out, pack)


def linear_forward(x, w, b, relu, out, pack):
    gemm_nt(x, w, out, b, out, BIAS_RELU if relu else BIAS)


def linear_grad_params(dy, x, dw, db, pack):
    np.matmul(dy.T, x, out=dw)
    np.sum(dy, axis=0, out=db)


def linear_grad_input(dy, w, x, dx, pack):
    np.matmul(dy, w, out=dx)
    dx *= x > 0


def softmax_xent_grad(logits, labels, smoothing, dlogits, row_loss):
    n, c = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    z = e.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(z)
    target = np.full((n, c), np.float32(smoothing) / c, dtype=np.float32)
    target[np.arange(n), labels] += np.float32(1 - smoothing)
    np.multiply(e / z - target, np.float32(1 / n), out=dlogits)
    np.sum(-target * log_p, axis=1, out=row_loss)
    return float(row_loss.sum(dtype=np.float64)), int(np.count_nonzero(np.argmax(logits, axis=1) == labels))


def softmax(logits, probs):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.divide(e, e.sum(axis=1, keepdims=True), out=probs)


def sgd_momentum_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    lr, momentum, weight_decay = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    g = grad + weight_decay * param
    velocity *= momentum
    velocity += g
    param -= lr * (g + momentum * velocity if nesterov else velocity)


def gather_batch(x, idx, out):
    np.take(x, idx, axis=0, out=out)


def gather_normalise(x, idx, mean, inv_std, out):
    normalise(x[idx], mean, inv_std, out)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    f = np.float32
    if decoupled:
        param *= f(1) - f(lr) * f(weight_decay)
        g = grad
    else:
        g = grad + f(weight_decay) * param
    m *= f(beta1)
    m += (f(1) - f(beta1)) * g
    v *= f(beta2)
    v += (f(1) - f(beta2)) * g * g
    m_hat = m / f(1 - beta1 ** step)
    v_hat = v / f(1 - beta2 ** step)
    param -= f(lr) * m_hat / (np.sqrt(v_hat) + f(eps))


def dropout(x, u, p):
    x *= (u >= np.float32(p)) * (np.float32(1) / (np.float32(1) - np.float32(p)))


PAD_ZERO, PAD_REFLECT = 0, 1


def gather_augment(x, idx, shift_y, shift_x, flip, pad_mode, channels, height, width, out):
    if x.shape[1] != channels * height * width or out.shape[1] != x.shape[1] or out.shape[0] != len(idx):
        raise ValueError("gather_augment: x and out need channels*height*width columns, out one row per idx")
    reflect = pad_mode == PAD_REFLECT
    if reflect and (np.any(np.abs(shift_y) >= height) or np.any(np.abs(shift_x) >= width)):
        raise ValueError("gather_augment: reflect padding needs |shift_y| < height, |shift_x| < width")
    for i in range(len(idx)):
        img = x[idx[i]].reshape(channels, height, width)
        py, px = abs(int(shift_y[i])), abs(int(shift_x[i]))
        padded = np.pad(img, ((0, 0), (py, py), (px, px)), mode="reflect" if reflect else "constant")
        y0, x0 = py + shift_y[i], px + shift_x[i]
        crop = padded[:, y0 : y0 + height, x0 : x0 + width]
        out[i] = (crop[:, :, ::-1] if flip[i] else crop).reshape(-1)


def gather_augment_normalise(x, idx, shift_y, shift_x, flip, pad_mode, channels, height, width, mean, inv_std,
                             raw, out):
    if out.shape != raw.shape:
        raise ValueError("gather_augment_normalise: raw and out must have the same shape")
    gather_augment(x, idx, shift_y, shift_x, flip, pad_mode, channels, height, width, raw)
    normalise(raw, mean, inv_std, out)
