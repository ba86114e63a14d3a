"""Output files are written atomically: nothing half-written is ever left behind."""

import hashlib
import os
import tempfile
from pathlib import Path

NAME_MAX = 255  # bytes in one file name on the common file systems (ext4, XFS, Btrfs, APFS)
_KEPT = 128  # bytes of a long file name kept in the name of a file beside it


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename, so that no
    reader ever sees a half-written file; the file keeps the mode of the one it replaces.
    Characters UTF-8 cannot encode (lone surrogates: bytes of a command line that were not
    UTF-8) are written as backslash escapes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=beside(path, ".").name, suffix=".tmp")
    try:
        os.fchmod(fd, _mode(path))  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def beside(path: Path, suffix: str) -> Path:
    """A hidden file in the folder of ``path``, named after it: ".NAME" + ``suffix``. A name too
    long to take more characters is cut, and a hash of the whole name keeps it apart from others."""
    path = Path(path)
    name = os.fsencode(path.name)
    if len(name) > _KEPT:
        name = name[:_KEPT] + b"-" + hashlib.sha256(name).hexdigest()[:12].encode()
    return path.with_name("." + os.fsdecode(name) + suffix)


def _mode(path: Path) -> int:
    """The mode of the file being replaced, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask
