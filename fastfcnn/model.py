"""The network's parameters and everything `evaluate` needs to use them, saved as one .npz."""
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import save_npz

FORMAT_VERSION = 1
CHANNELS = 3


@dataclass
class Model:
    """A fully connected net sizes[0] -> ... -> sizes[-1]; ReLU after every layer but the last.

    weights[l] is (sizes[l+1], sizes[l]) (out, in) and biases[l] is (sizes[l+1],), float32.
    mean and std are per-channel input statistics in [0, 255] units, fitted on the training split.
    whiten (K, D) and whiten_bias (K,), when set, are a fixed linear map (ZCA or PCA whitening,
    fitted on the training split) from the D normalised image features to the K inputs of the
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

    @property
    def sizes(self) -> list:
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def n_inputs(self) -> int:
        """Features per image the model reads (before any whitening)."""
        return self.sizes[0] if self.whiten is None else self.whiten.shape[1]

    def input_transform(self) -> tuple:
        """Per-feature (mean, 1/std), float32 (n_inputs,): see feature_stats."""
        return feature_stats(self.mean, self.std, self.n_inputs)


def feature_stats(mean, std, d: int) -> tuple:
    """Per-feature (mean, 1/std), float32 (d,), expanding per-channel stats over the
    channel-planar CIFAR layout (R plane, then G, then B)."""
    per = d // CHANNELS
    return (np.repeat(np.asarray(mean, np.float32), per),
            np.repeat((1 / np.asarray(std, np.float32)).astype(np.float32), per))


def init_model(sizes, mean, std, class_names, rng: np.random.Generator, config=None) -> Model:
    """He-initialised weights (normal, std sqrt(2 / fan_in)) and zero biases."""
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        weights.append(w)
        biases.append(np.zeros(fan_out, np.float32))
    return Model(weights, biases, np.asarray(mean, np.float32), np.asarray(std, np.float32),
                 list(class_names), dict(config or {}))


def save_model(path: Path, model: Model) -> None:
    arrays = {f"W{l}": w for l, w in enumerate(model.weights)}
    arrays |= {f"b{l}": b for l, b in enumerate(model.biases)}
    arrays |= {
        "format_version": np.array(FORMAT_VERSION),
        "mean": model.mean,
        "std": model.std,
        "class_names": np.array(model.class_names),
        "config": np.array(json.dumps(model.config)),
    }
    if model.whiten is not None:
        arrays |= {"whiten": model.whiten, "whiten_bias": model.whiten_bias}
    save_npz(path, arrays)


def load_model(path: Path) -> Model:
    """Load a model saved by save_model; any problem with the file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            n_layers = sum(1 for k in z.files if k.startswith("W"))
            weights = [z[f"W{l}"].astype(np.float32) for l in range(n_layers)]
            biases = [z[f"b{l}"].astype(np.float32) for l in range(n_layers)]
            model = Model(weights, biases, z["mean"].astype(np.float32), z["std"].astype(np.float32),
                          [str(c) for c in z["class_names"]], json.loads(str(z["config"])))
            if "whiten" in z.files:
                model.whiten = z["whiten"].astype(np.float32)
                model.whiten_bias = z["whiten_bias"].astype(np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"not a readable fastfcnn model: {path} ({e})") from None
    _check(model, path)
    return model


def _check(model: Model, path: Path) -> None:
    bad = f"not a valid fastfcnn model: {path}"
    if not model.weights:
        raise UserError(f"{bad} (no layers)")
    prev = model.weights[0].shape[1]
    for w, b in zip(model.weights, model.biases):
        if w.ndim != 2 or w.shape[1] != prev or b.shape != (w.shape[0],):
            raise UserError(f"{bad} (layer shapes do not chain)")
        prev = w.shape[0]
    if model.whiten is not None and (model.whiten.ndim != 2 or model.whiten.shape[0] != model.sizes[0]
                                     or model.whiten_bias.shape != (model.sizes[0],)):
        raise UserError(f"{bad} (whitening map does not fit the first layer)")
    if model.mean.shape != (CHANNELS,) or model.std.shape != (CHANNELS,) or model.n_inputs % CHANNELS:
        raise UserError(f"{bad} (normalisation statistics)")
    if len(model.class_names) != model.sizes[-1]:
        raise UserError(f"{bad} ({len(model.class_names)} class names for {model.sizes[-1]} outputs)")
