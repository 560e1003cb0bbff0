"""The rich tables of `fastfcnn bench`: per net, the thread-count sweep, and the one-line
summaries (per-step overhead, threading layer, instruction set, gemm_op's plans, start-up and
memory)."""


def render(report: dict, console) -> None:
    from rich.table import Table
    isa = report.get("isa", {})
    isa_note = ", AVX2 (AVX-512 masked)" if isa.get("avx2_run") else ""
    for net, r in report["nets"].items():
        engines = list(r["engines"])
        t = Table(title=f"{net} net {'-'.join(map(str, [r['layers'][0][1]] + [l[2] for l in r['layers']]))}, "
                        f"batch {r['batch_size']}, {_threads(report['threads'])}, {report['data']} data "
                        f"({report['n_train']} images){isa_note}")
        t.add_column("")
        for e in engines:
            t.add_column(e, justify="right")
        t.add_column("sgemm", justify="right")
        sg = r["sgemm"]
        per50k = {e: r["engines"][e]["epoch_seconds_per_50k"] for e in engines}
        t.add_row("epoch s (50k images, median)", *[f"{per50k[e]:.3f}" for e in engines], "")
        if all("epoch_seconds_fastest_per_50k" in r["engines"][e] for e in engines):
            t.add_row("epoch s (fastest)", *[f"{r['engines'][e]['epoch_seconds_fastest_per_50k']:.3f}"
                                             for e in engines], "")
        t.add_row("epoch GFLOP/s", *[f"{r['engines'][e]['epoch_gflops']:.0f}" for e in engines], "")
        t.add_row("speed-up of numba", *[f"{per50k[e] / per50k['numba']:.2f}x" for e in engines], "")
        if "ceiling" in report:
            t.add_row(f"epoch % of {report['ceiling']['size']}³ sgemm",
                      *[f"{r['engines'][e]['epoch_pct_of_ceiling']:.0f}%" if "epoch_pct_of_ceiling" in r["engines"][e]
                        else "" for e in engines], "")
        t.add_row("predict s (10k images, median)", *[f"{r['engines'][e]['predict_seconds_per_10k']:.3f}"
                                                       if "predict_seconds_per_10k" in r["engines"][e] else ""
                                                       for e in engines], "")
        phase_names = list(r["engines"]["numba"]["phases_ms"])
        for name in phase_names:
            t.add_row(f"  {name} ms", *[f"{r['engines'][e]['phases_ms'][name]:.3f}"
                                        if "phases_ms" in r["engines"][e] else "" for e in engines], "")
        t.add_row("  step ms (sum of phases)", *[f"{r['engines'][e]['step_ms']:.3f}"
                                                if "step_ms" in r["engines"][e] else "" for e in engines], "")
        for name, ms in sg["phases_ms"].items():
            t.add_row(f"  sgemm {name} ms", *["" for _ in engines], f"{ms:.3f}")
        t.add_row("matmul GFLOP/s", *[f"{r['engines'][e]['matmul_gflops']:.0f}"
                                      if "matmul_gflops" in r["engines"][e] else "" for e in engines],
                  f"{sg['gflops']:.0f}")
        t.add_row("matmul % of sgemm", *[f"{r['engines'][e]['matmul_pct_of_sgemm']:.0f}%"
                                         if "matmul_pct_of_sgemm" in r["engines"][e] else "" for e in engines],
                  "100%")
        console.print(t)
    sweep = report.get("sweep")
    if sweep and len(sweep["threads"]) > 1:
        render_sweep(report, console)
    c = report.get("ceiling")
    if c:
        rates = ", ".join(f"{g:.0f} GFLOP/s on {_threads(int(n))}" for n, g in c["gflops"].items())
        console.print(f"Ceiling: one {c['size']}³ float32 np.matmul (OpenBLAS sgemm), median: {rates}", highlight=False)
    o = report.get("overhead")
    if o:
        base = str(report["threads"])
        per = ", ".join(f"{e} {us:.0f} µs" for e, us in o["step_us"][base].items())
        regions = o.get("parallel_regions")
        console.print(f"Per-step overhead (seed net, batch {o['batch_size']}, median of {o['steps']} steps, "
                      f"{_threads(int(base))}): {per}" + (
                          f"; one step calls {regions['parallel_kernel_calls']} parallel kernels "
                          f"(at most {regions['prange_loops_max']} parallel regions)" if regions else ""),
                      highlight=False)
    th = report.get("threading")
    if th:
        env = ", ".join(f"{k}={th[k]}" for k in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY") if th.get(k))
        console.print(f"Numba threading layer: {th['layer']} ({env or 'NUMBA_THREADING_LAYER and OMP_WAIT_POLICY unset'}; "
                      f"loadable here: {', '.join(th['loadable'])})", highlight=False)
    if isa:
        console.print(f"Instruction set: {'AVX2 run (AVX-512 masked for every contender)' if isa.get('avx2_run') else 'native'}; "
                      f"kernels {'with' if isa.get('kernels_avx512') else 'without'} AVX-512"
                      + (f", OpenBLAS as {isa['blas_architecture']}" if isa.get("blas_architecture") else ""),
                      highlight=False)
    plans = report.get("gemm_b_plans")
    if plans:
        ways = {}
        for p in plans:
            shape = f"{'dw' if p['trans_a'] else 'dx'} {p['out'][0]}x{p['out'][1]} (k {p['k']})"
            ways.setdefault(shape, {}).setdefault("in place" if p["in_place"] else "packed", []).append(p["threads"])
        console.print("gemm_op's right operand, as timed on the first calls of each shape: " + "; ".join(
            f"{shape} " + ", ".join(f"{way} on {'/'.join(map(str, sorted(t)))} thr" for way, t in w.items())
            for shape, w in ways.items()), highlight=False)
    s = report["startup"]
    console.print(f"JIT compile (cold cache): {s['compile_seconds']:.1f} s; start to first step: "
                  f"{s['cold_start_to_first_step_seconds']:.1f} s cold, "
                  f"{s['warm_start_to_first_step_seconds']:.2f} s warm; peak RSS {s['peak_rss_mb']:.0f} MB "
                  f"({s['peak_rss_run']})", highlight=False)


def _threads(n: int) -> str:
    return f"{n} thread{'' if n == 1 else 's'}"


def render_sweep(report: dict, console) -> None:
    """Epoch seconds (50k images) per net and thread count, each with its speed-up over the same
    engine at the smallest count."""
    from rich.table import Table
    sweep = report["sweep"]
    base = sweep["base_threads"]
    engines = []
    for per_net in sweep["epoch_seconds_per_50k"].values():
        for r in per_net.values():
            engines += [e for e in r if e not in engines]
    t = Table(title=f"Epoch seconds (50k images) by thread count; in brackets the speed-up over the same "
                    f"engine on {_threads(base)}")
    t.add_column("net")
    t.add_column("threads", justify="right")
    for e in engines:
        t.add_column(e, justify="right")
    for net in report["nets"]:
        for n in sweep["threads"]:
            sec = sweep["epoch_seconds_per_50k"][str(n)][net]
            up = sweep["speedup_vs_base"][str(n)][net]
            t.add_row(net, str(n), *[f"{sec[e]:.3f} ({up[e]:.2f}x)" if e in sec else "" for e in engines])
    console.print(t)
    o = report.get("overhead")
    if o:
        t = Table(title=f"Per-step overhead: seed net, batch 1, median µs of {o['steps']} steps")
        t.add_column("threads", justify="right")
        oe = []
        for per in o["step_us"].values():
            oe += [e for e in per if e not in oe]
        for e in oe:
            t.add_column(e, justify="right")
        for n in sweep["threads"]:
            per = o["step_us"][str(n)]
            t.add_row(str(n), *[f"{per[e]:.0f}" if e in per else "" for e in oe])
        console.print(t)
