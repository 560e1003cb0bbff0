"""The `fastfcnn` command: one thin module per subcommand (parse, call the library, print)."""
import functools

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train fully connected networks on CPU with hand-written parallel Numba kernels.")
out = Console()
err = Console(stderr=True)


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit code 1, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written")
            raise typer.Exit(130)
    return wrapper


def say(text: str) -> None:
    out.print(text, highlight=False, soft_wrap=True, markup=False)


from . import bench, evaluate, predict, report, train, tune  # noqa: E402,F401  (each registers its command on app)


def main():
    app()


if __name__ == "__main__":
    main()
