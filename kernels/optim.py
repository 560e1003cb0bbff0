"""Optimizer updates, in place, one pass over each parameter."""
import numpy as np
from numba import prange

from .config import kernel


@kernel
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
