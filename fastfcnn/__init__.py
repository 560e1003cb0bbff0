"""fastfcnn: fully connected networks on CIFAR-10, trained with hand-written parallel Numba kernels."""

__version__ = "0.1.0"
