"""Durable runs: checkpoints every epoch, exact resume, signals, refusals and failed writes."""
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from fastfcnn import fit as fit_module
from fastfcnn.checkpoint import CHECKPOINT, load_checkpoint
from fastfcnn.cli import app
from fastfcnn.errors import UserError
from fastfcnn.fit import StopOnSignal

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """3 classes of 8x8x3 uint8 images: enough steps per epoch to interrupt one part way."""
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.float64)

    def sample(n):
        y = np.arange(n) % 3
        return np.clip(protos[y] + rng.normal(0, 40, (n, 8, 8, 3)), 0, 255).astype(np.uint8), y

    path = tmp_path_factory.mktemp("data") / "d.npz"
    x, y = sample(3000)
    xt, yt = sample(300)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


ARGS = ["--hidden", "512,64", "--epochs", "3", "--batch-size", "4", "--val-size", "0.05", "--threads", "1",
        "--flip", "--crop-pad", "1", "--dropout", "0.1", "--patience", "5", "--quiet"]


def weights(path):
    with np.load(path) as z:
        return {k: z[k].copy() for k in z.files if k[0] in "Wb"}


def assert_same_run(a, b):
    wa, wb = weights(a / "model.npz"), weights(b / "model.npz")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ha, hb = (json.loads((d / "metrics.json").read_text())["history"] for d in (a, b))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]   # noqa: E731
    assert strip(ha) == strip(hb)


@pytest.fixture(scope="module")
def reference_runs(npz, tmp_path_factory):
    """An uninterrupted run per engine, the baseline for every resumed one."""
    out = {}
    for engine in ("numba", "numpy"):
        d = tmp_path_factory.mktemp(f"ref-{engine}") / "run"
        result = run("train", "--data", npz, "--out", d, "--engine", engine, *ARGS)
        assert result.exit_code == 0, result.output
        out[engine] = d
    return out


@pytest.mark.parametrize("engine,sig,code", [("numba", signal.SIGINT, 130), ("numba", signal.SIGTERM, 143),
                                             ("numpy", signal.SIGINT, 130)])
def test_interrupted_subprocess_resumes_bit_identically(tmp_path, npz, reference_runs, engine, sig, code):
    d = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastfcnn.cli", "train", "--data", str(npz), "--out", str(d), "--engine", engine,
           *ARGS]
    for attempt in range(5):
        shutil.rmtree(d, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:       # wait for epoch 1's checkpoint
            m = d / "metrics.json"
            if m.exists() and json.loads(m.read_text())["history"]:
                break
            time.sleep(0.005)
        # Signal at once, so that the signal lands inside epoch 2 (about 700 steps). Now and then it
        # lands before epoch 2's first step (the child still syncing the folder after the rename this
        # poll saw): a clean stop too, at step 0, but not the mid-epoch one this test is for; try again.
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
        assert "checkpoint saved" in err and f"fastfcnn train --resume {d}" in err and "Traceback" not in err
        ckpt = load_checkpoint(d / CHECKPOINT)
        if ckpt["state"]["pos"] > 0:
            break
        assert ckpt["state"]["epoch"] == 1
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["pos"] > 0 and ckpt["order"] is not None  # mid-epoch
    assert json.loads((d / "metrics.json").read_text())["status"] == "interrupted"
    assert not (d / "model.npz").exists()

    result = run("train", "--resume", d)          # the data and options come from the checkpoint
    assert result.exit_code == 0, result.output
    assert f"resuming {d} at epoch 2, step {ckpt['state']['pos'] + 1}" in result.output
    assert_same_run(d, reference_runs[engine])


def test_two_runs_with_the_same_seed_are_identical(tmp_path, npz, reference_runs):
    d = tmp_path / "again"
    assert run("train", "--data", npz, "--out", d, *ARGS).exit_code == 0
    assert_same_run(d, reference_runs["numba"])


def test_a_folder_with_a_run_is_not_overwritten(tmp_path, npz):
    d = tmp_path / "run"
    small = ["--hidden", "4", "--epochs", "1", "--quiet"]
    assert run("train", "--data", npz, "--out", d, *small, "--patience", "1").exit_code == 0
    assert (d / "best.npz").exists()
    before = (d / "model.npz").read_bytes()
    result = run("train", "--data", npz, "--out", d, *small)
    assert result.exit_code == 1 and "--resume" in result.output and "--force" in result.output
    assert (d / "model.npz").read_bytes() == before
    (d / ".model.npz.abc.tmp").write_bytes(b"left by a killed save")
    result = run("train", "--data", npz, "--out", d, *small, "--force", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert not (d / "best.npz").exists(), "a stale best.npz beside a new model.npz"
    assert not (d / ".model.npz.abc.tmp").exists()


def test_default_out_is_a_new_folder_per_run(tmp_path, npz, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert run("train", "--data", npz, "--hidden", "4", "--epochs", "1", "--quiet").exit_code == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "model.npz").exists() for r in runs)


def test_resume_refuses_other_options_and_other_data_and_allows_more_epochs(tmp_path, npz):
    d = tmp_path / "run"
    small = ["--hidden", "8", "--epochs", "2", "--batch-size", "64", "--quiet"]
    assert run("train", "--data", npz, "--out", d, *small).exit_code == 0
    result = run("train", "--resume", d, "--lr", "0.1")
    assert result.exit_code == 1 and "--lr 0.05 -> 0.1" in result.output
    result = run("train", "--resume", d)
    assert result.exit_code == 1 and "finished run (it ran all 2 epochs)" in result.output
    other = tmp_path / "other.npz"
    with np.load(npz) as z:
        np.savez(other, **{k: z[k] for k in z.files} | {"y_train": z["y_train"][::-1]})
    result = run("train", "--resume", d, "--data", other, "--epochs", "3")
    assert result.exit_code == 1 and "other data" in result.output and "labels_sha256" in result.output
    result = run("train", "--resume", d, "--epochs", "1")
    assert result.exit_code == 1 and "the run has reached epoch 2 already" in result.output
    result = run("train", "--resume", d, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "stretched" in result.output
    metrics = json.loads((d / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3] and metrics["config"]["epochs"] == 3


def test_failed_final_save_keeps_the_checkpoint_and_resumes(tmp_path, npz, monkeypatch):
    d = tmp_path / "run"
    real = fit_module.save_model

    def full_disk(path, model):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fit_module, "save_model", full_disk)
    result = run("train", "--data", npz, "--out", d, "--hidden", "8", "--epochs", "2", "--quiet")
    assert result.exit_code == 1
    assert f"cannot write {d / 'model.npz'}: No space left on device" in result.output
    assert "holds the run up to epoch 2" in result.output and "--resume" in result.output
    monkeypatch.setattr(fit_module, "save_model", real)
    assert load_checkpoint(d / CHECKPOINT)["state"]["epoch"] == 2
    # training is complete in the checkpoint: resuming only saves and evaluates, as the message says
    result = run("train", "--resume", d)
    assert result.exit_code == 0, result.output
    metrics = json.loads((d / "metrics.json").read_text())
    assert (d / "model.npz").exists() and metrics["status"] == "finished" and len(metrics["history"]) == 2
    result = run("train", "--resume", d)
    assert result.exit_code == 1 and "holds a finished run" in result.output


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path, npz, monkeypatch):
    d = tmp_path / "run"
    real = fit_module.save_checkpoint
    calls = []

    def second_fails(path, trainer, extra):
        calls.append(1)
        if len(calls) == 2:
            raise PermissionError(errno.EACCES, "Permission denied")
        real(path, trainer, extra)

    monkeypatch.setattr(fit_module, "save_checkpoint", second_fails)
    result = run("train", "--data", npz, "--out", d, "--hidden", "8", "--epochs", "3", "--quiet")
    assert result.exit_code == 1
    assert "Permission denied" in result.output and "previous checkpoint" in result.output
    monkeypatch.setattr(fit_module, "save_checkpoint", real)
    assert load_checkpoint(d / CHECKPOINT)["state"]["epoch"] == 1
    assert run("train", "--resume", d).exit_code == 0


def test_second_signal_while_saving_is_recorded_not_raised():
    before = signal.getsignal(signal.SIGINT)       # Python's default, or SIG_IGN in a background job
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)           # e.g. a second Ctrl-C while the checkpoint is written
        time.sleep(0.01)
        assert stop.requested() and stop.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(b"garbage"), "not a readable fastfcnn checkpoint"),
    (lambda p: np.savez(p, state=np.array(json.dumps({"format": 9}))), "format 9"),
    (lambda p: np.savez(p, x=np.zeros(2)), "no state"),
    (lambda p: np.savez(p, state=np.array("[1, 2]")), "its state is not an object"),
    (lambda p: np.savez(p, state=np.array([{"a": 1}], dtype=object)), "not an .npz archive of plain arrays"),
])
def test_malformed_checkpoints_are_one_clear_error(tmp_path, damage, message):
    p = tmp_path / CHECKPOINT
    damage(p)
    with pytest.raises(UserError, match=message):
        load_checkpoint(p)


def test_restricted_unpickler_refuses_code(tmp_path):
    from cifar_fixture import make_synthetic, write_cifar10

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    root = tmp_path / "data"
    write_cifar10(root, *make_synthetic(20, 10, seed=0))
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps({b"data": Exploit()}))
    result = run("train", "--data-dir", root, "--no-download", "--out", tmp_path / "r")
    assert result.exit_code == 1 and "refused" in result.output and "system" in result.output
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("target", ["metrics.json", "best.npz", "predictions.npz"])
def test_every_save_point_fails_cleanly(tmp_path, npz, monkeypatch, target):
    """A write that fails at any save point ends in one error naming the file; the checkpoint
    written before it stays loadable and the run resumes from it."""
    import fastfcnn.files as files
    d = tmp_path / "run"
    real = files.write_atomic

    def failing(path, write):
        if path.name == target and (target != "metrics.json" or (d / "model.npz").exists()):
            raise OSError(errno.EROFS, "Read-only file system")
        real(path, write)

    monkeypatch.setattr(files, "write_atomic", failing)
    result = run("train", "--data", npz, "--out", d, "--hidden", "8", "--epochs", "2", "--patience", "3", "--quiet")
    assert result.exit_code == 1
    assert f"cannot write {d / target}: Read-only file system" in result.output
    assert "holds the run up to epoch 2" in result.output
    monkeypatch.setattr(files, "write_atomic", real)
    assert load_checkpoint(d / CHECKPOINT)["state"]["epoch"] == 2
    assert run("train", "--resume", d).exit_code == 0          # what the message advised
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]) == 2


def test_a_signal_after_the_last_epoch_saves_the_model_and_resume_finishes(tmp_path, npz, monkeypatch):
    """Ctrl-C during the last epoch's validation: training is complete, so the model is saved,
    the test evaluation is skipped, and --resume only evaluates."""
    from fastfcnn import train as train_module
    d = tmp_path / "run"
    real = train_module.Trainer.validate
    calls = []

    def validate_then_ctrl_c(self):
        calls.append(1)
        if len(calls) == 2:                      # the last (second) epoch's validation
            os.kill(os.getpid(), signal.SIGINT)
        return real(self)

    monkeypatch.setattr(train_module.Trainer, "validate", validate_then_ctrl_c)
    result = run("train", "--data", npz, "--out", d, "--hidden", "8", "--epochs", "2", "--quiet")
    assert result.exit_code == 130
    assert "model.npz is saved" in result.output and "--resume" in result.output
    assert (d / "model.npz").exists() and json.loads((d / "metrics.json").read_text())["status"] == "running"
    monkeypatch.setattr(train_module.Trainer, "validate", real)
    result = run("train", "--resume", d)
    assert result.exit_code == 0, result.output
    assert json.loads((d / "metrics.json").read_text())["status"] == "finished"


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from fastfcnn.cli.train import default_run_dir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda fmt: "20260101-000000")
    folders = [default_run_dir() for _ in range(3)]
    assert [f.name for f in folders] == ["20260101-000000", "20260101-000000-2", "20260101-000000-3"]
    assert all(f.is_dir() for f in folders)


def test_sklearn_cross_validation_stops_on_ctrl_c():
    from fastfcnn.fit import RunInterrupted
    assert issubclass(RunInterrupted, KeyboardInterrupt) and not issubclass(RunInterrupted, Exception)


def test_only_run_files_temporaries_are_removed(tmp_path):
    from fastfcnn.files import remove_stale_temporaries
    from fastfcnn.fit import RUN_FILES
    mine = tmp_path / ".notes.backup.tmp"
    stale = tmp_path / ".model.npz.x1y2.tmp"
    for p in (mine, stale):
        p.write_text("x")
    assert remove_stale_temporaries(tmp_path, RUN_FILES) == [stale.name]
    assert mine.exists()
