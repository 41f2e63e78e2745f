"""Where cae reads data and writes caches and results: one source for every path."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Callable


def _user_cache():
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "cae"


def data_dir() -> pathlib.Path:
    """Folder holding dataset archives: ``$CAE_DATA_DIR``, else ``<user cache>/data``."""
    env = os.environ.get("CAE_DATA_DIR")
    return pathlib.Path(env) if env else _user_cache() / "data"


def cache_dir() -> pathlib.Path:
    """Writable cache for decoded data, the model zoo and attack outputs.

    ``$CAE_CACHE_DIR``, else the per-user cache folder. Never the data folder, which
    may be read-only.
    """
    env = os.environ.get("CAE_CACHE_DIR")
    return pathlib.Path(env) if env else _user_cache()


def results_dir(preset_name: str) -> pathlib.Path:
    """``$CAE_RESULTS_DIR/<preset>`` or ``./results/<preset>``: tables and figures."""
    base = pathlib.Path(os.environ.get("CAE_RESULTS_DIR", "results"))
    return base / preset_name


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader never sees a partial file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save(path: str | os.PathLike, writer: Callable[[str], object], suffix: str = "") -> None:
    """Call ``writer(tmp_path)`` then rename onto ``path`` (for savers that need a name).

    ``suffix`` keeps the extension that some savers insist on (``.keras``, ``.npz``).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
