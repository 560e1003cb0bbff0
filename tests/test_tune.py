"""`fastfcnn tune`: search spaces, studies on SQLite and on a real PostgreSQL server, workers as
separate processes, a worker killed mid-trial, a stopped worker resumed, bad inputs.

Tiny synthetic data (300 training / 100 test 8x8 RGB images, 3 classes), nets of 8 hidden
units, 2-3 epochs: each trial takes well under a second; the time goes into starting processes.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import postgres
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from fastfcnn import tune as T
from fastfcnn.cli import app
from fastfcnn.config import TrainConfig, resolve
from fastfcnn.errors import UserError

runner = CliRunner()
FAST = ["--hidden", "8", "--threads", "1"]
SPACE = """
lr = {low = 0.01, high = 0.3, log = true}
batch_size = {choices = [32, 64]}
optimizer = "sgd"
lr_schedule = {choices = ["cosine", "constant"]}
warmup_epochs = 0
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 + 100 8x8x3 uint8 images of 3 classes: a class prototype plus noise."""
    rng = np.random.default_rng(0)
    proto = rng.integers(0, 256, size=(3, 8, 8, 3)).astype(np.float64)

    def split(n):
        y = rng.permutation(np.arange(n) % 3)
        return np.clip(proto[y] + rng.normal(0, 90, size=(n, 8, 8, 3)), 0, 255).astype(np.uint8), y

    (x_train, y_train), (x_test, y_test) = split(300), split(100)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.toml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def postgres_url():
    if not postgres.available():
        pytest.skip("the PostgreSQL server (initdb, pg_ctl) is not installed; .ci/run installs it")
    with postgres.postgres_server() as url:
        yield url


def run(*args):
    result = runner.invoke(app, ["tune", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def cli(*args):
    return [sys.executable, "-m", "fastfcnn.cli", "tune", *map(str, args)]


def env(**extra):
    return dict(os.environ, PYTHONUNBUFFERED="1", **extra)


def load(storage, name):
    T._quiet_optuna()
    return optuna.load_study(study_name=name, storage=T.with_driver(storage))


def check_study(study, want: int):
    """Every trial completed or was pruned, numbers are unique, best value is the best trial's."""
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert len(trials) >= want
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}, T.trials_table(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    assert study.best_value == max(t.value for t in complete)
    assert study.best_trial.value == study.best_value
    return trials


def retrain_val_accuracy(best_json: Path, data, out: Path) -> float:
    result = runner.invoke(app, ["train", "--config", str(best_json), "--data", str(data), "--threads", "1",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())["final"]["val_accuracy"]


# --- search spaces -------------------------------------------------------------------------------

class FakeData:
    image_shape = (3, 8, 8)
    n_features = 192
    kind = "image"
    y_train = np.arange(300) % 3
    class_names = ["a", "b", "c"]


def test_default_space_samples_valid_configs():
    base = TrainConfig(epochs=4)
    space = T.build_space({}, base, set(), FakeData())
    assert {"hidden", "lr", "weight_decay", "batch_size", "optimizer", "momentum", "nesterov", "lr_schedule",
            "warmup_epochs", "label_smoothing", "dropout", "crop_pad", "flip"} <= set(space)
    assert space["crop_pad"]["high"] <= 7 and space["warmup_epochs"]["high"] == 1.0
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        cfg = T.sample(space, base.to_dict(), trial)
        resolve(None, cfg).check_data(FakeData())            # every sample is a valid config
        assert set(cfg) == set(base.to_dict())
        seen.add(cfg["optimizer"])
        if cfg["optimizer"] != "sgd":                        # sgd-only options are not sampled
            assert "momentum" not in trial.params and "nesterov" not in trial.params
            assert 1e-4 <= cfg["lr"] <= 1e-2
        assert 1 <= len(cfg["hidden"]) <= 3
        study.tell(trial, 0.5)
    assert seen == {"sgd", "adamw"}


def test_feature_vectors_leave_out_image_options():
    class Features(FakeData):
        image_shape = None
    space = T.build_space({}, TrainConfig(), set(), Features())
    assert not {"crop_pad", "flip", "crop_mode"} & set(space)
    with pytest.raises(UserError, match="crop_pad augments images"):
        T.build_space(T.parse_space({"crop_pad": {"low": 0, "high": 2}}), TrainConfig(), set(), Features())


def test_space_file_fixes_narrows_and_adds(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"optimizer": "adamw", "lr": {"low": 1e-3, "high": 3e-3, "log": True},
                                "hidden": {"depth": 2, "width": {"choices": [16, 32]}},
                                "beta2": {"choices": [0.99, 0.999]},
                                "weight_decay": {"by": "optimizer", "adamw": {"low": 0.01, "high": 0.1}}}))
    space = T.build_space(T.read_space(path), TrainConfig(epochs=2), {"dropout"}, FakeData())
    assert space["optimizer"] == {"type": "fixed", "value": "adamw"}
    assert "dropout" not in space and "beta2" in space
    trial = optuna.create_study(direction="maximize").ask()
    cfg = T.sample(space, TrainConfig(epochs=2).to_dict(), trial)
    assert cfg["optimizer"] == "adamw" and 1e-3 <= cfg["lr"] <= 3e-3 and 0.01 <= cfg["weight_decay"] <= 0.1
    assert len(cfg["hidden"]) == 2 and set(cfg["hidden"]) <= {16, 32} and cfg["beta2"] in (0.99, 0.999)
    assert set(trial.params) >= {"lr", "width_1", "width_2", "beta2", "weight_decay_adamw"}


@pytest.mark.parametrize("suffix, text, message", [
    (".toml", "learning_rate = {low = 0.1, high = 1}", "unknown option(s) learning_rate"),
    (".toml", "lr = {low = 0.1, high = 0.01}", "low (0.1) is above high (0.01)"),
    (".toml", "lr = {low = 0, high = 0.1, log = true}", "--lr must be a positive number, got 0"),
    (".toml", "dropout = {low = 0, high = 1.5}", "dropout: high: --dropout must be in [0, 1), got 1.5"),
    (".toml", "batch_size = {low = 16, high = 64.5}", "high must be an integer"),
    (".toml", "optimizer = {choices = [\"sgd\", \"rmsprop\"]}", "--optimizer must be one of sgd, adam, adamw"),
    (".toml", "nesterov = {low = 0, high = 1}", "a range needs a numeric option"),
    (".toml", "lr = {min = 0.1, max = 1}", "expected a value"),
    (".toml", "val_size = {choices = [0.1, 0.2]}", "val_size cannot be in a search space"),
    (".toml", "optimizer = \"sgd\"\n[lr]\nby = \"lr_schedule\"\ncosine = 0.1", "must be an option decided before lr"),
    (".toml", "warmup_epochs = {low = 0, high = 5}", "warmup_epochs must be at most --epochs (2)"),
    (".toml", "crop_pad = {low = 0, high = 8}", "must stay below the image side (8)"),
    (".toml", "lr = {low = 0.1", "is not valid TOML"),
    (".json", "{\"lr\": [0.1, 0.2", "is not valid JSON"),
    (".json", "[1, 2]", "expected a table of training options"),
    (".yaml", "lr: 0.1", "must end in .json or .toml"),
])
def test_bad_space_files(tmp_path, data, suffix, text, message):
    path = tmp_path / f"space{suffix}"
    path.write_text(text)
    result = run("--data", data, "--space", path, "--epochs", "2", "--study-dir", tmp_path / "s", *FAST)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output


def test_missing_space_file_and_bad_options(tmp_path, data):
    for args, message in [(["--space", tmp_path / "none.toml"], "cannot read --space"),
                          (["--val-size", "0"], "--val-size must be above 0"),
                          (["--pruner", "random"], "--pruner must be one of median, hyperband, none"),
                          (["--study", "a/b"], "--study must be a name"),
                          (["--trials", "0"], "--trials must be at least 1")]:
        result = run("--data", data, "--study-dir", tmp_path / "s", *args)
        assert result.exit_code == 1 and message in result.output, result.output


@pytest.mark.parametrize("url", ["postgresql://someone:s3cret@127.0.0.1:{port}/nodb", "nosuchdb://x/y"])
def test_unreachable_storage_is_a_clear_error(tmp_path, data, url):
    url = url.format(port=postgres.free_port())
    result = run("--data", data, "--storage", url, "--study", "x", *FAST)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: cannot open storage"), result.output
    assert "s3cret" not in result.output


def test_show_without_a_study(tmp_path):
    result = run("--study", "nothing", "--study-dir", tmp_path / "none", "--show")
    assert result.exit_code == 1 and "no study at" in result.output


# --- studies ----------------------------------------------------------------------------------------

def test_sqlite_study_with_two_worker_processes(tmp_path, data, space):
    study_dir = tmp_path / "study"
    proc = subprocess.run(cli("--data", data, "--space", space, "--epochs", "3", "--trials", 6, "--workers", 2,
                              "--study", "local", "--study-dir", study_dir, *FAST),
                          capture_output=True, text=True, env=env(), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 workers x 1 thread" in proc.stdout
    assert proc.stdout.count(" complete  val acc") + proc.stdout.count(" pruned    ") >= 6   # a line per trial

    study = load(T.sqlite_url(study_dir), "local")
    trials = check_study(study, 6)
    assert len({t.user_attrs["host"] for t in trials}) == 2          # both processes ran trials
    for t in trials:                                                  # each trial has its own run directory
        record = json.loads((study_dir / "trials" / f"{t.number:04d}" / "trial.json").read_text())
        assert record["number"] == t.number and len(record["history"]) == len(t.intermediate_values)

    best = json.loads((study_dir / "best.json").read_text())
    assert set(best) == set(TrainConfig().to_dict())                 # TrainConfig names only
    assert retrain_val_accuracy(study_dir / "best.json", data, tmp_path / "best") == study.best_value

    shown = run("--study", "local", "--study-dir", study_dir, "--show")
    assert shown.exit_code == 0, shown.output
    rows = [line.split() for line in shown.output.splitlines()[1:] if line[:5].strip().isdigit()]
    assert int(rows[0][0]) == study.best_trial.number                # best first
    assert rows[0][2] == f"{100 * study.best_value:.2f}%"
    assert "batch_size=" in shown.output and "lr=" in shown.output

    again = run("--data", data, "--space", space, "--epochs", "3", "--trials", 6, "--study", "local",
                "--study-dir", study_dir, *FAST)                       # the same command: nothing left to do
    assert again.exit_code == 0 and "already holds" in again.output, again.output
    assert len(load(T.sqlite_url(study_dir), "local").trials) == len(trials)


def test_postgres_study_shared_by_two_processes(tmp_path, data, space, postgres_url):
    args = ["--data", data, "--space", space, "--epochs", "2", "--trials", 6, "--study", "shared",
            "--storage", postgres_url, *FAST]
    procs = [subprocess.Popen(cli(*args, "--study-dir", tmp_path / f"machine{i}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env()) for i in (1, 2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (out, errs) in zip(procs, outputs):
        assert p.returncode == 0, out + errs
    study = load(postgres_url, "shared")
    trials = check_study(study, 6)
    assert len({t.user_attrs["host"] for t in trials}) == 2
    assert len(trials) <= 7                                          # workers stop at the budget (one may overrun)
    # each "machine" keeps its own trials' run directories and the shared study's best.json
    for i in (1, 2):
        assert json.loads((tmp_path / f"machine{i}" / "best.json").read_text()) == \
            study.best_trial.user_attrs["config"]
    assert T.redact(postgres_url) in outputs[0][0]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_trial(storage, name):
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        return None
    from sqlalchemy.exc import SQLAlchemyError
    try:
        study = load(storage, name)
    except KeyError:            # the worker has not made the study yet
        return None
    except SQLAlchemyError:     # ...or is creating its tables right now (this poll raced it)
        return None
    running = [t for t in study.get_trials() if t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2]
    return running[0] if running else None


def test_killed_worker_trial_fails_and_is_retried(tmp_path, data, space):
    study_dir, url = tmp_path / "study", T.sqlite_url(tmp_path / "study")
    common = ["--data", data, "--space", space, "--study", "kill", "--study-dir", study_dir, *FAST]
    # a worker whose trial would run for ages
    slow = subprocess.Popen(cli(*common, "--epochs", 100000, "--trials", 1), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env(FASTFCNN_TUNE_HEARTBEAT="1"))
    try:
        dead = wait_for(lambda: running_trial(url, "kill"), 60, "the slow trial to run")
        time.sleep(1.5)                                     # it has written heartbeats
    finally:
        slow.kill()                                         # kill -9: no chance to clean up
        slow.wait()
    assert load(url, "kill").trials[dead.number].state == TrialState.RUNNING
    # another worker: short heartbeats, so it soon finds the trial stale
    proc = subprocess.run(cli(*common, "--epochs", 2, "--trials", 3, "--heartbeat", 1, "--grace", 2),
                          capture_output=True, text=True, env=env(), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(url, "kill")
    by_number = {t.number: t for t in study.trials}
    assert by_number[dead.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == dead.params
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    shown = run("--study", "kill", "--study-dir", study_dir, "--show").output
    assert f"retry of #{dead.number}" in shown and "worker lost" in shown


def test_stopped_worker_resumes_its_trial(tmp_path, data, space):
    study_dir, url = tmp_path / "study", T.sqlite_url(tmp_path / "study")
    common = ["--data", data, "--space", space, "--study", "stop", "--study-dir", study_dir, *FAST]
    worker = subprocess.Popen(cli(*common, "--epochs", 100000, "--trials", 1), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env())
    try:
        wait_for(lambda: running_trial(url, "stop"), 60, "the trial to run")
        worker.send_signal(signal.SIGTERM)
        out, errs = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 143, out + errs
    assert "run the same command again to resume" in errs
    study = load(url, "stop")
    stopped, queued = study.trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"]
    assert queued.state == TrialState.WAITING
    done = json.loads((study_dir / "trials" / "0000" / "metrics.json").read_text())["history"]

    # the same command again (here with a reachable number of epochs): the queued trial resumes
    result = run(*common, "--epochs", len(done) + 2, "--trials", 1)
    assert result.exit_code == 0, result.output
    resumed = load(url, "stop").trials[1]
    assert resumed.state == TrialState.COMPLETE and resumed.params == stopped.params
    assert "epoch" in resumed.user_attrs["resumed"]
    assert sorted(resumed.intermediate_values) == list(range(1, len(done) + 3))


@pytest.mark.filterwarnings("ignore:Fixed parameter lr")
def test_absurd_learning_rate_is_pruned_and_the_study_goes_on(tmp_path, data, space):
    study_dir, url = tmp_path / "study", T.sqlite_url(tmp_path / "study")
    study_dir.mkdir()
    T._quiet_optuna()
    optuna.create_study(study_name="lr", storage=url, direction="maximize").enqueue_trial({"lr": 1e6})
    result = run("--data", data, "--space", space, "--epochs", 2, "--trials", 3, "--study", "lr",
                 "--study-dir", study_dir, *FAST)
    assert result.exit_code == 0, result.output
    assert "diverged" in result.output
    study = load(url, "lr")
    first = study.trials[0]
    assert first.params["lr"] == 1e6 and first.state == TrialState.PRUNED
    assert "diverged" in first.user_attrs["error"]
    assert len(study.trials) == 3                                     # the study went on to its 3 trials
    assert {t.state for t in study.trials[1:]} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert (study_dir / "best.json").is_file() == any(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_config_that_cannot_work_fails_its_trial_only(tmp_path, data):
    # crops of 8 pixels work with zero padding but not with reflect padding on 8x8 images: the
    # space is accepted, and the reflect trial fails (its reason kept) while the study goes on
    path = tmp_path / "space.toml"
    path.write_text('crop_pad = {choices = [8]}\ncrop_mode = {choices = ["reflect", "zero"]}\n')
    study_dir, url = tmp_path / "s", T.sqlite_url(tmp_path / "s")
    study_dir.mkdir()
    T._quiet_optuna()
    study = optuna.create_study(study_name="mix", storage=url, direction="maximize")
    study.enqueue_trial({"crop_pad": 8, "crop_mode": "reflect"})
    study.enqueue_trial({"crop_pad": 8, "crop_mode": "zero"})
    result = run("--data", data, "--space", path, "--no-default-space", "--epochs", 3, "--patience", 1,
                 "--lr", 0.05, "--trials", 2, "--study", "mix", "--study-dir", study_dir, *FAST)
    assert result.exit_code == 0, result.output
    failed, ok = load(url, "mix").trials
    assert failed.state == TrialState.FAIL and "reflect padding must be below the image side" in \
        failed.user_attrs["error"]
    assert ok.state == TrialState.COMPLETE
    metrics = json.loads((Path(ok.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert ok.value == metrics["best"]["val_accuracy"]         # early stopping: the kept model's score
    assert "failed    --crop-pad with reflect padding" in result.output
