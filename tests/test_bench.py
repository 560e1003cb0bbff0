"""`fastfcnn bench --quick` end to end: every figure the JSON promises is there and sane (no timing
assertions: the machine is shared). One quick run, over thread counts 1 and 2 where there are two
cores, serves every test that reads a report."""
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fastfcnn.cli import app
from fastfcnn.engine import max_threads, set_threads
from fastfcnn.kernels import bf16


def positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def positive_int(x):
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


COUNTS = [1, 2] if max_threads() >= 2 else [1]
BF16_AVAILABLE = bf16.AVAILABLE


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """(CLI output, JSON report) of `fastfcnn bench --quick --threads 1,2` (1 on a 1-core machine),
    with --precision bf16 where the CPU has AVX512_BF16."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    precision = ["--precision", "bf16"] if BF16_AVAILABLE else []
    result = CliRunner().invoke(app, ["bench", "--quick", "--threads", ",".join(map(str, COUNTS)),
                                      "--json", str(path), *precision])
    set_threads(None)             # the run leaves the kernels and BLAS on its first count
    assert result.exit_code == 0, result.output
    return result.output, json.loads(path.read_text())


def check_net(net):
    assert positive(net["epoch_gflop"])
    assert positive(net["sgemm"]["gflops"]) and all(positive(v) for v in net["sgemm"]["phases_ms"].values())
    assert {"numba", "numpy"} <= set(net["engines"])
    for name in ("numba", "numpy"):
        e = net["engines"][name]
        assert positive(e["epoch_seconds_median"]) and positive(e["epoch_seconds_per_50k"])
        assert all(positive(t) for t in e["epoch_seconds"])
        fastest = e["epoch_seconds_fastest_per_50k"]
        assert fastest == pytest.approx(min(e["epoch_seconds"]) / e["epoch_seconds_median"] * e["epoch_seconds_per_50k"])
        assert 0 < fastest <= e["epoch_seconds_per_50k"]
        phases = e["phases_ms"]
        assert "gather" in phases and "sgd_momentum_update" in phases and "softmax_xent_grad" in phases
        assert any(p.startswith("forward[0]") for p in phases) and any(p.startswith("backward[0]") for p in phases)
        assert all(positive(t) for t in phases.values())
        # a ratio of two timings: on a busy machine a 2-thread sgemm can be 50x slower than usual
        assert positive(e["matmul_gflops"]) and positive(e["matmul_pct_of_sgemm"])
        assert positive(e["predict_seconds_per_10k"])
        # the batch is gathered normalised, as a step does it: the products are timed alone
        assert list(phases)[:2] == ["gather", next(p for p in phases if p.startswith("forward[0]"))]
        assert positive(e["epoch_pct_of_ceiling"])
    assert positive(net["speedup"]["numba_vs_numpy"])
    for peer in ("torch", "jax"):
        if peer in net["engines"]:
            assert positive(net["engines"][peer]["epoch_seconds_median"])
            assert positive(net["engines"][peer]["epoch_seconds_per_50k"])
            assert positive(net["speedup"][f"numba_vs_{peer}"])
    regions = net["parallel_regions_per_step"]
    assert positive_int(regions["parallel_kernel_calls"])
    assert regions["prange_loops_max"] >= regions["parallel_kernel_calls"]
    assert sum(regions["by_kernel"].values()) == regions["parallel_kernel_calls"]


def test_bench_quick_json(quick):
    output, report = quick
    assert report["quick"] and report["threads"] == COUNTS[0] and report["thread_counts"] == COUNTS
    assert set(report["nets"]) == {"seed", "wide"}
    for net in report["nets"].values():
        check_net(net)
    s = report["startup"]
    for key in ("compile_seconds", "cold_start_to_first_step_seconds", "warm_start_to_first_step_seconds",
                "peak_rss_mb"):
        assert positive(s[key]), key
    assert "numba" in output and "sgemm" in output
    c = report["ceiling"]
    assert c["size"] == 1024 and set(c["gflops"]) == {str(n) for n in COUNTS} and all(map(positive, c["gflops"].values()))
    for n in COUNTS:                          # each engine's epoch GFLOP/s as a share of the 1024^3 product
        e = report["sweep"]["runs"][str(n)]["seed"]["engines"]["numba"]
        assert e["epoch_pct_of_ceiling"] == pytest.approx(100 * e["epoch_gflops"] / c["gflops"][str(n)])
    text = " ".join(output.split())
    assert "Ceiling: one 1024³ float32 np.matmul" in text and "epoch % of" in text   # a table row, maybe wrapped
    from fastfcnn.report.load import bench_problem
    assert bench_problem(report) is None         # `fastfcnn report --bench` still reads it


def test_bench_sweep_json(quick):
    output, report = quick
    sweep = report["sweep"]
    assert sweep["threads"] == COUNTS and sweep["base_threads"] == 1
    assert set(sweep["runs"]) == {str(n) for n in COUNTS}
    assert sweep["runs"][str(COUNTS[0])] == report["nets"]       # the top level is the first count
    for n in COUNTS:
        for net in ("seed", "wide"):
            check_net(sweep["runs"][str(n)][net])
            epochs, ups = sweep["epoch_seconds_per_50k"][str(n)][net], sweep["speedup_vs_base"][str(n)][net]
            assert {"numba", "numpy"} <= set(epochs) and set(ups) == set(epochs)
            assert all(positive(v) for v in epochs.values()) and all(positive(v) for v in ups.values())
            if n == 1:
                assert all(v == 1.0 for v in ups.values())
            assert epochs["numba"] == sweep["runs"][str(n)][net]["engines"]["numba"]["epoch_seconds_per_50k"]
    if len(COUNTS) > 1:
        assert "by thread count" in " ".join(output.split())


def test_bench_overhead_and_regions(quick):
    output, report = quick
    o = report["overhead"]
    assert o["net"] == "seed" and o["batch_size"] == 1 and positive_int(o["steps"])
    assert set(o["step_us"]) == {str(n) for n in COUNTS}
    for per in o["step_us"].values():
        assert {"numba", "numpy"} <= set(per) and all(positive(v) for v in per.values())
    regions = o["parallel_regions"]
    assert positive_int(regions["parallel_kernel_calls"]) and positive_int(regions["prange_loops_max"])
    # one step of the seed net on one image: the normalised gather, 3 forward products, 3 dW and 2 dX
    # products, and the update of all weights (one flat buffer); the loss, the bias gradients and
    # the update of the biases run serially (kernels/config.sized_kernel)
    assert regions["by_kernel"] == {"gather_normalise": 1, "gemm_nt": 3, "_gemm_op": 5, "sgd_momentum_update": 1}
    assert regions["parallel_kernel_calls"] == 10
    text = " ".join(output.split())              # rich wraps lines at the console's width
    assert "Per-step overhead" in text and "parallel kernels" in text


@pytest.mark.skipif(not BF16_AVAILABLE, reason="this CPU has no AVX512_BF16")
def test_bench_bf16_column(quick):
    output, report = quick
    assert report["precision"] == "bf16" and "numba-b" in output     # the column (rich may wrap its name)
    for n in COUNTS:
        for net in ("seed", "wide"):
            e = report["sweep"]["runs"][str(n)][net]["engines"]["numba-bf16"]
            assert positive(e["epoch_seconds_per_50k"]) and positive(e["matmul_gflops"])
            assert any(p.startswith("forward[0]") for p in e["phases_ms"])
        assert positive(report["overhead"]["step_us"][str(n)]["numba-bf16"])


def test_bench_rejects_an_unknown_precision():
    result = CliRunner().invoke(app, ["bench", "--quick", "--precision", "fp16"])
    assert result.exit_code == 1 and "--precision must be one of fp32, bf16" in result.output


def test_bench_threading_layer_and_isa(quick):
    output, report = quick
    th = report["threading"]
    assert th["layer"] in ("omp", "tbb", "workqueue") and th["layer"] in th["loadable"]
    assert "Numba threading layer: " + th["layer"] in output
    isa = report["isa"]
    assert isa["avx2_run"] is False and isinstance(isa["kernels_avx512"], bool)


def test_bench_reports_how_gemm_op_reads_each_backward_product_s_right_operand(quick):
    """Every dw and dx product of both nets, at every count, was timed both ways and decided."""
    output, report = quick
    plans = {(tuple(p["out"]), p["k"], p["trans_a"], p["threads"]): p["in_place"] for p in report["gemm_b_plans"]}
    assert all(isinstance(way, bool) for way in plans.values())
    for net in report["nets"].values():
        for n in COUNTS:
            for l, (batch, fan_in, fan_out) in enumerate(net["layers"]):
                assert ((fan_out, fan_in), batch, True, n) in plans                  # dw = dy.T @ x
                if l > 0:
                    assert ((batch, fan_in), fan_out, False, n) in plans             # dx = dy @ w
    assert "gemm_op's right operand, as timed on the first calls of each shape: dw " in output


def test_bench_jax_peer(quick):
    from fastfcnn.bench import jax_epoch
    _, report = quick
    if jax_epoch.available():
        assert "jax" in report["versions"]
        assert all("jax" in r["engines"] for r in report["nets"].values())
        assert all("jax" in per for per in report["overhead"]["step_us"].values())
    else:
        assert all("jax" not in r["engines"] for r in report["nets"].values())


def test_jax_peer_skips_when_absent(monkeypatch):
    """Without an importable jax the peer is left out, no worker starts, nothing fails."""
    from fastfcnn.bench import jax_epoch
    from fastfcnn.bench.run import Peers
    monkeypatch.setitem(sys.modules, "jax", None)          # `import jax` raises ImportError
    assert not jax_epoch.available()
    peers = Peers([1], {"n_train": 10}, log=lambda m: None)
    assert peers.jax_workers == {} and "jax" not in peers.versions()
    peers.close()


def test_bench_rejects_unknown_net():
    result = CliRunner().invoke(app, ["bench", "--nets", "seed,huge"])
    assert result.exit_code == 1 and "--nets" in result.output


@pytest.mark.parametrize("nets", ["seed,768-x@256", "@256", "64-0@128", "64-64@0", "64-64@", "64--64", ","])
def test_bench_rejects_bad_net_specs(nets):
    result = CliRunner().invoke(app, ["bench", "--nets", nets])
    assert result.exit_code == 1 and "--nets" in result.output and "Traceback" not in result.output


def test_bench_times_a_net_of_your_own():
    """--nets takes hidden widths and a batch size (768-768@256) beside the named nets; bench_net
    builds that net and reports its shapes."""
    from fastfcnn.bench import common
    from fastfcnn.bench.timing import bench_net

    assert common.net_config("wide") == {"hidden": [1024, 1024], "batch_size": 256}
    assert common.net_config("768-768@256") == {"hidden": [768, 768], "batch_size": 256}
    assert common.net_config("100") == {"hidden": [100], "batch_size": 128}
    data = common.synthetic_cifar(n_train=64, n_test=8)
    result = bench_net("40-24@16", data, ["numba"], 1, True, [1], log=lambda m: None)[1]
    set_threads(None)
    assert result["hidden"] == [40, 24] and result["batch_size"] == 16
    assert result["layers"] == [[16, 3072, 40], [16, 40, 24], [16, 24, 10]]
    assert result["epoch_gflop"] == pytest.approx(2 * 64 * (2 * 3072 * 40 + 3 * 40 * 24 + 3 * 24 * 10) / 1e9)
    assert positive(result["engines"]["numba"]["epoch_seconds_per_50k"])


@pytest.mark.parametrize("threads", ["0", "1,x", "2,,", "-1"])
def test_bench_rejects_bad_threads(threads):
    result = CliRunner().invoke(app, ["bench", "--threads", threads])
    assert result.exit_code == 1 and "--threads" in result.output


def test_bench_rejects_too_many_threads():
    result = CliRunner().invoke(app, ["bench", "--quick", "--threads", f"1,{max_threads() + 1}"])
    assert result.exit_code == 1 and "--threads must be between 1 and" in result.output


def test_parse_threads():
    from fastfcnn.cli.bench import parse_threads
    assert parse_threads(None) == [None] and parse_threads("2") == [2] and parse_threads(" 1, 2 ") == [1, 2]


# ---------------------------------------------------------------------------------------------
# NUMBA_THREADING_LAYER: a layer that cannot load is one error line, not a traceback

def tbb_loads() -> bool:
    from fastfcnn.engine import loadable_threading_layers
    return "tbb" in loadable_threading_layers()


@pytest.mark.parametrize("layer", ["nonsense", "tbb"])
@pytest.mark.parametrize("command", ["bench", "train"])
def test_bad_threading_layer_is_one_line(layer, command, tmp_path):
    if layer == "tbb" and tbb_loads():
        pytest.skip("the tbb layer loads here")
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((40, 5), dtype=np.float32), y_train=np.arange(40) % 2,
             x_test=rng.random((10, 5), dtype=np.float32), y_test=np.arange(10) % 2)
    args = {"bench": ["bench", "--quick"],
            "train": ["train", "--data", "d.npz", "--hidden", "4", "--epochs", "1", "--out", "run"]}[command]
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
    proc = subprocess.run([sys.executable, "-m", "fastfcnn.cli", *args], env=env, capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: NUMBA_THREADING_LAYER="), proc.stderr
    assert "loadable here: " in lines[0]


# ---------------------------------------------------------------------------------------------
# --avx2: a subprocess with AVX-512 masked for everyone

def test_avx2_env():
    from fastfcnn.bench.run import avx2_env
    base = {"PATH": "/bin", "XLA_FLAGS": "--xla_cpu_max_isa=AVX512 --xla_dump_to=/tmp/x", "OPENBLAS_CORETYPE": "SkylakeX"}
    env = avx2_env(base, cpu_features="+avx2,-avx512f,-avx512bw")
    assert env["NUMBA_CPU_FEATURES"] == "+avx2,-avx512f,-avx512bw"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert env["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", "--xla_cpu_max_isa=AVX2"]
    assert env["FASTFCNN_BENCH_ISA"] == "avx2" and env["PATH"] == "/bin"
    assert base["OPENBLAS_CORETYPE"] == "SkylakeX"                   # the caller's dict is left alone
    default = avx2_env({})                                            # this CPU's features, AVX-512 off
    assert "+avx512f" not in default["NUMBA_CPU_FEATURES"].split(",")


def test_avx2_flag_reruns_in_a_subprocess(monkeypatch, tmp_path):
    import fastfcnn.cli.bench as cli_bench
    calls = []

    def fake_run(args, env):
        calls.append((args, env))
        return subprocess.CompletedProcess(args, 0)
    monkeypatch.setattr(cli_bench.subprocess, "run", fake_run)
    monkeypatch.delenv("FASTFCNN_BENCH_ISA", raising=False)
    out = tmp_path / "b.json"
    result = CliRunner().invoke(app, ["bench", "--avx2", "--quick", "--nets", "seed", "--threads", "1,2",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    (args, env), = calls
    assert args[:3] == [sys.executable, "-m", "fastfcnn.cli"] and "--avx2" not in args
    assert args[3:] == ["bench", "--nets", "seed", "--precision", "fp32", "--threads", "1,2", "--quick",
                        "--json", str(out)]
    assert env["FASTFCNN_BENCH_ISA"] == "avx2" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert "+avx512f" not in env["NUMBA_CPU_FEATURES"].split(",")


def test_avx2_child_failure_is_the_exit_code(monkeypatch):
    import fastfcnn.cli.bench as cli_bench
    monkeypatch.setattr(cli_bench.subprocess, "run", lambda args, env: subprocess.CompletedProcess(args, 3))
    monkeypatch.delenv("FASTFCNN_BENCH_ISA", raising=False)
    assert CliRunner().invoke(app, ["bench", "--avx2", "--quick"]).exit_code == 3


def test_time_phases_takes_each_phase_in_its_fastest_repeat(monkeypatch):
    from bench import timing
    monkeypatch.setattr(timing, "SETTLE_SECONDS", 0.0)
    # a fake clock: each call of a phase advances it by the phase's cost in that call, so the
    # timing is exact; "slow" costs 5 ms in every repeat but one, where it costs 1 ms
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    calls = {"slow": 0, "steady": 0}
    # calls 0 and 1: warm-up and calibration; then 2 calls a repeat: calls 4 and 5 are the second
    costs = {"slow": lambda i: 1e-3 if i in (4, 5) else 5e-3, "steady": lambda i: 2e-3}

    def phase(name):
        def run():
            clock[0] += costs[name](calls[name])
            calls[name] += 1
        return run
    sets = {"a": {"slow": (phase("slow"), 0), "steady": (phase("steady"), 0)}}
    seconds = timing.time_phases(sets, 3, 0.0141)     # calibration: a pass takes 7 ms, so 2 calls a repeat
    assert calls == {"slow": 2 + 3 * 2, "steady": 2 + 3 * 2}
    assert seconds["a"]["slow"] == pytest.approx(1e-3)       # the second repeat; the median is 5 ms
    assert seconds["a"]["steady"] == pytest.approx(2e-3)


def test_each_round_visits_the_contenders_in_another_order():
    from bench.timing import rotated
    assert [rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert rotated([], 3) == []
