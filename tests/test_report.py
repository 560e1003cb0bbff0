"""`fastfcnn report`: every picture rendered from small real runs (trained through the CLI), opened
with Pillow and checked for size and content; the error cases write nothing."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastfcnn.cli import app
from fastfcnn.report import bench_problem, load_run, report_figure
from fastfcnn.report.bench import grouped_phases
from fastfcnn.report.runs import confident_mistakes

runner = CliRunner()
TRAIN = ["--hidden", "8", "--batch-size", "16", "--threads", "1", "--quiet"]  # 1 thread: quick on shared cores
CLASSES = ["red", "green", "blue"]
WIDTH = 1500                       # 15 inches at the default 100 dpi


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny image set (8x8 RGB, 3 classes told apart by the red channel) and a features set."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)

    def images(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        x[..., 0] = (y * 100 + rng.integers(0, 60, n))[:, None, None]
        return x, y

    (xt, yt), (xs, ys) = images(200), images(60)
    np.savez(root / "images.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys, class_names=np.array(CLASSES))
    ft, fs = rng.standard_normal((200, 10)), rng.standard_normal((60, 10))
    np.savez(root / "features.npz", x_train=ft, y_train=(ft[:, 0] > 0).astype(int), x_test=fs,
             y_test=(fs[:, 0] > 0).astype(int))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """Two image runs (one with flip TTA, one with early stopping's best epoch) and a features run,
    trained by `fastfcnn train`."""
    root = tmp_path_factory.mktemp("runs")
    ok("train", "--data", data / "images.npz", "--epochs", "3", "--flip", "--out", root / "a", *TRAIN)
    ok("train", "--data", data / "images.npz", "--epochs", "4", "--seed", "1", "--patience", "3", "--out", root / "b",
       *TRAIN)
    ok("train", "--data", data / "features.npz", "--epochs", "2", "--out", root / "f", *TRAIN)
    return root


def picture(path, width=WIDTH):
    """Open a PNG: check its width and that it is not blank; return its (height, width)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.shape[1] == width
    assert pixels.var() > 200, "the picture is (nearly) blank"
    return pixels.shape


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Runs

def test_confusion_matrix_in_metrics_equals_the_stored_predictions(runs):
    for name in ("a", "b", "f"):
        metrics = json.loads((runs / name / "metrics.json").read_text())
        with np.load(runs / name / "predictions.npz") as z:
            y_true, y_pred, probs = z["y_true"], z["y_pred"], z["probs"]
        k = len(metrics["data"]["classes"])
        direct = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
        assert metrics["confusion_matrix"] == direct.tolist()
        assert np.array_equal(y_pred, probs.argmax(axis=1))
        assert direct.sum() == metrics["n_test"] == 60
        assert np.trace(direct) / direct.sum() == pytest.approx(metrics["test_accuracy"])
        run_ = load_run(runs / name)
        assert np.array_equal(run_.confusion, direct) and run_.predictions is not None


def test_one_run_writes_report_png_in_the_run_directory(runs):
    result = ok("report", runs / "a")
    out = runs / "a" / "report.png"
    assert result.stdout.strip() == str(out)
    height, _ = picture(out)
    assert 900 < height < 1400                       # curves + confusion matrix, no mistakes grid
    assert "give the data" in result.output           # the mistakes grid needs --data


def test_mistakes_grid_with_the_data(runs, data, tmp_path):
    without = picture(ok("report", runs / "a", "--out", tmp_path / "plain.png").stdout.strip())
    result = ok("report", runs / "a", "--data", data / "images.npz", "--mistakes", "8", "--out", tmp_path / "m.png")
    assert "note" not in result.output
    with_grid = picture(tmp_path / "m.png")
    assert with_grid[0] > without[0] + 150            # one row of 8 images added


def test_most_confident_mistakes_come_first(runs):
    preds = load_run(runs / "a").predictions
    rows = confident_mistakes(preds, 10)
    assert len(rows) == min(10, int((preds["y_true"] != preds["y_pred"]).sum())) > 0
    assert (preds["y_true"][rows] != preds["y_pred"][rows]).all()
    confidence = preds["probs"][rows, preds["y_pred"][rows]]
    assert (np.diff(confidence) <= 0).all()
    wrong = preds["y_true"] != preds["y_pred"]
    assert confidence[0] == preds["probs"][wrong].max(axis=1).max()


def test_several_runs_in_one_picture(runs, data, tmp_path):
    out = tmp_path / "compare.png"
    ok("report", runs / "a", runs / "b", runs / "f", "--data", data / "images.npz", "--mistakes", "8", "--out", out)
    height, _ = picture(out)
    assert "best" in load_run(runs / "b").metrics      # drawn as a dotted line at the best epoch
    single = picture(ok("report", runs / "b", "--out", tmp_path / "one.png").stdout.strip())
    assert height > single[0]


def test_several_runs_default_to_report_png_in_the_working_directory(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ok("report", runs / "a", runs / "b", "--dpi", "40").stdout.strip() == "report.png"
    picture(tmp_path / "report.png", width=600)


def test_features_run_has_no_mistakes_grid(runs, data, tmp_path):
    result = ok("report", runs / "f", "--data", data / "features.npz", "--out", tmp_path / "f.png")
    assert "feature vectors" in result.output
    picture(tmp_path / "f.png")


@pytest.mark.parametrize("status, note", [("running", "it is still training"), ("interrupted", "it was interrupted"),
                                          ("diverged", "it diverged"), (None, "it is still training")])
def test_run_still_training(runs, tmp_path, status, note):
    """metrics.json as rewritten after each epoch: config and history, no test results yet (also
    as an interrupted or diverged run leaves it, and without a status); a predictions.npz left in
    the folder by an earlier run is not used."""
    metrics = json.loads((runs / "a" / "metrics.json").read_text())
    live = tmp_path / "live"
    live.mkdir()
    partial = {k: metrics[k] for k in ("config", "preset", "data")} | {"history": metrics["history"][:2]}
    if status:
        partial["status"] = status
    (live / "metrics.json").write_text(json.dumps(partial))
    (live / "predictions.npz").write_bytes((runs / "a" / "predictions.npz").read_bytes())
    assert load_run(live).predictions is None
    if status != "running":                           # the library's notes are enough (rendering is slow)
        _, notes = report_figure([load_run(live)])
        assert f"live: no confusion matrix, {note}" in notes
        return
    result = ok("report", live)
    assert f"no confusion matrix, {note}" in result.output
    live_height, _ = picture(live / "report.png")
    assert live_height < 700                          # curves only
    ok("report", live, runs / "a", "--out", tmp_path / "both.png")
    picture(tmp_path / "both.png")


def test_run_without_a_test_set(runs, tmp_path):
    metrics = json.loads((runs / "a" / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "test_accuracy_flip_tta"):
        metrics[key] = metrics["final"][key] = None
    del metrics["confusion_matrix"]
    (tmp_path / "nt").mkdir()
    (tmp_path / "nt" / "metrics.json").write_text(json.dumps(metrics))
    result = ok("report", tmp_path / "nt")
    assert "no confusion matrix, it had no test set" in result.output
    picture(tmp_path / "nt" / "report.png")


def test_svg_and_pdf_by_extension(runs, tmp_path):
    ok("report", runs / "a", "--out", tmp_path / "r.svg")
    ok("report", runs / "a", "--out", tmp_path / "r.PDF")
    svg = (tmp_path / "r.svg").read_text()
    assert "<svg" in svg and "learning rate" in svg and "green" in svg        # text stays text
    assert (tmp_path / "r.PDF").read_bytes().startswith(b"%PDF")


def test_no_pyplot_no_window(runs, tmp_path):
    """The report uses the object API only: pyplot (and so any GUI backend) is never imported."""
    code = ("import sys; from fastfcnn.cli import app; "
            f"app(['report', {str(runs / 'a')!r}, '--out', {str(tmp_path / 'x.png')!r}], standalone_mode=False); "
            "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'no pyplot')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MPLBACKEND="TkAgg"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no pyplot")
    picture(tmp_path / "x.png")


# ---------------------------------------------------------------------------------------------
# Bench

def bench_report():
    """Shaped like `fastfcnn bench --quick --json` output (bench/run.py), with a PyTorch entry
    (epoch time only) on the wide net."""
    def engine(scale, epoch_s):
        phases = {"gather": 0.27, "forward[0] 3072x64": 0.42, "forward[1] 64x64": 0.03, "forward[2] 64x10": 0.01,
                  "softmax_xent_grad": 0.014, "backward[2] 64x10": 0.055, "backward[1] 64x64": 0.06,
                  "backward[0] 3072x64": 0.34, "sgd_momentum_update": 0.12}
        phases = {k: v * scale for k, v in phases.items()}
        return {"phases_ms": phases, "step_ms": sum(phases.values()), "matmul_ms": 0.9 * scale,
                "matmul_gflops": 114 / scale, "matmul_pct_of_sgemm": 241 / scale, "epoch_seconds": [epoch_s / 25],
                "epoch_seconds_median": epoch_s / 25, "epoch_seconds_per_50k": epoch_s, "epoch_gflops": 51 / scale}

    def net(hidden, batch, scale):
        sizes = [3072, *hidden, 10]
        return {"hidden": hidden, "batch_size": batch,
                "layers": [[batch, i, o] for i, o in zip(sizes[:-1], sizes[1:])], "epoch_gflop": 1.63 * scale,
                "engines": {"numba": engine(scale, 0.8 * scale), "numpy": engine(2.7 * scale, 1.26 * scale)},
                "sgemm": {"phases_ms": {"layer[0] 3072x64": 2.1}, "ms": 2.2, "gflops": 47.2},
                "speedup": {"numba_vs_numpy": 1.57}}

    report = {"threads": 2, "quick": True, "repeats": 1, "data": "synthetic", "n_train": 2000,
              "versions": {"fastfcnn": "0.1.0", "numpy": "2.4.6", "numba": "0.68.1", "python": "3.11.7"},
              "nets": {"seed": net([64, 64], 128, 1.0), "wide": net([1024, 1024], 256, 20.0)},
              "startup": {"compile_seconds": 23.0, "cold_start_to_first_step_seconds": 23.8,
                          "warm_start_to_first_step_seconds": 1.02, "warm_first_step_seconds": 0.58,
                          "peak_rss_mb": 234.0, "peak_rss_run": "seed net, 1 epoch on 2000 images"}}
    report["nets"]["wide"]["engines"]["torch"] = {"epoch_seconds": [0.5], "epoch_seconds_median": 0.5,
                                                  "epoch_seconds_per_50k": 12.0, "epoch_gflops": 80.0}
    report["versions"]["torch"] = "2.3.0"
    return report


def test_bench_picture(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps(bench_report()))
    result = ok("report", "--bench", tmp_path / "b.json", "--out", tmp_path / "bench.png")
    assert result.stdout.strip() == str(tmp_path / "bench.png")
    height, _ = picture(tmp_path / "bench.png")
    assert 500 < height < 1000


def test_bench_without_torch_and_with_runs(runs, tmp_path):
    report = bench_report()
    del report["nets"]["wide"]
    (tmp_path / "b.json").write_text(json.dumps(report))
    ok("report", runs / "a", "--bench", tmp_path / "b.json", "--out", tmp_path / "both.png")
    picture(tmp_path / "both.png")


def test_phases_grouped_into_the_parts_of_a_step():
    engine = bench_report()["nets"]["seed"]["engines"]["numba"]
    groups = grouped_phases(engine["phases_ms"])
    assert list(groups) == ["gather", "forward", "loss", "backward", "update"]
    assert sum(groups.values()) == pytest.approx(engine["step_ms"])
    assert groups["forward"] == pytest.approx(0.46)
    assert bench_problem(bench_report()) is None
    # fastfcnn bench times the first layer's input normalisation apart from its product
    split = {"gather": 0.1, "normalise": 0.05, "forward[0] 3072x64": 0.3, "softmax_xent_grad": 0.01}
    assert grouped_phases(split) == {"gather": 0.1, "forward": pytest.approx(0.35), "loss": 0.01, "backward": 0.0,
                                     "update": 0.0}


# ---------------------------------------------------------------------------------------------
# Errors: one line, exit 1, nothing written

def _pytest_benchmark_json():
    return {"machine_info": {"node": "x"}, "benchmarks": [{"name": "test_step", "stats": {"mean": 0.1}}]}


def _broken_bench():
    report = bench_report()
    del report["nets"]["seed"]["engines"]["numpy"]["epoch_seconds_per_50k"]
    return report


@pytest.mark.parametrize("case, message", [
    ("no_metrics", "has no metrics.json"),
    ("no_history", "no training history"),
    ("empty_history", "no training history"),
    ("corrupt_metrics", "corrupt or not JSON"),
    ("metrics_not_object", "expected a JSON object"),
    ("bad_history_record", "lacks a number for train_loss"),
    ("bad_confusion", "confusion_matrix is not a square matrix"),
    ("corrupt_predictions", "not a readable run's test-set predictions"),
    ("bad_final", "final.test_accuracy is not a number"),
    ("bad_data", "data is not an object"),
    ("missing_run", "no such run directory"),
])
def test_bad_run_directory(runs, tmp_path, case, message):
    bad = tmp_path / "bad"
    if case != "missing_run":
        bad.mkdir()
        for name in ("metrics.json", "predictions.npz"):
            (bad / name).write_bytes((runs / "a" / name).read_bytes())
    metrics = json.loads((runs / "a" / "metrics.json").read_text())
    if case == "no_metrics":
        (bad / "metrics.json").unlink()
    elif case == "no_history":
        del metrics["history"]
    elif case == "empty_history":
        metrics["history"] = []
    elif case == "bad_history_record":
        metrics["history"][1]["train_loss"] = None
    elif case == "bad_confusion":
        metrics["confusion_matrix"] = [[1, 2], [3]]
    elif case == "bad_final":
        metrics["final"]["test_accuracy"] = "57%"
    elif case == "bad_data":
        metrics["data"] = ["images"]
    if case in ("no_history", "empty_history", "bad_history_record", "bad_confusion", "bad_final", "bad_data"):
        (bad / "metrics.json").write_text(json.dumps(metrics))
    elif case == "corrupt_metrics":
        (bad / "metrics.json").write_text(json.dumps(metrics)[:300])
    elif case == "metrics_not_object":
        (bad / "metrics.json").write_text("[1, 2]")
    elif case == "corrupt_predictions":
        (bad / "predictions.npz").write_bytes(b"PK\x03\x04 truncated")
    before = listing(tmp_path)
    result = run("report", bad, "--out", tmp_path / "r.png")
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert listing(tmp_path) == before


@pytest.mark.parametrize("content, message", [
    (json.dumps(_pytest_benchmark_json()), "not a `fastfcnn bench --json` file: no 'nets'"),
    ("[1, 2, 3]", "not a `fastfcnn bench --json` file: expected a JSON object"),
    (json.dumps(_broken_bench()), "engine 'numpy' of net 'seed' has no epoch time"),
    ("{\"nets\": {", "corrupt or not JSON"),
    (None, "no such file"),
])
def test_bad_bench_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "b.json").write_text(content)
    before = listing(tmp_path)
    result = run("report", "--bench", tmp_path / "b.json", "--out", tmp_path / "bench.png")
    assert result.exit_code == 1 and message in result.output and result.output.count("error:") == 1
    assert listing(tmp_path) == before


def test_unwritable_out_writes_nothing(runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    before = listing(runs / "a")
    result = run("report", runs / "a", "--out", blocker / "r.png")
    assert result.exit_code == 1 and "file is not a writable directory" in result.output
    result = run("report", runs / "a", "--out", tmp_path)
    assert result.exit_code == 1 and "is a directory" in result.output
    assert listing(tmp_path) == ["file"] and listing(runs / "a") == before


@pytest.mark.parametrize("args, message", [
    ([], "give at least one RUN_DIR or --bench FILE"),
    (["{a}", "--out", "{tmp}/r.jpg"], "must be a .png, .svg or .pdf file"),
    (["{a}", "--mistakes", "-1", "--out", "{tmp}/r.png"], "--mistakes must be between"),
    (["{a}", "--data", "{data}/features.npz", "--out", "{tmp}/r.png"], "holds feature vectors, but run a"),
    (["{a}", "--data", "{tmp}/nothing.npz", "--out", "{tmp}/r.png"], "no such file"),
])
def test_bad_options_write_nothing(runs, data, tmp_path, args, message):
    args = [a.format(a=runs / "a", tmp=tmp_path, data=data) for a in args]
    result = run("report", *args)
    assert result.exit_code == 1 and message in result.output
    assert listing(tmp_path) == []


def test_data_that_is_not_the_runs_test_set(runs, data, tmp_path):
    with np.load(data / "images.npz") as z:
        arrays = dict(z)
    arrays["y_test"] = arrays["y_test"][::-1].copy()
    arrays["x_test"] = arrays["x_test"][::-1].copy()
    np.savez(tmp_path / "shuffled.npz", **arrays)
    result = run("report", runs / "a", "--data", tmp_path / "shuffled.npz", "--out", tmp_path / "r.png")
    assert result.exit_code == 1 and "not the test set run a was evaluated on" in result.output
    assert not (tmp_path / "r.png").exists()


def test_stale_predictions_are_not_used(runs, tmp_path):
    bad = tmp_path / "stale"
    bad.mkdir()
    (bad / "metrics.json").write_bytes((runs / "a" / "metrics.json").read_bytes())
    (bad / "predictions.npz").write_bytes((runs / "b" / "predictions.npz").read_bytes())
    same = np.array_equal(load_run(runs / "a").confusion, load_run(runs / "b").confusion)
    result = ok("report", bad, "--out", tmp_path / "r.png")
    assert same or "does not match metrics.json" in result.output
    picture(tmp_path / "r.png")


def test_library_report_figure_needs_something_to_draw():
    from fastfcnn.errors import UserError
    with pytest.raises(UserError, match="nothing to draw"):
        report_figure([])
    with pytest.raises(UserError, match="not a `fastfcnn bench` report"):
        report_figure([], bench=copy.deepcopy(_pytest_benchmark_json()))
