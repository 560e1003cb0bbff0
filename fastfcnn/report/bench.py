"""The bench panels, from a `fastfcnn bench --json` report: epoch time per engine (and PyTorch when
it was timed) and where the time of one training step goes, per net."""
from __future__ import annotations

import textwrap

import numpy as np

# Step phases as `fastfcnn bench` names them (gather, forward[l] ..., softmax_xent_grad,
# backward[l] ..., sgd_momentum_update), grouped into the five parts of a step.
PHASES = {"gather": "#8c8c8c", "forward": "#1f77b4", "loss": "#9467bd", "backward": "#ff7f0e", "update": "#2ca02c",
          "other": "#d62728"}
ENGINE_COLOURS = {"numba": "#1f77b4", "numpy": "#ff7f0e", "torch": "#d62728"}


def phase_group(name: str) -> str:
    # normalise: a phase of reports from before the batch was gathered normalised
    for prefix, group in (("gather", "gather"), ("normalise", "forward"), ("forward", "forward"),
                          ("softmax", "loss"), ("loss", "loss"),
                          ("backward", "backward"), ("sgd", "update"), ("adam", "update"), ("update", "update")):
        if name.startswith(prefix):
            return group
    return "other"


def grouped_phases(phases_ms: dict) -> dict:
    """{'gather': ms, 'forward': ms, ...} summed over layers, in step order."""
    out = dict.fromkeys(PHASES, 0.0)
    for name, ms in phases_ms.items():
        out[phase_group(name)] += ms
    return {k: v for k, v in out.items() if v > 0 or k != "other"}


def net_label(net: str, r: dict) -> str:
    layers, hidden = r.get("layers") or [], r.get("hidden")
    sizes = [layers[0][1]] + [l[2] for l in layers] if layers else hidden if isinstance(hidden, list) else []
    batch = f", batch {r['batch_size']}" if r.get("batch_size") else ""
    return f"{net} net {'-'.join(map(str, sizes))}{batch}"


def header(report: dict) -> str:
    """e.g. '2 threads, synthetic data (--quick: 2,000 images, 1 timed epoch)'."""
    n, repeats = report.get("n_train"), report.get("repeats")
    what = [f"{n:,} images" if isinstance(n, int) else ""]
    if isinstance(repeats, int):
        what.append(f"{repeats} timed epoch{'s' if repeats != 1 else ''}" if report.get("quick")
                    else f"median of {repeats} epochs")
    quick = "--quick: " if report.get("quick") else ""
    detail = ", ".join(w for w in what if w)
    threads = report.get("threads", "?")
    return f"{threads} thread{'' if threads == 1 else 's'}, {report.get('data', '?')} data ({quick}{detail})"


def versions(report: dict) -> str | None:
    v = report.get("versions")
    return "versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) if isinstance(v, dict) and v else None


def startup_line(report: dict) -> str | None:
    s = report.get("startup")
    try:
        return (f"JIT compile (cold cache) {s['compile_seconds']:.1f} s; start to first step "
                f"{s['cold_start_to_first_step_seconds']:.1f} s cold, {s['warm_start_to_first_step_seconds']:.2f} s "
                f"warm; peak memory {s['peak_rss_mb']:.0f} MB ({s['peak_rss_run']})")
    except (KeyError, TypeError, ValueError):
        return None


def draw_epochs(ax, r: dict) -> None:
    engines = list(r["engines"])
    seconds = np.array([r["engines"][e]["epoch_seconds_per_50k"] for e in engines])
    fastest = seconds.min()
    bars = ax.barh(range(len(engines)), seconds, color=[ENGINE_COLOURS.get(e, "#7f7f7f") for e in engines],
                   height=0.6)
    labels = [f"{s:.2f} s" + ("  (fastest)" if s == fastest else f"  ({s / fastest:.2f}x slower)") for s in seconds]
    ax.bar_label(bars, labels, padding=4, fontsize=10)
    ax.set_yticks(range(len(engines)), engines)
    ax.set_ylim(len(engines) - 0.5, -0.5)
    ax.set_xlim(0, seconds.max() * 1.6)
    ax.set_xlabel("seconds per epoch of 50,000 images (median)")
    ax.set_title("epoch time")
    ax.grid(axis="x", alpha=0.3)


def draw_phases(ax, r: dict) -> None:
    engines = [e for e in r["engines"] if r["engines"][e].get("phases_ms")]
    if not engines:
        ax.axis("off")
        ax.text(0.5, 0.5, "no per-phase timings", ha="center", va="center", transform=ax.transAxes)
        return
    groups = {e: grouped_phases(r["engines"][e]["phases_ms"]) for e in engines}
    total = max(sum(g.values()) for g in groups.values())
    for y, e in enumerate(engines):
        left = 0.0
        for name, ms in groups[e].items():
            bar = ax.barh(y, ms, left=left, color=PHASES[name], height=0.6, label=name if y == 0 else None,
                          edgecolor="white", linewidth=0.8)
            if ms > 0.07 * total:
                ax.bar_label(bar, [f"{ms:.2f}"], label_type="center", fontsize=9, color="white")
            left += ms
        extra = r["engines"][e]
        gflops = (f", matmuls {extra['matmul_gflops']:.0f} GFLOP/s ({extra['matmul_pct_of_sgemm']:.0f}% of sgemm)"
                  if "matmul_gflops" in extra and "matmul_pct_of_sgemm" in extra else "")
        ax.text(left + 0.01 * total, y, f"{left:.2f} ms{gflops}", va="center", fontsize=9)
    ax.set_yticks(range(len(engines)), engines)
    ax.set_ylim(len(engines) - 0.5, -0.5)
    ax.set_xlim(0, total * 1.75)
    ax.set_xlabel("milliseconds per training step (one batch)")
    ax.set_title("one step, phase by phase (labels in ms)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="phase")
    ax.grid(axis="x", alpha=0.3)


def bench_section(report: dict) -> tuple:
    nets = report["nets"]
    rows = [max(1.9, 0.75 * len(r["engines"]) + 1.3) for r in nets.values()]

    def draw(sf):
        parts = sf.subfigures(len(nets), 1, height_ratios=rows, squeeze=False)[:, 0]
        for part, (net, r) in zip(parts, nets.items()):
            epoch_ax, phase_ax = part.subplots(1, 2, width_ratios=[1, 1.5])
            draw_epochs(epoch_ax, r)
            draw_phases(phase_ax, r)
            part.suptitle(net_label(net, r), x=0.01, ha="left", fontsize=12)
        sf.suptitle(f"Speed (fastfcnn bench): {header(report)}", fontweight="bold", x=0.01, ha="left")
        details = [versions(report), startup_line(report)]
        sf.supxlabel("\n".join(textwrap.fill(d, 170) for d in details if d), x=0.01, ha="left", fontsize=10,
                     linespacing=1.4)
    return sum(rows) + 1.5, draw
