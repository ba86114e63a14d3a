"""Escaping and units for the page: FLOPs decimal (GFLOP), memory binary (MiB), time in ms.

Two escapes: ``esc`` for HTML text and attributes, ``plot_text`` for strings handed to plotly,
which renders a few HTML tags (<b>, <br>, <a>, ...) in titles, legends and hover text and decodes
entities, so escaping ``<``, ``>`` and ``&`` there shows the characters as text.
"""

import html
import math

from ..costmodel.units import GIB, MIB

_DECIMAL = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_BINARY = ((2**50, "PiB"), (2**40, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (2**10, "KiB"), (1, "B"))


def esc(value) -> str:
    """HTML-escape any value for text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def plot_text(value) -> str:
    """Escape a user string for plotly text (trace names, titles, hover)."""
    return html.escape("" if value is None else str(value), quote=False)


def _sig(x: float, digits: int = 3) -> str:
    """``x`` with about ``digits`` significant digits, no exponent, trailing zeros dropped."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    text = f"{x:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def flops(x, unit: str = "FLOP", digits: int = 3) -> str:
    """Decimal prefixes: 2.07e11 -> "207 GFLOP"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    for scale, prefix in _DECIMAL:
        if abs(x) >= scale:
            return f"{_sig(x / scale, digits)} {prefix}{unit}"
    return f"{_sig(x, digits)} {unit}"


def rate(x, digits: int = 3) -> str:
    """FLOP/s with decimal prefixes: "612 TFLOP/s"."""
    return flops(x, "FLOP/s", digits)


def bandwidth(x, digits: int = 3) -> str:
    """Bytes per second, decimal as vendors quote it: "3.35 TB/s"."""
    return flops(x, "B/s", digits)


def nbytes(x, digits: int = 3) -> str:
    """Binary prefixes: 1.09e9 -> "1.02 GiB"."""
    if x is None:
        return "–"
    for scale, unit in _BINARY:
        if abs(x) >= scale:
            return f"{_sig(x / scale, digits)} {unit}"
    return f"{_sig(x, digits)} B"


def ms(seconds, digits: int = 3) -> str:
    """Seconds shown in ms: 0.001234 -> "1.23 ms"."""
    if seconds is None:
        return "–"
    return f"{_sig(seconds * 1e3, digits)} ms"


def count(n) -> str:
    """An exact integer with thousands separators."""
    if n is None:
        return "–"
    return f"{int(round(n)):,}"


def pct(x, digits: int = 2, signed: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    text = _sig(abs(x) * 100, digits) + "%"
    if not signed:
        return text
    return ("+" if x >= 0 else "−") + text


def tokens(T) -> str:
    """A sequence length as on an axis: 512, 4k, 32k, 1M."""
    T = int(T)
    if T >= 2**20 and T % 2**20 == 0:
        return f"{T // 2**20}M"
    if T >= 1024 and T % 1024 == 0:
        return f"{T // 1024}k"
    return f"{T:,}"


# -- axis ticks --------------------------------------------------------------------------

def pow2_ticks(lo: float, hi: float, label=tokens, max_ticks: int = 12) -> tuple:
    """Tick values at powers of two spanning [lo, hi], thinned to at most ``max_ticks``."""
    if not lo or not hi or lo <= 0:
        return [], []
    a, b = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    step = max(1, math.ceil((b - a + 1) / max_ticks))
    vals = [2.0**e for e in range(a, b + 1, step)]
    return vals, [label(v) for v in vals]


def decade_ticks(lo: float, hi: float, label, max_ticks: int = 10) -> tuple:
    """Tick values at powers of ten spanning [lo, hi], labelled with ``label``."""
    if not lo or not hi or lo <= 0:
        return [], []
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    step = max(1, math.ceil((b - a + 1) / max_ticks))
    vals = [10.0**e for e in range(a, b + 1, step)]
    return vals, [label(v) for v in vals]


def binary_ticks(lo: float, hi: float, max_ticks: int = 10) -> tuple:
    """Tick values at powers of two bytes spanning [lo, hi], labelled "64 MiB", "1 GiB"."""
    if not lo or not hi or lo <= 0:
        return [], []
    a, b = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    step = max(1, math.ceil((b - a + 1) / max_ticks))
    vals = [2.0**e for e in range(a, b + 1, step)]
    return vals, [nbytes(v) for v in vals]


def log_ticks(lo: float, hi: float, label, max_ticks: int = 10) -> tuple:
    """Ticks for a log axis spanning [lo, hi]: 1-2-5 steps over a short range, decades (thinned
    to ``max_ticks``) over a long one; labelled with ``label``."""
    if not lo or not hi or lo <= 0 or hi <= 0:
        return [], []
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if b - a <= 3:
        vals = [m * 10.0**e for e in range(a, b + 1) for m in (1, 2, 5)]
        vals = [v for v in vals if lo / 2.5 <= v <= hi * 2.5]
    else:
        step = max(1, math.ceil((b - a + 1) / max_ticks))
        vals = [10.0**e for e in range(a, b + 1, step)]
    return vals, [label(v) for v in vals]


def ms_value(v: float) -> str:
    """An axis label for a value already in ms."""
    return f"{_sig(v, 3)} ms"
