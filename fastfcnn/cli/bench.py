"""`fastfcnn bench`: the speed of both engines (and PyTorch when present) on the bench nets."""
from pathlib import Path
from typing import Optional

import typer

from . import app, err, out, user_errors


@app.command()
@user_errors
def bench(
    nets: str = typer.Option("seed,wide", help="Nets to time, comma separated: seed (64,64 at batch 128), wide (1024,1024 at batch 256)."),
    data_dir: Optional[Path] = typer.Option(None, help="Time on the real CIFAR-10 train split in this folder instead of synthetic data."),
    threads: Optional[int] = typer.Option(None, help="Threads for the kernels, BLAS and torch. Default: all cores."),
    repeats: Optional[int] = typer.Option(None, help="Timed epochs per engine (median reported). Default: 3, or 1 with --quick."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 2,000 images, one timed repeat."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
):
    """Time training epochs, kernel phases, GFLOP/s against sgemm, JIT start-up and peak memory."""
    from ..bench.common import NETS
    from ..bench.run import render, run
    from ..errors import UserError
    from ..fit import check_out_dir, make_out_dir
    from ..files import save_json

    chosen = [n.strip() for n in nets.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in NETS]
    if unknown or not chosen:
        raise UserError(f"--nets must be a comma-separated subset of {', '.join(NETS)}, got {nets!r}")
    if repeats is not None and repeats < 1:
        raise UserError("--repeats must be at least 1")
    if json_path is not None:
        check_out_dir(json_path.parent)
    report = run(chosen, threads, data_dir, quick, repeats, log=lambda m: err.print(f"bench: {m}", highlight=False))
    render(report, out)
    if json_path is not None:
        make_out_dir(json_path.parent)
        save_json(json_path, report)
