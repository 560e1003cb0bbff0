"""The one declaration of training options, and everything derived from it."""
import json
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
from cifar_fixture import make_synthetic, write_cifar10
from typer.testing import CliRunner

from fastfcnn.cli import app
from fastfcnn.config import TrainConfig, defaults, flag, read_config_file, resolve
from fastfcnn.errors import UserError

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_every_option_is_declared_with_help_and_a_check():
    for f in fields(TrainConfig):
        assert f.metadata["help"].endswith((".", ")")), f.name
        assert f.type == "bool" or f.metadata["check"] is not None, f"{f.name} has no check"
    assert TrainConfig().to_dict() == defaults()
    TrainConfig().check()


def test_every_option_is_a_train_flag_and_in_the_readme():
    text = " ".join(run("train", "--help").output.split())
    readme = README.read_text()
    for f in fields(TrainConfig):
        assert flag(f.name) in text, f.name
        assert f"`{flag(f.name)}" in readme, f"README's option table lacks {flag(f.name)}"


@pytest.mark.parametrize("name,value,message", [
    ("epochs", 0, "--epochs must be at least 1"),
    ("lr", float("nan"), "--lr must be a positive number"),
    ("beta2", 1.0, "--beta2 must be in [0, 1)"),
    ("adam_eps", 0.0, "--adam-eps must be > 0"),
    ("hidden", [64, 0], "--hidden must be positive integers"),
    ("optimizer", "lbfgs", "--optimizer must be one of sgd, adam, adamw"),
    ("epochs", 2.5, "--epochs must be a int"),
    ("flip", "yes", "--flip must be a bool"),
    ("weight_decay", float("inf"), "--weight-decay must be >= 0"),
])
def test_bad_values_name_the_option(name, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{name: value}).check()


def test_config_file_keys_are_checked(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.1, "epochz": 3}))
    with pytest.raises(UserError, match="unknown option.*epochz"):
        read_config_file(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_config_file(path)
    path.write_text(json.dumps({"lr": 1, "warmup_epochs": 0, "hidden": [8], "epochs": 3.0}))
    cfg = resolve(None, read_config_file(path), {})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.hidden == [8]
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    path.write_text(json.dumps({"epochs": 2.5}))
    with pytest.raises(UserError, match="--epochs must be a int, got 2.5"):
        resolve(None, read_config_file(path), {})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, *make_synthetic(300, 100, seed=4))
    return root


def test_metrics_json_is_a_config_that_repeats_the_run(tmp_path, data_dir):
    first, again = tmp_path / "first", tmp_path / "again"
    args = ["--hidden", "16,8", "--epochs", "2", "--batch-size", "32", "--val-size", "0.2", "--optimizer", "adam",
            "--lr", "0.003", "--beta1", "0.8", "--beta2", "0.99", "--adam-eps", "1e-6", "--seed", "3",
            "--threads", "1", "--quiet"]
    assert run("train", "--data-dir", data_dir, "--out", first, *args).exit_code == 0
    cfg = json.loads((first / "metrics.json").read_text())["config"]
    assert (cfg["beta1"], cfg["beta2"], cfg["adam_eps"], cfg["val_size"]) == (0.8, 0.99, 1e-6, 0.2)
    result = run("train", "--data-dir", data_dir, "--out", again, "--config", first / "metrics.json",
                 "--threads", "1", "--quiet")
    assert result.exit_code == 0, result.output
    with np.load(first / "model.npz") as a, np.load(again / "model.npz") as b:
        for key in ("W0", "W1", "W2", "b0", "b2"):
            np.testing.assert_array_equal(a[key], b[key])
    # an explicit option overrides the file
    assert run("train", "--data-dir", data_dir, "--out", tmp_path / "third", "--config", first / "metrics.json",
               "--epochs", "1", "--quiet").exit_code == 0
    assert json.loads((tmp_path / "third" / "metrics.json").read_text())["config"]["epochs"] == 1


def test_numpy_engine_never_imports_numba(tmp_path):
    script = f"""
import sys
import numpy as np
from fastfcnn.config import TrainConfig
from fastfcnn.data import from_arrays
from fastfcnn.fit import fit
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (60, 2, 3, 3), dtype=np.uint8)
y = np.arange(60) % 3
res = fit(TrainConfig(hidden=[4], epochs=1, batch_size=16, engine="numpy", flip=True, crop_pad=1),
          from_arrays(x, y, x[:9], y[:9]), out_dir={str(tmp_path / 'run')!r})
assert res.metrics["test_accuracy"] is not None
bad = sorted(m for m in sys.modules if m.startswith(("numba", "llvmlite", "fastfcnn.kernels")))
print("IMPORTED", bad)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout


def test_defaults_match_the_readme_table():
    readme = README.read_text()
    d = defaults()
    for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "beta1", "beta2"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{flag(name)}"))
        assert str(d[name]) in row or f"{d[name]:g}" in row, row
    assert asdict(TrainConfig()) == d
