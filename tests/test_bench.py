"""`fastfcnn bench --quick` end to end: every figure the JSON promises is there and sane (no timing
assertions: the machine is shared)."""
import json

from typer.testing import CliRunner

from fastfcnn.cli import app


def positive(x):
    return isinstance(x, (int, float)) and x > 0


def test_bench_quick_json(tmp_path):
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    assert report["quick"] and report["threads"] >= 1
    assert set(report["nets"]) == {"seed", "wide"}
    for net in report["nets"].values():
        assert positive(net["epoch_gflop"])
        assert positive(net["sgemm"]["gflops"]) and all(positive(v) for v in net["sgemm"]["phases_ms"].values())
        assert {"numba", "numpy"} <= set(net["engines"])
        for name in ("numba", "numpy"):
            e = net["engines"][name]
            assert positive(e["epoch_seconds_median"]) and positive(e["epoch_seconds_per_50k"])
            assert all(positive(t) for t in e["epoch_seconds"])
            phases = e["phases_ms"]
            assert "gather" in phases and "sgd_momentum_update" in phases and "softmax_xent_grad" in phases
            assert any(p.startswith("forward[0]") for p in phases) and any(p.startswith("backward[0]") for p in phases)
            assert all(positive(t) for t in phases.values())
            assert positive(e["matmul_gflops"]) and 0 < e["matmul_pct_of_sgemm"] < 1000
            assert positive(e["predict_seconds_per_10k"])
        assert positive(net["speedup"]["numba_vs_numpy"])
        if "torch" in net["engines"]:
            assert positive(net["engines"]["torch"]["epoch_seconds_median"])
            assert positive(net["speedup"]["numba_vs_torch"])
    s = report["startup"]
    for key in ("compile_seconds", "cold_start_to_first_step_seconds", "warm_start_to_first_step_seconds",
                "peak_rss_mb"):
        assert positive(s[key]), key
    assert "numba" in result.output and "sgemm" in result.output


def test_bench_rejects_unknown_net():
    result = CliRunner().invoke(app, ["bench", "--nets", "seed,huge"])
    assert result.exit_code == 1 and "--nets" in result.output
