"""fastfcnn: fully connected networks on CPU (CIFAR-10, arrays, image folders, tabular features), trained with hand-written parallel Numba kernels."""

__version__ = "0.1.0"

__all__ = ["FCNNClassifier", "__version__"]


def __getattr__(name):
    # Imported on first use, so `import fastfcnn` loads neither scikit-learn nor Numba.
    if name == "FCNNClassifier":
        from .estimator import FCNNClassifier
        return FCNNClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
