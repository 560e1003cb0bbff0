"""End to end through the `fastfcnn` command on tiny synthetic data in the official layout."""
import json
import subprocess
import sys

import numpy as np
import pytest
from cifar_fixture import make_synthetic, write_cifar10
from typer.testing import CliRunner

from fastfcnn.cli import app
from fastfcnn.model import init_model, save_model

runner = CliRunner()
TRAIN = ["--hidden", "32", "--epochs", "4", "--batch-size", "32", "--val-size", "60", "--quiet"]


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(600, 200, seed=1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, synthetic):
    root = tmp_path_factory.mktemp("cifar_dir")
    write_cifar10(root, *synthetic)
    return root


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("layout", ["folder", "tarball"])
def test_train_then_evaluate_reproduces_test_accuracy(tmp_path, synthetic, layout):
    root = tmp_path / "data"
    write_cifar10(root, *synthetic, tarball=layout == "tarball")
    out = tmp_path / "run"
    result = run("train", "--data-dir", root, "--out", out, *TRAIN)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "metrics.json", "model.npz", "predictions.npz"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3, 4]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"):
        assert all(isinstance(r[key], float) for r in metrics["history"]), key
    assert metrics["config"]["hidden"] == [32]
    assert set(metrics["versions"]) >= {"fastfcnn", "numpy", "numba"}
    assert metrics["threads"] >= 1

    result = run("evaluate", out / "model.npz", "--data-dir", root, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["test_accuracy"] == metrics["test_accuracy"]


def test_train_prints_epoch_lines_and_test_accuracy(tmp_path, data_dir):
    result = run("train", "--data-dir", data_dir, "--out", tmp_path / "r", *TRAIN[:-1])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 4 and "val acc" in lines[0] and "train loss" in lines[0]
    assert "test accuracy" in result.output


def test_numpy_engine_trains_the_same_net(tmp_path, data_dir):
    accs = []
    for engine in ("numba", "numpy"):
        out = tmp_path / engine
        assert run("train", "--data-dir", data_dir, "--out", out, "--engine", engine, *TRAIN).exit_code == 0
        accs.append(json.loads((out / "metrics.json").read_text())["test_accuracy"])
    assert accs[0] == pytest.approx(accs[1], abs=0.02)


@pytest.mark.parametrize("args,message", [
    (["--hidden", "64,x"], "--hidden must be a comma-separated list"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--lr-schedule", "linear"], "--lr-schedule must be one of"),
    (["--engine", "torch"], "--engine must be one of"),
    (["--val-size", "600"], "--val-size 600 leaves no training rows"),
    (["--val-size", "1.5"], "--val-size must be a fraction below 1 or a whole count"),
    (["--lr", "inf"], "--lr must be a positive number"),
    (["--momentum", "nan"], "--momentum must be in [0, 1)"),
    (["--threads", "999"], "--threads must be between 1 and"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--optimizer", "rmsprop"], "--optimizer must be one of sgd, adam, adamw"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--crop-mode", "wrap"], "--crop-mode must be one of reflect, zero"),
    (["--crop-pad", "40"], "--crop-pad with reflect padding must be below the image side (32)"),
    (["--crop-pad", "300", "--crop-mode", "zero"], "--crop-pad must be between 0 and 255"),
    (["--config", "nowhere.json"], "cannot read config file nowhere.json"),
    (["--whiten", "pcaa"], "--whiten must be one of none, zca, pca"),
    (["--whiten", "pca", "--whiten-dims", "5000", "--val-size", "60"], "--whiten-dims must be at most 3072"),
    (["--patience", "3", "--val-size", "0"], "--patience needs a validation split"),
    (["--preset", "huge"], "--preset must be one of seed, wide"),
])
def test_bad_options(tmp_path, data_dir, args, message):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, *args)
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()


def test_missing_data_offline(tmp_path):
    result = run("train", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "r", "--no-download")
    assert result.exit_code == 1
    assert str(tmp_path / "nowhere") in result.output
    assert not (tmp_path / "r").exists()


def test_corrupt_archive(tmp_path, synthetic):
    root = tmp_path / "data"
    archive = write_cifar10(root, *synthetic, tarball=True)
    archive = archive if archive.is_file() else root / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = run("train", "--data-dir", root, "--out", tmp_path / "r", "--no-download")
    assert result.exit_code == 1
    assert "cifar-10-python.tar.gz" in result.output
    assert not (tmp_path / "r").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_truncated_batch(tmp_path, synthetic):
    root = tmp_path / "data"
    write_cifar10(root, *synthetic)
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    result = run("evaluate", tmp_path / "m.npz", "--data-dir", root)  # missing model first
    assert result.exit_code == 1 and "model file not found" in result.output
    result = run("train", "--data-dir", root, "--out", tmp_path / "r", "--no-download")
    assert result.exit_code == 1
    assert "data_batch_3" in result.output


def test_out_dir_not_writable(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("train", "--data-dir", data_dir, "--out", blocker / "run", *TRAIN)
    assert result.exit_code == 1
    assert "cannot write to output directory" in result.output


def test_divergence_writes_no_model_and_says_so(tmp_path, data_dir):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, "--lr", "1e6", "--warmup-epochs", "0", *TRAIN)
    assert result.exit_code == 1
    assert "diverged" in result.output and "lower --lr" in result.output
    assert not (out / "model.npz").exists()
    metrics = metrics_of(out)
    assert metrics["status"] == "diverged" and "diverged" in metrics["error"]


def test_evaluate_shape_mismatch(tmp_path, data_dir):
    model = init_model([12, 10], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [str(i) for i in range(10)],
                       np.random.default_rng(0), image_shape=(3, 2, 2))
    save_model(tmp_path / "small.npz", model)
    result = run("evaluate", tmp_path / "small.npz", "--data-dir", data_dir)
    assert result.exit_code == 1
    assert "the model takes images 3x2x2 (12 inputs) but the data holds images 3x32x32 (3072 inputs)" in result.output


def test_evaluate_corrupt_model(tmp_path, data_dir):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    result = run("evaluate", bad, "--data-dir", data_dir)
    assert result.exit_code == 1
    assert "not a readable fastfcnn model" in result.output


def test_installed_command_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastfcnn.cli", "evaluate", str(tmp_path / "none.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: fastfcnn model file not found")
    assert "Traceback" not in proc.stderr


def test_help_lists_every_option():
    result = run("train", "--help")
    for option in ("--hidden", "--epochs", "--batch-size", "--lr", "--momentum", "--weight-decay",
                   "--lr-schedule", "--warmup-epochs", "--engine", "--threads", "--seed", "--val-size",
                   "--out", "--quiet", "--data-dir"):
        assert option in result.output


def metrics_of(out):
    return json.loads((out / "metrics.json").read_text())


def evaluated(model_path, data_dir):
    result = run("evaluate", model_path, "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["test_accuracy"]


@pytest.mark.parametrize("recipe", [
    ["--nesterov"],
    ["--label-smoothing", "0.1"],
    ["--optimizer", "adam", "--lr", "0.002"],
    ["--optimizer", "adamw", "--lr", "0.002", "--weight-decay", "0.05", "--lr-schedule", "onecycle"],
    ["--lr-schedule", "step", "--dropout", "0.2"],
])
def test_recipes_end_to_end(tmp_path, data_dir, recipe):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, *TRAIN, *recipe)
    assert result.exit_code == 0, result.output
    metrics = metrics_of(out)
    assert metrics["test_accuracy"] >= 0.9
    options = dict(zip(recipe[::2], recipe[1::2]))
    assert metrics["config"]["nesterov"] == ("--nesterov" in recipe)
    if "--optimizer" in options:
        assert metrics["config"]["optimizer"] == options["--optimizer"]


@pytest.mark.parametrize("whiten", [["--whiten", "zca", "--whiten-eps", "10"], ["--whiten", "pca", "--whiten-dims", "50"]])
def test_whitened_model_evaluates_identically_after_reload(tmp_path, data_dir, whiten):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, *TRAIN, *whiten, "--epochs", "2")
    assert result.exit_code == 0, result.output
    metrics = metrics_of(out)
    assert metrics["test_accuracy"] >= 0.5   # whitening amplifies the pixel noise of these prototypes
    assert evaluated(out / "model.npz", data_dir) == metrics["test_accuracy"]
    with np.load(out / "model.npz") as z:
        assert z["whiten"].shape == ((3072, 3072) if whiten[1] == "zca" else (50, 3072))
        assert z["W0"].shape[1] == z["whiten"].shape[0]


def test_patience_writes_best_model(tmp_path, data_dir):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, "--hidden", "16", "--epochs", "30",
                 "--batch-size", "32", "--val-size", "60", "--patience", "2", "--lr-schedule", "constant",
                 "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["best.npz", "checkpoint.npz", "metrics.json", "model.npz",
                                                        "predictions.npz"]
    metrics = metrics_of(out)
    accs = [r["val_accuracy"] for r in metrics["history"]]
    assert metrics["best_epoch"] == metrics["best"]["epoch"] == 1 + accs.index(max(accs))
    assert metrics["best"]["val_accuracy"] == max(accs)
    assert len(accs) == 30 or len(accs) == metrics["best_epoch"] + 2   # stopped after 2 epochs without gain
    assert metrics["final"]["model"] == "model.npz" and metrics["final"]["epoch"] == len(accs)
    assert metrics["final"]["test_accuracy"] == metrics["test_accuracy"] == evaluated(out / "model.npz", data_dir)
    assert metrics["best"]["test_accuracy"] == evaluated(out / "best.npz", data_dir)
    assert "best validation accuracy" in result.output


def test_presets_expand_and_explicit_options_override(tmp_path, data_dir, monkeypatch):
    from dataclasses import asdict

    from fastfcnn import presets
    from fastfcnn.config import TrainConfig, resolve

    assert resolve(None, None, {"lr": None, "epochs": 3}) == TrainConfig(epochs=3)
    for name, expansion in presets.PRESETS.items():
        assert resolve(name, None, {"lr": None}) == TrainConfig(**expansion)
        assert resolve(name, None, {"lr": 0.123, "flip": False}).lr == 0.123
        assert resolve(name, None, {"flip": False}).flip is False
        # a config file's options sit between the preset and the explicit ones
        assert resolve(name, {"lr": 0.5, "epochs": 7}, {"lr": 0.25}) == TrainConfig(**{**expansion, "epochs": 7,
                                                                                         "lr": 0.25})
        assert set(expansion) <= set(asdict(TrainConfig()))
    assert presets.PRESETS["seed"]["hidden"] == [64, 64]
    # through the command, on a shrunk copy of the seed preset so it runs in a moment
    monkeypatch.setitem(presets.PRESETS, "seed", {**presets.PRESETS["seed"], "epochs": 2, "batch_size": 32})
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, "--preset", "seed", "--epochs", "3",
                 "--val-size", "60", "--quiet")
    assert result.exit_code == 0, result.output
    cfg = metrics_of(out)["config"]
    expected = {**presets.PRESETS["seed"], "epochs": 3}
    assert {k: cfg[k] for k in expected} == expected
    assert metrics_of(out)["preset"] == "seed"


def test_no_preset_keeps_the_defaults(tmp_path, data_dir):
    from dataclasses import asdict

    from fastfcnn.config import TrainConfig
    out = tmp_path / "run"
    assert run("train", "--data-dir", data_dir, "--out", out, "--epochs", "1", "--val-size", "60",
               "--quiet").exit_code == 0
    assert metrics_of(out)["config"] == asdict(TrainConfig(epochs=1, val_size=60))


def test_help_lists_presets_and_their_expansions():
    from fastfcnn.presets import describe
    text = " ".join(run("train", "--help").output.split())
    for line in describe().splitlines():
        assert line in text
    for option in ("--preset", "--optimizer", "--dropout", "--crop-pad", "--crop-mode", "--flip", "--whiten",
                   "--whiten-dims", "--whiten-eps", "--patience", "--nesterov", "--label-smoothing"):
        assert option in text


def test_flip_tta_is_reported_by_train_and_reproduced_by_evaluate(tmp_path, data_dir):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, *TRAIN, "--flip")
    assert result.exit_code == 0, result.output
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert 0.5 <= final["test_accuracy_flip_tta"] <= 1.0
    assert f"{100 * final['test_accuracy_flip_tta']:.2f}% with flip TTA" in result.output
    result = run("evaluate", out / "model.npz", "--data-dir", data_dir, "--json", "--flip-tta")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["flip_tta"] is True and got["test_accuracy"] == final["test_accuracy_flip_tta"]
    # Without --flip in training there is no mirror view to score.
    result = run("train", "--data-dir", data_dir, "--out", tmp_path / "plain", *TRAIN)
    final = json.loads((tmp_path / "plain" / "metrics.json").read_text())["final"]
    assert final["test_accuracy_flip_tta"] is None and "flip TTA" not in result.output


def test_flip_tta_of_the_best_model_with_patience(tmp_path, data_dir):
    out = tmp_path / "run"
    result = run("train", "--data-dir", data_dir, "--out", out, "--hidden", "16", "--epochs", "6",
                 "--batch-size", "32", "--val-size", "60", "--patience", "2", "--flip", "--quiet")
    assert result.exit_code == 0, result.output
    best = metrics_of(out)["best"]
    got = run("evaluate", out / "best.npz", "--data-dir", data_dir, "--json", "--flip-tta")
    assert json.loads(got.output)["test_accuracy"] == best["test_accuracy_flip_tta"]
    assert f"({100 * best['test_accuracy_flip_tta']:.2f}% with flip TTA); saved" in result.output
