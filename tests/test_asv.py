"""CI smoke test of the asv suite in bench/: every benchmark is discovered and valid (`asv check`,
all params), and each runs once on the installed fastfcnn (`asv run --python=same --quick`, with
FASTFCNN_BENCH_QUICK=1: seed net, 2,000 images). Results, machine file and benchmarks.json go to a
temporary directory, so a developer's bench/.asv/ is left alone. About 30 s on 2 cores."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

asv_util = pytest.importorskip("asv.util", reason="asv is not installed (pip install -e '.[dev]')")

BENCH = Path(__file__).resolve().parents[1] / "bench"


def asv(tmp_path, benchmark_dir, *args, quick_data=True):
    """Run `asv <args>` on a copy of bench/asv.conf.json that writes only below tmp_path."""
    conf = asv_util.load_json(BENCH / "asv.conf.json", js_comments=True)
    conf |= {"repo": str(BENCH.parent), "benchmark_dir": str(benchmark_dir),
             "results_dir": str(tmp_path / "results"), "html_dir": str(tmp_path / "html"),
             "env_dir": str(tmp_path / "env")}
    (tmp_path / "asv.conf.json").write_text(json.dumps(conf))
    env = os.environ | {"HOME": str(tmp_path)}  # asv keeps its machine file in ~/.asv-machine.json
    env.pop("FASTFCNN_BENCH_QUICK", None)
    if quick_data:
        env["FASTFCNN_BENCH_QUICK"] = "1"
    cmd = [sys.executable, "-m", "asv", "--config", str(tmp_path / "asv.conf.json"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def machine(tmp_path):
    done = asv(tmp_path, BENCH / "benchmarks", "machine", "--yes", "--machine", "smoke")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_benchmark_is_valid_and_runs_once(tmp_path):
    machine(tmp_path)
    check = asv(tmp_path, BENCH / "benchmarks", "check", "--python=same", quick_data=False)
    assert check.returncode == 0 and "No problems found" in check.stdout, check.stdout + check.stderr
    run = asv(tmp_path, BENCH / "benchmarks", "run", "--python=same", "--quick", "--dry-run",
              "--show-stderr", "--machine", "smoke")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "failed" not in out and "Traceback" not in out, out
    for name in ("time_phase", "track_gflops", "time_epoch", "peakmem_train_epoch", "track_speedup",
                 "timeraw_cold_import_and_jit"):
        assert name in out, f"{name} did not run:\n{out}"


def test_a_raising_benchmark_fails_the_run(tmp_path):
    """The smoke test above relies on asv exiting non-zero when a benchmark raises."""
    broken = tmp_path / "broken_benchmarks"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "bench_broken.py").write_text("def time_raises():\n    raise RuntimeError('boom')\n")
    machine(tmp_path)
    run = asv(tmp_path, broken, "run", "--python=same", "--quick", "--dry-run", "--machine", "smoke")
    assert run.returncode != 0 and "failed" in run.stdout, run.stdout + run.stderr
