"""Numbers on screen, for the report and the CLI: three significant digits, SI prefixes.

FLOPs decimal (GFLOP), memory binary (MiB), time in ms, percentages signed; and the ticks of a
log axis. Plain Python: importing it loads neither plotly nor torch. No function raises on a
non-finite number: inf and nan are written as Python writes them (nan as a dash where a value may
be missing).
"""

import math

from ..costmodel.units import GIB, MIB

_DECIMAL = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_BINARY = ((2**50, "PiB"), (2**40, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (2**10, "KiB"), (1, "B"))


def sig(x: float, digits: int = 3) -> str:
    """``x`` with about ``digits`` significant digits, thousands separated, no exponent, trailing
    zeros dropped: 0.187, 35.2, 1,032; nan and inf as Python writes them."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(float(x))
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    text = f"{x:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _scaled(x, scales: tuple, digits: int, label) -> str:
    """``x`` in the largest unit of ``scales`` ((size, name), largest first) that it reaches, named
    by ``label(name)`` ("" below the smallest); "–" for None and NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if not math.isfinite(x):
        return f"{sig(x)} {label('')}"
    for scale, name in scales:
        if abs(x) >= scale:
            return f"{sig(x / scale, digits)} {label(name)}"
    return f"{sig(x, digits)} {label('')}"


def flops(x, unit: str = "FLOP", digits: int = 3) -> str:
    """Decimal prefixes: 2.07e11 -> "207 GFLOP"."""
    return _scaled(x, _DECIMAL, digits, lambda prefix: prefix + unit)


def rate(x, digits: int = 3) -> str:
    """FLOP/s with decimal prefixes: "612 TFLOP/s"."""
    return flops(x, "FLOP/s", digits)


def bandwidth(x, digits: int = 3) -> str:
    """Bytes per second, decimal as vendors quote it: "3.35 TB/s"."""
    return flops(x, "B/s", digits)


def nbytes(x, digits: int = 3) -> str:
    """Binary prefixes: 1.09e9 -> "1.02 GiB"."""
    return _scaled(x, _BINARY, digits, lambda unit: unit or "B")


def ms(seconds, digits: int = 3, unit: bool = True) -> str:
    """Seconds shown in ms: 0.001234 -> "1.23 ms" (``unit=False``: "1.23", for a column headed ms)."""
    if seconds is None:
        return "–"
    return sig(seconds * 1e3, digits) + (" ms" if unit else "")


def count(n) -> str:
    """An exact integer with thousands separators."""
    if n is None:
        return "–"
    if not math.isfinite(n):
        return sig(n)
    return f"{int(round(n)):,}"


PCT_ZERO = 1e-9  # a ratio below this is shown as 0%


def pct(x, digits: int = 2, signed: bool = True) -> str:
    """A ratio as a percentage with ``digits`` significant digits, signed: -0.25 -> "−25%"; below
    ``PCT_ZERO`` (float rounding, as a fit's error on rows it reproduces), "0%"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) < PCT_ZERO:
        x = 0.0
    text = sig(abs(x) * 100, digits) + "%"
    if not signed:
        return text
    return ("+" if x >= 0 else "−") + text


UNSTABLE_MARK = "~"  # before a measured time whose median did not settle
ROUGH = 0.5  # beyond this |error| a prediction is shown with two significant digits


def error(x) -> str:
    """A signed relative error, the same in every command: 0.763 -> "+76%", -0.8 -> "−80%"."""
    return pct(x, 2, signed=True)


def measured_ms(seconds, stable=True, digits: int = 3) -> str:
    """A measured time in ms for a column headed ms; one whose median did not settle
    (``stable`` False) keeps two significant digits and the mark: "~0.93"."""
    if seconds is None or stable is not False:
        return ms(seconds, digits, unit=False)
    return UNSTABLE_MARK + ms(seconds, 2, unit=False)


def predicted_ms(seconds, err=None, digits: int = 3) -> str:
    """A predicted time in ms for a column headed ms; beside an error above 50 % two significant
    digits are all it is worth: 0.000290 s at −80 % -> "0.29"."""
    rough = err is not None and math.isfinite(err) and abs(err) > ROUGH
    return ms(seconds, 2 if rough else digits, unit=False)


def tokens(T) -> str:
    """A sequence length as on an axis: 512, 4k, 32k, 1M."""
    if not math.isfinite(T):
        return sig(T)
    T = int(T)
    if T >= 2**20 and T % 2**20 == 0:
        return f"{T // 2**20}M"
    if T >= 1024 and T % 1024 == 0:
        return f"{T // 1024}k"
    return f"{T:,}"


# -- axis ticks --------------------------------------------------------------------------

def log_ticks(lo: float, hi: float, label, *, base: int = 10, max_ticks: int = 10) -> tuple:
    """([values], [labels]) of ticks for a log axis spanning [lo, hi], labelled with ``label``:
    powers of ``base`` (2 or 10), thinned to at most ``max_ticks``; with base 10 over three
    decades or fewer, 1-2-5 steps instead."""
    if not lo or not hi or lo <= 0 or hi <= 0 or not math.isfinite(lo) or not math.isfinite(hi):
        return [], []
    log = math.log2 if base == 2 else math.log10
    a, b = math.floor(log(lo)), math.ceil(log(hi))
    if base == 10 and b - a <= 3:
        vals = [m * 10.0**e for e in range(a, b + 1) for m in (1, 2, 5)]
        vals = [v for v in vals if lo / 2.5 <= v <= hi * 2.5]
    else:
        step = max(1, math.ceil((b - a + 1) / max_ticks))
        vals = [float(base) ** e for e in range(a, b + 1, step)]
    return vals, [label(v) for v in vals]


def ms_value(v: float) -> str:
    """An axis label for a value already in ms."""
    return f"{sig(v, 3)} ms"
