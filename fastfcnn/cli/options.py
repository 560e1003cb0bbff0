"""Options several commands share, and the training options generated from TrainConfig."""
import functools
import inspect
from pathlib import Path
from typing import Optional

import typer

from ..config import defaults, flag, option_fields, show
from ..errors import UserError

DATA_HELP = ("An .npz file of arrays (x_train, y_train, x_test, y_test), an image folder (train/<class>/*.png "
             "and test/<class>/...), or a folder holding CIFAR-10. Default: CIFAR-10 from --data-dir.")
DATA_DIR_HELP = ("Folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz (downloaded there if "
                 "missing). Default: $FASTFCNN_DATA, else ~/.cache/fastfcnn.")
THREADS_HELP = "Threads for the kernels (and NumPy's BLAS). Default: all cores."

DataOption = typer.Option(None, "--data", help=DATA_HELP)
DataDirOption = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)
ImageSizeOption = typer.Option(None, "--image-size", metavar="HxW",
                               help="Resize every image of an image folder to height x width, e.g. 32x32.")
DownloadOption = typer.Option(True, "--download/--no-download",
                              help="Download CIFAR-10 if it is not in the data folder.")
ThreadsOption = typer.Option(None, "--threads", help=THREADS_HELP)
# evaluate and predict: float32 unless asked, whatever precision the model was trained in
PrecisionOption = typer.Option("fp32", "--precision", help="Matrix products in fp32 (default) or bf16 (needs "
                               "AVX512_BF16 with the numba engine).")


def parse_size(text: str | None) -> tuple | None:
    """'32x48' -> (32, 48) (height, width)."""
    if text is None:
        return None
    try:
        h, w = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--image-size must be HEIGHTxWIDTH like 32x32, got {text!r}") from None
    if h < 1 or w < 1:
        raise UserError(f"--image-size must be positive, got {text!r}")
    return h, w


def load(data: Optional[Path], data_dir: Optional[Path], download: bool, image_size: Optional[str]):
    from ..data import load_data
    return load_data(data, data_dir=data_dir, download=download, image_size=parse_size(image_size))


_CLI_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": str}


def config_options(fn):
    """Give the command `fn` one option per TrainConfig field (help and default from the field);
    fn receives them as `options`, a dict with None for each option not given."""
    from ..config import parse_hidden

    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "options"]
    for f in option_fields():
        default = defaults()[f.name]
        decl = f"{flag(f.name)}/--no-{f.name.replace('_', '-')}" if f.type == "bool" else flag(f.name)
        opt = typer.Option(None, decl, help=f"{f.metadata['help']} Default: {show(default)}.",
                           rich_help_panel="Training options")
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                        annotation=Optional[_CLI_TYPES[f.type]]))

    @functools.wraps(fn)
    def wrapper(**kwargs):
        options = {f.name: kwargs.pop(f.name) for f in option_fields()}
        if options["hidden"] is not None:
            options["hidden"] = parse_hidden(options["hidden"])
        return fn(options=options, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)
    return wrapper
