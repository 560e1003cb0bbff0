"""`fastfcnn bench`: the speed of both engines (and PyTorch / JAX when present) on the bench nets."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from . import app, err, out, user_errors


def parse_threads(text: Optional[str]) -> list:
    """--threads: None (all cores), "4", or a comma list "1,2,4" -> [None] / [4] / [1, 2, 4]."""
    from ..errors import UserError
    if text is None:
        return [None]
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UserError(f"--threads must be a number of threads or a comma-separated list of them "
                            f"(e.g. 1,2), got {text!r}")
        counts.append(int(part))
    return counts


def child_args(nets: str, data_dir: Optional[Path], threads: Optional[str], repeats: Optional[int], quick: bool,
               json_path: Optional[Path], precision: str = "fp32") -> list:
    """The `fastfcnn bench` arguments that repeat these options (for the --avx2 subprocess)."""
    args = ["bench", "--nets", nets, "--precision", precision]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    if threads is not None:
        args += ["--threads", threads]
    if repeats is not None:
        args += ["--repeats", str(repeats)]
    if quick:
        args.append("--quick")
    if json_path is not None:
        args += ["--json", str(json_path)]
    return args


@app.command()
@user_errors
def bench(
    nets: str = typer.Option("seed,wide", help="Nets to time, comma separated: seed (64,64 at batch 128), wide "
                             "(1024,1024 at batch 256), or your own as hidden widths and batch size, 768-768@256."),
    data_dir: Optional[Path] = typer.Option(None, help="Time on the real CIFAR-10 train split in this folder instead of synthetic data."),
    threads: Optional[str] = typer.Option(None, help="Threads for the kernels, BLAS, torch and JAX: a number, or a comma-separated list (1,2) to time every engine at each count and its speed-up over its own time at the smallest. Default: all cores."),
    repeats: Optional[int] = typer.Option(None, help="Timed epochs per engine (median reported). Default: 3, or 1 with --quick."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 2,000 images, one timed repeat."),
    avx2: bool = typer.Option(False, "--avx2", help="Mask AVX-512 for every contender (kernels compiled for AVX2, OpenBLAS as Haswell, PyTorch and XLA capped at AVX2), in a subprocess."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 to time the numba engine in bf16 too (column "
                                  "numba-bf16; needs AVX512_BF16), its products' GFLOP/s beside fp32's."),
):
    """Time training epochs, kernel phases, GFLOP/s against sgemm, per-step overhead, JIT start-up and peak memory."""
    from ..bench.common import net_config
    from ..bench.run import ISA_VARIABLE, avx2_env, render, run
    from ..errors import UserError
    from ..fit import check_out_dir, make_out_dir
    from ..files import save_json

    chosen = [n.strip() for n in nets.split(",") if n.strip()]
    if not chosen:
        raise UserError(f"--nets needs at least one net, got {nets!r}")
    for net in chosen:
        try:
            net_config(net)
        except ValueError as e:
            raise UserError(f"--nets: {e}") from None
    if repeats is not None and repeats < 1:
        raise UserError("--repeats must be at least 1")
    counts = parse_threads(threads)
    from ..config import PRECISIONS
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if json_path is not None:
        check_out_dir(json_path.parent)
    if avx2 and os.environ.get(ISA_VARIABLE) != "avx2":
        # NUMBA_CPU_FEATURES is read before Numba compiles anything: a fresh interpreter
        err.print("bench: AVX2 run in a subprocess (AVX-512 masked; the kernels compile anew for it)", highlight=False)
        proc = subprocess.run([sys.executable, "-m", "fastfcnn.cli",
                               *child_args(nets, data_dir, threads, repeats, quick, json_path, precision)],
                              env=avx2_env(os.environ))
        if proc.returncode:
            raise typer.Exit(proc.returncode)
        return
    report = run(chosen, counts, data_dir, quick, repeats, precision=precision,
                 log=lambda m: err.print(f"bench: {m}", highlight=False, markup=False))
    render(report, out)
    if json_path is not None:
        make_out_dir(json_path.parent)
        save_json(json_path, report)
