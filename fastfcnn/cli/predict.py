"""`fastfcnn predict`: the most probable classes of image files or .npz rows."""
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from . import app, err, user_errors
from .options import PrecisionOption, ThreadsOption


@app.command()
@user_errors
def predict(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A model.npz written by `fastfcnn train`."),
    inputs: List[Path] = typer.Argument(..., metavar="INPUT...", help="Image files (PNG, JPEG, ...) or .npz "
                                        "files with an array x (one prediction per row)."),
    top_k: int = typer.Option(3, "--top-k", help="How many classes to print per input."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per input."),
    resize: bool = typer.Option(False, "--resize", help="Resize images of another size to the model's."),
    flip_tta: bool = typer.Option(False, "--flip-tta", help="Average each image's logits with its mirror image's."),
    engine: str = typer.Option("numba", help="numba or numpy."),
    precision: str = PrecisionOption,
    threads: Optional[int] = ThreadsOption,
):
    """Print the top classes of each input and their probabilities."""
    from ..engine import get_engine, set_threads
    from ..errors import UserError
    from ..model import load_model
    from ..network import predict_proba
    from ..predict import load_inputs, top_k as best

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    E = get_engine(engine, precision)
    set_threads(threads, engine)
    model = load_model(model_path)
    if flip_tta and model.image_shape is None:
        raise UserError("--flip-tta needs a model trained on images")
    items = load_inputs(model, inputs, resize=resize)
    if not items:
        raise UserError("no rows to predict: every .npz given has an empty x")
    x = np.concatenate([rows for _, rows in items])
    started = time.perf_counter()
    probs = predict_proba(E, model, x, flip_tta=flip_tta)
    classes, p = best(probs, top_k)
    seconds = time.perf_counter() - started
    names = model.class_names
    lines = []
    for (name, _), cls, pr in zip(items, classes, p):
        if as_json:
            lines.append(json.dumps({"input": name, "top": [{"class": names[c], "index": int(c),
                                                             "probability": float(q)} for c, q in zip(cls, pr)]}))
        else:
            lines.append(f"{name}\t" + "  ".join(f"{names[c]} {q:.3f}" for c, q in zip(cls, pr)))
    sys.stdout.write("\n".join(lines) + "\n")
    if not as_json:
        err.print(f"{len(x)} rows predicted in {seconds:.3f} s", highlight=False)
