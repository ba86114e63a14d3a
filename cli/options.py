"""Parsing of the flags several commands share (--T, --variants, --param): one home for all."""

from typing import Optional

from pydantic import ValidationError

from ..costmodel.shape import MAX_T, Shape
from ..costmodel.variants import NAMES, REGISTRY
from .errors import fail

# shape field -> the flag that sets it, for error messages
FLAG_OF = {"batch": "--batch", "T": "--T", "d": "--d", "heads": "--heads", "kv_heads": "--kv-heads",
           "dtype": "--dtype", "causal": "--causal", "phase": "--phase"}


def parse_T(text: str, flag: str = "--T") -> list:
    """"4096", "512,1024,4096" or "512:65536" (powers of two from 512 to 65536)."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":"))
            if lo < 1 or hi < lo:
                raise ValueError
            values, t = [], lo
            while t <= hi:
                values.append(t)
                t *= 2
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise fail(f"{flag} must be a positive integer, a list like 512,1024 or a range like 512:65536, not {text!r}")
    if not values or min(values) < 1 or max(values) > MAX_T:
        raise fail(f"{flag} values must be between 1 and {MAX_T:,}, got {text!r}")
    return values


def parse_ints(text: str, flag: str) -> list:
    """"1024" or "1024,2048" (the --d of sweeps)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise fail(f"{flag} must be a positive integer or a comma-separated list of them, not {text!r}")
    return values


def parse_variants(text: str, flag: str = "--variants") -> list:
    if text.strip().lower() == "all":
        return list(NAMES)
    names = [x.strip() for x in text.split(",") if x.strip()]
    for n in names:
        if n not in REGISTRY:
            raise fail(f"{flag}: unknown variant {n!r}; choose 'all' or from {', '.join(NAMES)}")
    if not names:
        raise fail(f"{flag} must name at least one variant")
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
        e = err.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = FLAG_OF.get(field, field)
        ctx, got = e.get("ctx") or {}, e.get("input")
        if e["type"] == "greater_than_equal":
            raise fail(f"{flag} must be at least {ctx['ge']}, not {got}")
        if e["type"] == "less_than_equal":
            raise fail(f"{flag} must be at most {ctx['le']:,}, not {got}")
        msg = e["msg"].removeprefix("Value error, ")
        raise fail(f"{flag}: {msg}")


def check_params(variant: str, params: dict, shape: Shape):
    """The variant's resolved parameters, or exit 2 naming the --param that is out of range."""
    from ..costmodel.estimate import resolve_params
    from ..costmodel.variants import VariantError

    try:
        return resolve_params(variant, shape, params)
    except ValidationError as err:
        e = err.errors()[0]
        key = e["loc"][0] if e["loc"] else "?"
        raise fail(f"--param {variant}.{key}={params.get(key)!r}: {e['msg'].removeprefix('Value error, ')}")
    except VariantError as err:
        raise fail(f"--param {err}")


def load_run(path, flag: str = ""):
    """A results file of `attncost profile`, or exit 2 with one sentence (prefixed by ``flag``)."""
    from ..costmodel.jsonfile import read_json_file
    from ..costmodel.results import Run

    lead = f"{flag}: " if flag else ""
    try:
        data = read_json_file(path, "results file", ValueError)
    except ValueError as err:
        raise fail(lead + str(err))
    try:
        return Run.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "top level"
        raise fail(f"{lead}{path} is not an attncost results file ({where}: {e['msg']})")

