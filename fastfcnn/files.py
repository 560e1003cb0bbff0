"""Atomic file writes: a crash or a full disk never leaves a half-written model or metrics file."""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import UserError


def write_atomic(path: Path, write) -> None:
    """write(f) into a temporary file beside `path` (usual permissions), fsync it, rename it over
    `path`, and fsync the folder: readers see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes the file private; a run's files are not secret
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after os.replace could otherwise lose it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return                      # e.g. a platform without directory file descriptors
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path, names) -> list:
    """Delete the temporary files that a killed write_atomic of one of `names` left in `folder`;
    returns their names. Other files, even ones that look alike, are left alone."""
    removed = []
    for tmp in (t for name in names for t in Path(folder).glob(f".{name}.*.tmp")):
        try:
            tmp.unlink()
            removed.append(tmp.name)
        except OSError:
            pass
    return removed


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez `arrays` to `path` through a temporary file in the same directory."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


def save_json(path: Path, obj) -> None:
    """Write `obj` as indented JSON to `path` through a temporary file in the same directory."""
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_npz(path: Path, what: str, read):
    """read(z) for the open .npz archive at `path` (arrays only, never pickles). A missing file,
    an .npy array, a corrupt archive or member, or a missing key is one UserError naming the file
    as `what` ("fastfcnn model", ...); UserErrors from `read` pass through."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):
            raise UserError(f"not a readable {what}: {path} holds a single .npy array, not an .npz archive")
        with z:
            return read(z)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError) as e:
        reason = str(e)
        if "allow_pickle" in reason or "pickle" in reason.lower():   # not numpy's advice to load it unsafely
            reason = "it is not an .npz archive of plain arrays"
        raise UserError(f"not a readable {what}: {path} ({reason})") from None
