"""The flags several commands share, parsed and checked in one place: --T, --variants, --param,
the vocabularies (--dtype, --phase, --backend, --device), --hardware, --model, output files and
pydantic's errors as sentences that name the flag. Each failure exits 2 with one sentence."""

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple, Optional, Sequence, Union

from pydantic import ValidationError

from ..costmodel.atomic import NAME_MAX, write_atomic
from ..costmodel.hardware import Hardware, HardwareError, get_hardware
from ..costmodel.jsonfile import validation_reason
from ..costmodel.shape import MAX_T, Shape
from ..costmodel.units import DEVICES, SDPA_BACKENDS
from ..costmodel.variants import NAMES, REGISTRY
from .errors import fail

if TYPE_CHECKING:
    from ..costmodel.model_spec import ModelConfig

# shape field -> the flag that sets it, for error messages
FLAG_OF = {"batch": "--batch", "T": "--T", "d": "--d", "heads": "--heads", "kv_heads": "--kv-heads",
           "dtype": "--dtype", "causal": "--causal", "phase": "--phase"}

# --backend and --device where a command lets torch choose
BACKEND_CHOICES = ("auto",) + SDPA_BACKENDS
DEVICE_CHOICES = ("auto",) + DEVICES


def check_choice(value: str, choices: Sequence[str], flag: str, why: str = "") -> str:
    """``value`` if it is one of ``choices``; else exit 2: "--dtype must be one of 'bf16', 'fp16'
    or 'fp32', not 'fp8'" (``why``, if given, follows the choices in parentheses)."""
    if value in choices:
        return value
    quoted = [f"'{c}'" for c in choices]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    lead = "one of " if len(quoted) > 2 else ""
    raise fail(f"{flag} must be {lead}{listed}{f' ({why})' if why else ''}, not {value!r}")


def flag_error(err: ValidationError, flag_of: Union[Mapping[str, str], Callable[[str], str]] = FLAG_OF) -> str:
    """The first problem pydantic found in values set by flags, as a sentence naming the flag:
    "--d must be at least 1, not 0", "--heads: heads must divide d: ...". ``flag_of`` gives the
    flag of a field: a mapping (fields it lacks are named as they are) or a function."""
    e = err.errors()[0]
    field = str(e["loc"][0]) if e["loc"] else ""
    flag = flag_of(field) if callable(flag_of) else flag_of.get(field, field)
    ctx, got = e.get("ctx") or {}, e.get("input")
    if e["type"] == "greater_than_equal":
        return f"{flag} must be at least {ctx['ge']}, not {got}"
    if e["type"] == "less_than_equal":
        return f"{flag} must be at most {ctx['le']:,}, not {got}"
    loc = ".".join(str(x) for x in e["loc"])
    return f"{flag}: {validation_reason(err).removeprefix(loc + ': ')}"


def list_items(text: str, flag: str) -> list:
    """The comma-separated items of ``text``, stripped; exit 2 on an empty one ("512,,1024", "mha,")."""
    if not text.strip():
        raise fail(f"{flag} is empty: give a value")
    items = [x.strip() for x in text.split(",")]
    if "" in items:
        raise fail(f"{flag} {text!r} has an empty item: separate the values by single commas")
    return items


T_HELP = ("Tokens: 4096, a list 512,1024,4096, or a range 512:65536 (doubling from 512 up to 65536); "
          "k = 1024 and M = 1048576: 32k, 1M.")


def tokens_value(text: str) -> int:
    """"4096", "32k" (32 x 1024) or "1M" (1048576); ValueError otherwise."""
    text = text.strip()
    scale = {"k": 1024, "K": 1024, "M": 2**20}.get(text[-1:], 1)
    return int(text[:-1] if scale > 1 else text) * scale


def parse_T(text: str, flag: str = "--T") -> list:
    """"4096", "32k,128k" (k = 1024, M = 1048576) or "512:65536" (doubling from 512 up to 65536)."""
    try:
        if ":" in text:
            lo, hi = (tokens_value(x) for x in text.split(":"))
            if lo < 1 or hi < lo:
                raise ValueError
            values, t = [], lo
            while t <= hi:
                values.append(t)
                t *= 2
        else:
            values = [tokens_value(x) for x in list_items(text, flag)]
    except ValueError:
        raise fail(f"{flag} must be a positive integer (32k = 32768, 1M = 1048576), a list like 512,1024 or a "
                   f"range like 512:65536, not {text!r}")
    if not values or min(values) < 1 or max(values) > MAX_T:
        raise fail(f"{flag} values must be between 1 and {MAX_T:,}, got {text!r}")
    return values


def parse_ints(text: str, flag: str) -> list:
    """"1024" or "1024,2048" (the --d of sweeps)."""
    try:
        values = [int(x) for x in list_items(text, flag)]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise fail(f"{flag} must be a positive integer or a comma-separated list of them, not {text!r}")
    return values


ONE_VARIANT_FLAGS = ("--baseline", "--kernels", "--variant-heatmap")  # flags that name a single variant


def parse_variants(text: str, flag: str = "--variants") -> list:
    """The variants ``flag`` names: 'all' or a comma-separated list; a flag of ONE_VARIANT_FLAGS
    takes exactly one name, and its error sentences say so."""
    one = flag in ONE_VARIANT_FLAGS
    choices = ("from " if one else "'all' or from ") + ", ".join(NAMES)
    if text.strip().lower() == "all" and not one:
        return list(NAMES)
    if not text.strip():
        raise fail(f"{flag} must name {'a' if one else 'at least one'} variant")
    names = list_items(text, flag)
    if one and (len(names) != 1 or names[0].lower() == "all"):
        raise fail(f"{flag} takes one variant, not {text.strip()!r}: choose {choices}")
    for n in names:
        if n not in REGISTRY:
            raise fail(f"{flag}: unknown variant {n!r}; choose {choices}")
    return names


def parse_params(items: Optional[list]) -> dict:
    """["linformer.k=128", "gqa.kv_heads=2"] -> {"linformer": {"k": "128"}, "gqa": {...}}; values
    are validated (and converted) by the variant's pydantic model."""
    out: dict = {}
    for item in items or []:
        name, _, value = item.partition("=")
        variant, _, key = name.partition(".")
        if not _ or not key or not value:
            raise fail(f"--param must look like VARIANT.NAME=VALUE (e.g. linformer.k=128), not {item!r}")
        if variant not in REGISTRY:
            raise fail(f"--param {item}: unknown variant {variant!r}; choose from {', '.join(NAMES)}")
        fields = REGISTRY[variant].params.model_fields
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise fail(f"--param {item}: {variant} has no parameter {key!r} (its parameters: {allowed})")
        out.setdefault(variant, {})[key] = value
    return out


def make_shape(**fields) -> Shape:
    """A validated Shape, or exit 2 with a sentence naming the flag."""
    try:
        return Shape(**fields)
    except ValidationError as err:
        raise fail(flag_error(err))


def check_params(variant: str, params: dict, shape: Shape):
    """The variant's resolved parameters, or exit 2 naming the --param that is out of range."""
    from ..costmodel.estimate import resolve_params
    from ..costmodel.variants import VariantError

    try:
        return resolve_params(variant, shape, params)
    except ValidationError as err:
        raise fail(flag_error(err, lambda key: f"--param {variant}.{key}={params.get(key)!r}"))
    except VariantError as err:
        raise fail(f"--param {err}")


def check_param_values(params: dict) -> None:
    """Each --param value (each value of a swept list too) must be valid for its variant,
    whatever the shape; values that do not fit one shape (linformer.k > T) are found later."""
    for variant, values in params.items():
        for key, value in values.items():
            for x in value if isinstance(value, list) else [value]:
                try:
                    REGISTRY[variant].params(**{key: x})
                except ValidationError as err:
                    raise fail(flag_error(err, lambda k: f"--param {variant}.{k}={x}"))


def command_line() -> str:
    """The command as typed (``attncost predict ...``), quoted for a shell: what a report records."""
    import shlex
    import sys

    return shlex.join(["attncost"] + sys.argv[1:])


def load_fidelity_file(path, flag: str = "--fidelity"):
    """A fidelity file of `attncost fidelity --json`, or exit 2 with one sentence naming ``flag``."""
    from ..costmodel.fidelity_doc import FidelityFileError, load_fidelity

    try:
        return load_fidelity(path)
    except FidelityFileError as err:
        raise fail(f"{flag}: {err}")


def load_run(path, flag: str = ""):
    """A results file of `attncost profile`, or exit 2 with one sentence (prefixed by ``flag``)."""
    from ..costmodel.jsonfile import load_document
    from ..costmodel.results import RunFile

    try:
        return load_document(path, RunFile, "results file", ValueError)
    except ValueError as err:
        raise fail((f"{flag}: " if flag else "") + str(err))


def load_hardware(text: str, flag: str = "--hardware") -> Hardware:
    """A built-in hardware profile by name or a profile file, or exit 2 with one sentence."""
    return _named_or_file(get_hardware, HardwareError, text, flag)


def load_model(text: str, flag: str = "--model") -> "ModelConfig":
    """A model preset by name, a Hugging Face config.json (or a folder holding one) or a model
    file, or exit 2 with one sentence."""
    from ..costmodel.model_presets import get_model  # whole-model costing: only where a model is named
    from ..costmodel.model_spec import ModelError

    return _named_or_file(get_model, ModelError, text, flag)


def _named_or_file(get: Callable, error: type, text: str, flag: str):
    if not text.strip():  # Path("") is the current folder
        raise fail(f"{flag} is empty: give a built-in name or a file")
    try:
        return get(text)
    except error as err:
        raise fail(f"{flag}: {err}")
    except (OSError, RuntimeError) as err:  # a path the system refuses: a name too long, ~user of no user
        raise fail(f"{flag}: {text!r} is neither a built-in name nor a readable file "
                   f"({getattr(err, 'strerror', None) or err})")


class OutputKind(NamedTuple):
    """The kind of file a command writes: ``noun`` names it ("an HTML report of attncost") and
    ``holds(path)`` tells whether an existing file is one, which the command may then replace."""

    noun: str
    holds: Callable[[Path], bool]


def check_output(path, flag: str, example: str, *, kind: Optional[OutputKind] = None, inputs: Sequence = (),
                 overwrite: bool = False) -> Path:
    """``path`` as a file a command may write (its missing folders are created when it is
    written), or exit 2 with one sentence. Refused: a name that is not UTF-8 text or is longer
    than a file system allows, a directory, anything that is not a regular file (a device, a
    pipe), a file where a folder of its path should be, a folder this user cannot write in (or
    on a read-only file system); an existing file that is one of the command's ``inputs``
    (paths; names of no file are passed over), or, without ``overwrite``, an existing file that
    is not ``kind`` (an empty one is replaced). ``example`` is a file name to suggest ("report.html")."""
    path = Path(path)
    _check_name(path, flag)
    try:
        _check_place(path, flag, example)
        if path.exists():
            _check_replace(path, flag, kind, inputs, overwrite)
    except OSError as err:  # a path the system will not look at: a loop of links, a folder we may not enter
        raise fail(f"{flag} {path}: {err.strerror or err}")
    return path


def _check_name(path: Path, flag: str) -> None:
    text = str(path)
    if any("\ud800" <= c <= "\udfff" for c in text):  # bytes that were not UTF-8, kept as lone surrogates
        raise fail(f"{flag} {text!r}: the name holds bytes that are not UTF-8 text; give a name in UTF-8")
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise fail(f"{flag}: the name {part[:20]}... is {size} bytes long, more than the {NAME_MAX} a file "
                       f"name may have")


def _check_place(path: Path, flag: str, example: str) -> None:
    if path.is_dir():
        raise fail(f"{flag} {path} is a directory, not a file: give a file name in that folder, such as "
                   f"{path / example}")
    if path.exists() and not path.is_file():
        raise fail(f"{flag} {path} is not a regular file (a device, a pipe or a socket): give the name of a "
                   f"file to write")
    folder = next(p for p in path.parents if p.exists())
    if not folder.is_dir():
        raise fail(f"{flag} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(folder) else "no permission to write there"
        raise fail(f"{flag} {path}: cannot write in {folder} ({why})")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


def _check_replace(path: Path, flag: str, kind: Optional[OutputKind], inputs: Sequence, overwrite: bool) -> None:
    for given in inputs:
        source = Path(given).expanduser() if given is not None else None
        if source is not None and source.is_file() and os.path.samefile(path, source):
            raise fail(f"{flag} {path} is also an input of this command: writing it would destroy what it holds; "
                       f"give another file")
    if kind is not None and not overwrite and path.stat().st_size and not kind.holds(path):
        raise fail(f"{flag} {path} exists and is not {kind.noun}: pass --overwrite to replace it, or give "
                   f"another file")


def _is_report(path: Path) -> bool:
    from ..reports.page import GENERATOR_TAG

    try:
        with open(path, "rb") as f:
            return GENERATOR_TAG.encode() in f.read(4096)
    except OSError:
        return False


def _is_results(path: Path) -> bool:
    from ..costmodel.jsonfile import load_document
    from ..costmodel.results import RunFile

    try:
        load_document(path, RunFile, "results file", ValueError)
    except ValueError:
        return False
    return True


def _is_profile(path: Path) -> bool:
    from ..costmodel.hardware import load_profile

    try:
        load_profile(path)
    except HardwareError:
        return False
    return True


def _is_rows(path: Path) -> bool:
    from ..costmodel.jsonfile import read_json_file

    try:
        data = read_json_file(path, "rows file", ValueError)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("rows"), list) and "method" in data


# What each command writes, and may replace without --overwrite.
REPORT_FILE = OutputKind("an HTML report of attncost", _is_report)
RESULTS_FILE = OutputKind("an attncost results file", _is_results)
PROFILE_FILE = OutputKind("a hardware profile", _is_profile)
ROWS_FILE = OutputKind("a file of calibration rows", _is_rows)


# -- tables on screen and CSV files ---------------------------------------------------------

WIDE_HELP = "Show every column, however wide (the default fits 100 columns, or COLUMNS)."


def flat_fields(doc, prefix: str = "") -> dict:
    """A JSON document's fields as one level: {"shape": {"T": 8}} -> {"shape.T": 8}; a list of
    plain values joined by ";", any other list as JSON text."""
    if isinstance(doc, dict):
        out: dict = {}
        for key, value in doc.items():
            out.update(flat_fields(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if isinstance(doc, (list, tuple)):
        plain = all(not isinstance(x, (dict, list, tuple)) for x in doc)
        return {key: ";".join("" if x is None else str(x) for x in doc) if plain else json.dumps(doc)}
    return {key: "" if doc is None else doc}


def write_csv(path, rows: Sequence[dict]) -> None:
    """``rows`` (the --json records of a command) as a CSV file written atomically, one row
    each; the columns are their fields flattened (``flat_fields``), in order of first appearance."""
    flat = [flat_fields(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    write_atomic(Path(path), text.getvalue())


def check_csv(path: Optional[str], inputs: Sequence = ()) -> Optional[Path]:
    """The --csv file, checked before any work (``check_output``), or None when not given."""
    return None if path is None else check_output(path, "--csv", "results.csv", inputs=inputs, overwrite=True)


CSV_HELP = "Also write the results to this CSV file (the --json fields, flattened: shape.T, ...)."
