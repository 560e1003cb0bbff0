"""Hand-written parallel Numba kernels; fastfcnn/reference.py holds the NumPy twin of each."""
from .gather import gather_batch
from .linear import input_linear_forward, linear_forward, linear_grad_input, linear_grad_params
from .loss import count_correct, softmax_xent_grad
from .matmul import gemm_nt, transpose
from .optim import sgd_momentum_update

__all__ = [
    "gather_batch",
    "input_linear_forward",
    "linear_forward",
    "linear_grad_params",
    "linear_grad_input",
    "softmax_xent_grad",
    "count_correct",
    "sgd_momentum_update",
    "gemm_nt",
    "transpose",
]
