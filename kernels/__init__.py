"""Hand-written parallel Numba kernels; fastfcnn/reference.py holds the NumPy twin of each."""
from .dropout import dropout
from .gather import PAD_REFLECT, PAD_ZERO, gather_augment, gather_augment_normalise, gather_batch, gather_normalise
from .linear import input_linear_forward, linear_forward, linear_grad_input, linear_grad_params, normalise
from .loss import softmax, softmax_xent_grad
from .matmul import gemm_nt, gemm_op, pack_workspace, packed_a_floats, packed_b_floats
from .optim import adam_update, sgd_momentum_update

__all__ = [
    "gather_batch",
    "gather_augment",
    "gather_normalise",
    "gather_augment_normalise",
    "normalise",
    "input_linear_forward",
    "linear_forward",
    "linear_grad_params",
    "linear_grad_input",
    "softmax_xent_grad",
    "softmax",
    "sgd_momentum_update",
    "adam_update",
    "dropout",
    "gemm_nt",
    "gemm_op",
    "pack_workspace",
    "packed_a_floats",
    "packed_b_floats",
]
