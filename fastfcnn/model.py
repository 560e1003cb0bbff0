"""The network's parameters and everything `evaluate` and `predict` need to use them, saved as one .npz."""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import read_npz, save_npz
from .network import aligned_copy, aligned_zeros

# 1: CIFAR-10 only (per-channel statistics of 3x32x32 images); 2: adds input_kind and image_shape.
FORMAT_VERSION = 2
CIFAR_SHAPE = (3, 32, 32)


@dataclass
class Model:
    """A fully connected net sizes[0] -> ... -> sizes[-1]; ReLU after every layer but the last.

    weights[l] is (sizes[l+1], sizes[l]) (out, in) and biases[l] is (sizes[l+1],), float32.
    image_shape (C, H, W) for a net on channel-planar uint8 images, whose mean and std (C,) are
    per-channel statistics in [0, 255] units; None for a net on feature vectors, whose mean and
    std (D,) are per-feature. Both are fitted on the training split.
    whiten (K, D) and whiten_bias (K,), when set, are a fixed linear map (ZCA or PCA whitening,
    fitted on the training split) from the D normalised input features to the K inputs of the
    first layer; then sizes[0] is K and n_inputs is D.
    """

    weights: list
    biases: list
    mean: np.ndarray
    std: np.ndarray
    class_names: list
    config: dict = field(default_factory=dict)
    whiten: np.ndarray | None = None
    whiten_bias: np.ndarray | None = None
    image_shape: tuple | None = CIFAR_SHAPE

    @property
    def sizes(self) -> list:
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def n_inputs(self) -> int:
        """Features per row the model reads (before any whitening)."""
        return self.sizes[0] if self.whiten is None else self.whiten.shape[1]

    @property
    def input_kind(self) -> str:
        return "features" if self.image_shape is None else "image"

    def input_transform(self) -> tuple:
        """Per-feature (mean, 1/std), float32 (n_inputs,): see feature_stats."""
        return feature_stats(self.mean, self.std, self.n_inputs)


def feature_stats(mean, std, d: int) -> tuple:
    """Per-feature (mean, 1/std), float32 (d,): per-channel statistics are repeated over the
    d / C pixels of each channel-planar plane; per-feature ones (length d) are used as they are."""
    per = d // len(mean)
    return (np.repeat(np.asarray(mean, np.float32), per),
            np.repeat((1 / np.asarray(std, np.float32)).astype(np.float32), per))


def init_model(sizes, mean, std, class_names, rng: np.random.Generator, config=None,
               image_shape=CIFAR_SHAPE) -> Model:
    """He-initialised weights (normal, std sqrt(2 / fan_in)) and zero biases."""
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        weights.append(aligned_copy(w))
        biases.append(aligned_zeros(fan_out))
    return Model(weights, biases, np.asarray(mean, np.float32), np.asarray(std, np.float32),
                 list(class_names), dict(config or {}), image_shape=None if image_shape is None else tuple(image_shape))


def model_arrays(model: Model) -> dict:
    """The arrays save_model writes (a checkpoint embeds the same)."""
    arrays = {f"W{l}": w for l, w in enumerate(model.weights)}
    arrays |= {f"b{l}": b for l, b in enumerate(model.biases)}
    arrays |= {
        "format_version": np.array(FORMAT_VERSION),
        "mean": model.mean,
        "std": model.std,
        "class_names": np.array(model.class_names),
        "config": np.array(json.dumps(model.config)),
        "input_kind": np.array(model.input_kind),
        "image_shape": np.array(model.image_shape or (), np.int64),
    }
    if model.whiten is not None:
        arrays |= {"whiten": model.whiten, "whiten_bias": model.whiten_bias}
    return arrays


def save_model(path: Path, model: Model) -> None:
    save_npz(path, model_arrays(model))


def load_model(path: Path) -> Model:
    """Load a model saved by save_model; any problem with the file is a UserError."""
    model = read_npz(path, "fastfcnn model", lambda z: model_from_arrays(z, path))
    check_model(model, path)
    return model


def model_from_arrays(z, path) -> Model:
    """The Model in the arrays `z` (an open .npz, or a dict) as model_arrays wrote them."""
    bad = f"not a valid fastfcnn model: {path}"
    keys = set(z.files if hasattr(z, "files") else z)
    version = int(z["format_version"]) if "format_version" in keys else None
    if version not in (1, FORMAT_VERSION):
        raise UserError(f"{bad} (format version {version}; this fastfcnn reads 1 and {FORMAT_VERSION})")
    missing = {"W0", "b0", "mean", "std", "class_names", "config"} - keys
    if missing:
        raise UserError(f"{bad} (missing {', '.join(sorted(missing))})")
    known = {"format_version", "mean", "std", "class_names", "config", "input_kind", "image_shape", "whiten",
             "whiten_bias"}
    extra = sorted(k for k in keys - known if not (k[:1] in "Wb" and k[1:].isdigit()))
    if extra:
        raise UserError(f"{bad} (unexpected array(s) {', '.join(extra)})")
    n_layers = sum(1 for k in keys if k.startswith("W") and k[1:].isdigit())
    layer_keys = {f"W{l}" for l in range(n_layers)} | {f"b{l}" for l in range(n_layers)}
    if not layer_keys <= keys or {k for k in keys if k[:1] in "Wb" and k[1:].isdigit()} != layer_keys:
        raise UserError(f"{bad} (layer arrays W0..W{n_layers - 1} and b0..b{n_layers - 1} do not match)")
    # C order whatever the file holds: the products' packing reads rows as contiguous vectors
    weights = [aligned_copy(np.asarray(z[f"W{l}"], np.float32)) for l in range(n_layers)]
    biases = [aligned_copy(np.asarray(z[f"b{l}"], np.float32)) for l in range(n_layers)]
    if version == 1:
        image_shape = CIFAR_SHAPE
    else:
        shape = tuple(int(s) for s in np.asarray(z["image_shape"]).reshape(-1))
        kind = str(z["input_kind"])
        if kind not in ("image", "features") or (kind == "image") != bool(shape) or (shape and len(shape) != 3):
            raise UserError(f"{bad} (input kind {kind!r} with image shape {shape})")
        image_shape = shape or None
    model = Model(weights, biases, np.asarray(z["mean"], np.float32), np.asarray(z["std"], np.float32),
                  [str(c) for c in np.asarray(z["class_names"]).reshape(-1)], json.loads(str(z["config"])),
                  image_shape=image_shape)
    if "whiten" in keys:
        model.whiten = aligned_copy(np.asarray(z["whiten"], np.float32))
        model.whiten_bias = np.asarray(z["whiten_bias"], np.float32)
    return model


def check_model(model: Model, path) -> None:
    bad = f"not a valid fastfcnn model: {path}"
    if not model.weights:
        raise UserError(f"{bad} (no layers)")
    if model.weights[0].ndim != 2:
        raise UserError(f"{bad} (W0 is {model.weights[0].ndim}-d, not a matrix)")
    prev = model.weights[0].shape[1]
    for l, (w, b) in enumerate(zip(model.weights, model.biases)):
        if w.ndim != 2 or w.shape[1] != prev or b.shape != (w.shape[0],):
            raise UserError(f"{bad} (layer shapes do not chain at layer {l}: W{l} {w.shape}, b{l} {b.shape})")
        prev = w.shape[0]
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise UserError(f"{bad} (layer {l} holds NaN or inf weights)")
    if model.whiten is not None and (model.whiten.ndim != 2 or model.whiten.shape[0] != model.sizes[0]
                                     or model.whiten_bias.shape != (model.sizes[0],)):
        raise UserError(f"{bad} (whitening map does not fit the first layer)")
    if model.image_shape is not None:
        c, h, w = model.image_shape
        if min(model.image_shape) < 1 or c * h * w != model.n_inputs or model.mean.shape != (c,):
            raise UserError(f"{bad} (image shape {model.image_shape} and normalisation statistics "
                            f"{model.mean.shape} do not fit {model.n_inputs} inputs)")
    elif model.mean.shape != (model.n_inputs,):
        raise UserError(f"{bad} (normalisation statistics {model.mean.shape} for {model.n_inputs} features)")
    if model.std.shape != model.mean.shape or not (np.isfinite(model.std).all() and (model.std > 0).all()
                                                     and np.isfinite(model.mean).all()):
        raise UserError(f"{bad} (normalisation statistics must be finite with std > 0)")
    if len(model.class_names) != model.sizes[-1]:
        raise UserError(f"{bad} ({len(model.class_names)} class names for {model.sizes[-1]} outputs)")
