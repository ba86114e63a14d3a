"""Reading a pydantic model from a JSON file a user gave, with failures as one plain sentence.

Two readers: ``load_json_model`` for input files (hardware profiles, model configs) and
``load_document`` for the documents attncost writes (results files, fidelity files); both
validate through ``validate_json``, and read through ``read_text``: a regular file of at most
MAX_FILE_BYTES, never a device or a pipe.
"""

import json
import os
import stat
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ValidationError

MAX_FILE_BYTES = 64 * 2**20  # far more than any profile, model or results file holds


def load_json_model(path, model: type, what: str, error: type) -> BaseModel:
    """``model`` validated from the JSON file at ``path``; otherwise raises ``error`` with one
    sentence such as "hardware file x.json is not a valid profile: field vector_flops is missing".
    ``what`` names the file's kind: ("hardware file", "profile") or ("model file", "model")."""
    kind, thing = what
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise error(f"{kind} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{kind} {path} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    invalid = f"{kind} {path} is not a valid {thing}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{invalid}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    return validate_json(data, model, lambda why: error(f"{invalid}: {why}"))


def validate_json(data, model: type, error: Callable[[str], Exception]) -> BaseModel:
    """``model`` validated from parsed JSON ``data``; otherwise raises ``error(reason)``, the
    reason one phrase such as "field points.0.label is missing" or "top level: expected a JSON
    object, got list"."""
    if not isinstance(data, dict) and not isinstance(data, model):
        raise error(f"top level: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(validation_reason(err)) from None


def validation_reason(err: ValidationError) -> str:
    """The first problem pydantic found, in words, and how many more there are."""
    errs = err.errors()
    e = errs[0]
    parts = e.get("loc", ())
    loc = ".".join(str(x) for x in parts if x != "[key]")  # pydantic's mark of a dict key that is invalid
    if e.get("type") == "missing":
        why = f"field {loc} is missing"
    elif e.get("type") == "extra_forbidden":
        why = f"unknown field {loc}"
    else:
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        msg = ("as a key, " if "[key]" in parts else "") + msg[:1].lower() + msg[1:]
        why = f"{loc}: {msg}" if loc else msg
    more = len(errs) - 1
    return why + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def read_json_file(path, kind: str, error: type):
    """The parsed JSON of a file a user named (``kind``: "results file", "fidelity file"), or
    ``error`` with one sentence: no such file, a directory, unreadable, or not JSON."""
    path = Path(path)
    if not path.exists():
        raise error(f"no such {kind}: {path}")
    if path.is_dir():
        raise error(f"{path} is a directory, not a {kind}")
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path} is not JSON ({err.msg} at line {err.lineno})") from None


def load_document(path, model: type, kind: str, error: type) -> BaseModel:
    """``model`` validated from a file attncost wrote (``kind``: "results file", "fidelity
    file"), or ``error`` with one sentence: "no such results file: x.json", "x.json is not JSON
    (...)", "x.json is not an attncost results file: field environment is missing"."""
    data = read_json_file(path, kind, error)
    return validate_json(data, model, lambda why: error(f"{path} is not an attncost {kind}: {why}"))


def read_text(path) -> str:
    """The UTF-8 text of the regular file at ``path``, read only if it holds at most
    MAX_FILE_BYTES: a device (/dev/zero), a pipe or a huge file would be read until memory runs
    out. Raises FileNotFoundError, IsADirectoryError, OSError with a plain reason ("it is not a
    regular file ...", "it holds more than 64 MiB ...") or UnicodeDecodeError."""
    # O_NONBLOCK: opening a named pipe must not wait for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError("it is a directory")
        if not stat.S_ISREG(mode):
            raise OSError("it is not a regular file (a device, a pipe or a socket)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"it holds more than {MAX_FILE_BYTES >> 20} MiB, the most attncost reads from a file")
    return data.decode("utf-8")
