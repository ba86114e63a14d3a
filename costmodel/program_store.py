"""The model's compiled programs (``tape.Program``), kept on disk between runs.

Compiling a traced program costs about a hundred estimates; replaying it costs a sixth of one. A
program depends only on the cost model's source, the Python that compiled it and the hardware
profile's numbers, so it is kept in a folder named after a hash of the first two, in a file per
(variant, phase, parameters, hardware profile). A later process loads it instead of tracing and
compiling again, as Python keeps its bytecode in ``__pycache__``.

The folder is ``$ATTNCOST_CACHE_DIR``, else ``$XDG_CACHE_HOME/attncost``, else
``~/.cache/attncost``; ``ATTNCOST_CACHE_DIR=off`` keeps nothing. Files are written atomically at
exit; an unreadable, foreign or stale file is ignored (and replaced), a folder that cannot be
written is skipped silently: the store only ever saves time. When a new folder is made, those of
other sources are removed but the two last used (another install may share the store).
"""

import atexit
import hashlib
import importlib.util
import marshal
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

ENV = "ATTNCOST_CACHE_DIR"
OFF = ("off", "")
FORMAT = 3  # bumped when the data ``tape.Program.to_data`` gives changes shape

_DIRTY: dict = {}  # file -> callable giving its data: written at exit


def root() -> Optional[Path]:
    """The store's folder, None where it is turned off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attncost"


@lru_cache(maxsize=None)
def source_hash() -> str:
    """A hash of the cost model's source (every .py file of this package), the Python bytecode
    format and ``FORMAT``: a program compiled from other code is never loaded."""
    h = hashlib.sha256(importlib.util.MAGIC_NUMBER + bytes([FORMAT]))
    here = Path(__file__).resolve().parent
    for path in sorted(here.rglob("*.py")):
        h.update(str(path.relative_to(here)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:24]


def _folder(base: Path) -> Path:
    return base / f"programs-{source_hash()}"


def file_for(key: tuple, fingerprint: str) -> Optional[Path]:
    """The file of ``key`` (plain data: strings, numbers, tuples) on the profile of ``fingerprint``;
    None where the store is off."""
    base = root()
    if base is None:
        return None
    name = hashlib.sha256(repr((key, fingerprint)).encode()).hexdigest()[:32]
    return _folder(base) / f"{name}.bin"


def load(path: Optional[Path], key: tuple) -> list:
    """The entries saved for ``key`` at ``path``: [] where there are none or they cannot be read."""
    if path is None:
        return []
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return []
    if type(data) is not tuple or len(data) != 2 or data[0] != repr(key):
        return []
    return list(data[1])


def save_at_exit(path: Optional[Path], key: tuple, entries: Callable[[], list]) -> None:
    """Write ``entries()`` (marshal-able data) for ``key`` at ``path`` when the process exits."""
    if path is not None:
        _DIRTY[path] = (key, entries)


def flush() -> None:
    """Write every file marked by ``save_at_exit`` (atomically: a temporary file renamed)."""
    todo = list(_DIRTY.items())
    _DIRTY.clear()
    for path, (key, entries) in todo:
        try:
            data = marshal.dumps((repr(key), entries()))
            _new_folder(path.parent)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except (OSError, ValueError):  # a folder that cannot be written, or data marshal cannot hold: skip
            continue


KEEP_OTHERS = 2  # folders of other sources kept beside a new one (other installs sharing the store)


def _new_folder(folder: Path) -> None:
    """Make ``folder``; where it is new, remove the folders of other sources beside it but the
    ``KEEP_OTHERS`` last used."""
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    others = [p for p in folder.parent.glob("programs-*") if p != folder and p.is_dir()]
    others.sort(key=_last_used, reverse=True)
    for other in others[KEEP_OTHERS:]:
        shutil.rmtree(other, ignore_errors=True)


def _last_used(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:  # removed meanwhile by another process
        return 0.0


atexit.register(flush)

__all__ = ["ENV", "root", "source_hash", "file_for", "load", "save_at_exit", "flush"]
