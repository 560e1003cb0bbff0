"""Optimizer updates, in place, one pass over each parameter."""
import numpy as np
from numba import prange

from .config import sized_kernel


@sized_kernel(lambda param, *rest: param.size)
def sgd_momentum_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with momentum and L2 weight decay, in place; param, grad, velocity share one shape.

    g = grad + weight_decay * param;  velocity = momentum * velocity + g;
    param -= lr * (g + momentum * velocity if nesterov else velocity)
    """
    p = param.reshape(-1)
    g_ = grad.reshape(-1)
    v = velocity.reshape(-1)
    lr32 = np.float32(lr)
    mu = np.float32(momentum)
    wd = np.float32(weight_decay)
    for i in prange(p.shape[0]):
        g = g_[i] + wd * p[i]
        vi = mu * v[i] + g
        v[i] = vi
        if nesterov:
            p[i] -= lr32 * (g + mu * vi)
        else:
            p[i] -= lr32 * vi


@sized_kernel(lambda param, *rest: param.size)
def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """Adam with bias correction, fused into one pass, in place; param, grad, m, v share one shape.

    step is the 1-based update count. If decoupled (AdamW), param -= lr * weight_decay * param
    before the Adam step and the gradient is left alone; otherwise weight_decay is L2 added to
    the gradient (classic Adam). Then m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    param -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps).
    """
    p = param.reshape(-1)
    g_ = grad.reshape(-1)
    m_ = m.reshape(-1)
    v_ = v.reshape(-1)
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    c1 = np.float32(1) - b1
    c2 = np.float32(1) - b2
    eps32 = np.float32(eps)
    step_size = np.float32(lr / (1.0 - float(beta1) ** step))
    inv_sqrt_bc2 = np.float32(1.0 / np.sqrt(1.0 - float(beta2) ** step))
    wd = np.float32(weight_decay)
    shrink = np.float32(1) - np.float32(lr) * wd if decoupled else np.float32(1)
    l2 = np.float32(0) if decoupled else wd
    for i in prange(p.shape[0]):
        pi = p[i] * shrink
        g = g_[i] + l2 * p[i]
        mi = b1 * m_[i] + c1 * g
        vi = b2 * v_[i] + c2 * g * g
        m_[i] = mi
        v_[i] = vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps32)
