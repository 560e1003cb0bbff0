"""Users' own data end to end: train -> evaluate -> predict through the CLI, for .npz images,
.npz feature vectors and image folders; and both engines on each kind of input."""
import json

import numpy as np
import pytest
from data_fixture import write_folder, write_image
from typer.testing import CliRunner

from fastfcnn.cli import app
from fastfcnn.config import TrainConfig
from fastfcnn.data import from_arrays, load_data
from fastfcnn.train import Trainer

runner = CliRunner()
CLASSES = ["cat", "dog", "eel"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def prototypes(n, shape, noise_seed, noise=24.0):
    """uint8 images (n, *shape): one fixed random prototype per class plus noise; string labels."""
    protos = np.random.default_rng(1).integers(0, 256, (len(CLASSES), *shape)).astype(np.float64)
    y = np.arange(n) % len(CLASSES)
    noisy = protos[y] + np.random.default_rng(noise_seed).normal(0, noise, (n, *shape))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), np.array(CLASSES)[y]


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory):
    """Non-square grayscale images as (N, H, W) with string labels."""
    path = tmp_path_factory.mktemp("npz") / "faces.npz"
    x, y = prototypes(360, (6, 10), noise_seed=2)
    xt, yt = prototypes(90, (6, 10), noise_seed=3)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


@pytest.fixture(scope="module")
def feature_npz(tmp_path_factory):
    """Tabular data: float64 features on very different scales, integer labels 10, 20, 30."""
    rng = np.random.default_rng(4)
    centers = rng.normal(0, 1, (3, 7)) * np.array([1, 10, 100, 1e3, 0.01, 1, 5])

    def sample(n):
        y = np.arange(n) % 3
        return centers[y] + rng.normal(0, 0.3, (n, 7)) * np.abs(centers).mean(axis=0), (y + 1) * 10

    path = tmp_path_factory.mktemp("tab") / "tab.npz"
    x, y = sample(300)
    xt, yt = sample(90)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """RGB PNG images, 5x7, in train/<class>/ and test/<class>/."""
    rng = np.random.default_rng(6)
    protos = rng.integers(0, 256, (3, 5, 7, 3)).astype(np.float64)

    def images(k, n):
        return [np.clip(np.rint(protos[k] + rng.normal(0, 20, (5, 7, 3))), 0, 255).astype(np.uint8) for _ in range(n)]

    root = tmp_path_factory.mktemp("folder")
    return write_folder(root, {"train": {c: images(k, 40) for k, c in enumerate(CLASSES)},
                               "test": {c: images(k, 9) for k, c in enumerate(CLASSES)}})


TRAIN = ["--hidden", "24", "--epochs", "6", "--batch-size", "16", "--val-size", "0.1", "--threads", "1", "--quiet"]


def predicted(model, *inputs, extra=()):
    result = run("predict", model, *inputs, "--json", "--top-k", "2", *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("kind", ["image_npz", "feature_npz", "image_folder"])
def test_train_evaluate_predict_round_trip(tmp_path, request, kind):
    data = request.getfixturevalue(kind)
    out = tmp_path / "run"
    extra = ["--flip", "--crop-pad", "1"] if kind == "image_folder" else []
    result = run("train", "--data", data, "--out", out, *TRAIN, *extra)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, metrics["history"]
    expected_kind = "features" if kind == "feature_npz" else "image"
    assert metrics["data"]["kind"] == expected_kind
    names = ["10", "20", "30"] if kind == "feature_npz" else CLASSES
    assert metrics["data"]["classes"] == names

    ev = run("evaluate", out / "model.npz", "--data", data, "--json")
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output)["test_accuracy"] == metrics["test_accuracy"]

    # predict on the test rows: its top-1 agrees with evaluate's accuracy exactly
    ds = load_data(data)
    if kind == "image_folder":
        files = sorted((data / "test").glob("*/*.png"))
        preds = predicted(out / "model.npz", *files)
        truth = [f.parent.name for f in files]
    else:
        x_path = tmp_path / "x.npz"
        with np.load(data) as z:
            np.savez(x_path, x=z["x_test"])
            truth = [str(v) for v in z["y_test"]]
        preds = predicted(out / "model.npz", x_path)
        assert preds[0]["input"] == f"{x_path}[0]"
    assert len(preds) == len(ds.y_test)
    for p in preds:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 2 and probs[0] >= probs[1] and 0 < sum(probs) <= 1 + 1e-6
    accuracy = np.mean([p["top"][0]["class"] == t for p, t in zip(preds, truth)])
    assert accuracy == metrics["test_accuracy"]


def test_predict_errors(tmp_path, image_folder):
    out = tmp_path / "run"
    assert run("train", "--data", image_folder, "--out", out, "--hidden", "4", "--epochs", "1", "--quiet",
               "--val-size", "0").exit_code == 0
    big = write_image(tmp_path / "big.png", np.zeros((9, 11, 3), np.uint8))
    result = run("predict", out / "model.npz", big)
    assert result.exit_code == 1 and "--resize" in result.output
    assert run("predict", out / "model.npz", big, "--resize").exit_code == 0
    gray = write_image(tmp_path / "gray.png", np.zeros((5, 7), np.uint8))
    result = run("predict", out / "model.npz", gray)
    assert result.exit_code == 1 and "channel" in result.output
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 5, 7, 1), np.uint8))
    result = run("predict", out / "model.npz", tmp_path / "wrong.npz")
    assert result.exit_code == 1 and "5x7 images with 3 channel(s)" in result.output
    np.savez(tmp_path / "nox.npz", y=np.zeros(2))
    result = run("predict", out / "model.npz", tmp_path / "nox.npz")
    assert result.exit_code == 1 and "no array named x" in result.output
    result = run("predict", out / "model.npz", tmp_path / "missing.png")
    assert result.exit_code == 1 and "input not found" in result.output
    result = run("predict", out / "model.npz", big, "--top-k", "0")
    assert result.exit_code == 1 and "--top-k" in result.output


def test_text_output_lists_top_classes(tmp_path, image_folder):
    out = tmp_path / "run"
    assert run("train", "--data", image_folder, "--out", out, "--hidden", "8", "--epochs", "4", "--quiet",
               "--batch-size", "16").exit_code == 0
    file = sorted((image_folder / "test" / "dog").glob("*.png"))[0]
    result = run("predict", out / "model.npz", file)
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith(str(file)) and line.split("\t")[1].split()[0] in CLASSES and len(line.split()) == 7


def test_augmentation_is_refused_on_feature_vectors(tmp_path, feature_npz):
    result = run("train", "--data", feature_npz, "--out", tmp_path / "r", "--flip")
    assert result.exit_code == 1 and "feature vectors" in result.output
    assert not (tmp_path / "r").exists()


def test_mixed_sizes_need_image_size(tmp_path):
    root = write_folder(tmp_path / "mixed", {"train": {"a": [np.zeros((4, 4, 3), np.uint8)],
                                                       "b": [np.zeros((6, 4, 3), np.uint8)]},
                                             "test": {"a": [np.zeros((4, 4, 3), np.uint8)]}})
    result = run("train", "--data", root, "--out", tmp_path / "r", "--epochs", "1", "--val-size", "0")
    assert result.exit_code == 1 and "--image-size" in result.output
    result = run("train", "--data", root, "--out", tmp_path / "r", "--epochs", "1", "--val-size", "0",
                 "--image-size", "5x5", "--batch-size", "1", "--hidden", "2", "--quiet")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "r" / "model.npz") as z:
        assert list(z["image_shape"]) == [3, 5, 5]
    result = run("train", "--data", root, "--out", tmp_path / "r2", "--image-size", "5by5")
    assert result.exit_code == 1 and "HEIGHTxWIDTH" in result.output


def kinds():
    rng = np.random.default_rng(8)
    y = np.arange(90) % 3
    return {
        "gray 6x10": from_arrays(rng.integers(0, 256, (90, 6, 10), dtype=np.uint8), y),
        "rgba 5x7x4": from_arrays(rng.integers(0, 256, (90, 5, 7, 4), dtype=np.uint8), y),
        "features": from_arrays(rng.normal(0, 3, (90, 13)), y),
    }


@pytest.mark.parametrize("kind", ["gray 6x10", "rgba 5x7x4", "features"])
def test_engines_agree_on_first_steps_for_each_kind(kind):
    data = kinds()[kind]
    aug = {} if kind == "features" else {"crop_pad": 2, "flip": True}
    losses = {}
    for engine in ("numba", "numpy"):
        t = Trainer(TrainConfig(hidden=[9, 5], batch_size=17, engine=engine, val_size=10.0, seed=3, **aug), data)
        order = t.rng.permutation(t.train_idx)
        losses[engine] = [t.step(order[s * 17:(s + 1) * 17], 0.05)[0] / 17 for s in range(4)]
    np.testing.assert_allclose(losses["numba"], losses["numpy"], rtol=1e-4)
