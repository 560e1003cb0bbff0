"""`fastfcnn evaluate`: a saved model's loss and accuracy on a test set."""
import json
from pathlib import Path
from typing import Optional

import typer

from . import app, say, user_errors
from .options import (DataDirOption, DataOption, DownloadOption, ImageSizeOption, PrecisionOption,
                      ThreadsOption, load)


@app.command()
@user_errors
def evaluate(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A model.npz written by `fastfcnn train`."),
    data: Optional[Path] = DataOption,
    data_dir: Optional[Path] = DataDirOption,
    image_size: Optional[str] = ImageSizeOption,
    engine: str = typer.Option("numba", help="numba or numpy."),
    precision: str = PrecisionOption,
    threads: Optional[int] = ThreadsOption,
    download: bool = DownloadOption,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    flip_tta: bool = typer.Option(False, "--flip-tta", help="Test-time augmentation: average the logits of "
                                  "each image and its mirror image."),
):
    """Report a saved model's accuracy on the test set of a dataset (CIFAR-10 by default)."""
    from ..engine import get_engine, set_threads
    from ..errors import UserError
    from ..predict import evaluate_on
    from ..model import load_model

    E = get_engine(engine, precision)
    set_threads(threads, engine)
    model = load_model(model_path)
    dataset = load(data, data_dir, download, image_size)
    if flip_tta and model.image_shape is None:
        raise UserError("--flip-tta needs a model trained on images")
    loss, acc = evaluate_on(E, model, dataset, flip_tta=flip_tta)
    result = {"test_accuracy": acc, "test_loss": loss, "n_test": int(len(dataset.y_test)),
              "model": str(model_path), "sizes": model.sizes, "engine": engine, "precision": precision,
              "flip_tta": flip_tta}
    if as_json:
        print(json.dumps(result))
    else:
        tta = ", flip TTA" if flip_tta else ""
        unit = "rows" if model.image_shape is None else "images"
        say(f"test accuracy {100 * acc:.2f}%  loss {loss:.4f}  ({len(dataset.y_test)} {unit}{tta}, "
            f"net {'-'.join(map(str, model.sizes))})")
