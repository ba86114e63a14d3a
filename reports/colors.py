"""One palette keyed by variant name, so a variant has the same colour in every chart."""

import hashlib

# Grouped by family: exact attention in blues/greens, latent in purples, low-rank/kernel in
# oranges/reds, learned selectors in browns/greys. Every registry variant has a fixed entry.
PALETTE = {
    "mha": "#1f77b4",
    "flash": "#17becf",
    "gqa": "#2ca02c",
    "mqa": "#98df8a",
    "sliding_window": "#0b5d1e",
    "mla": "#9467bd",
    "dsa": "#c5b0d5",
    "linformer": "#ff7f0e",
    "nystrom": "#d62728",
    "performer": "#e377c2",
    "topk": "#8c564b",
    "mlp_attention": "#7f7f7f",
    "msla": "#bcbd22",
}

# For names outside the palette (a variant added later): a stable colour from its name.
_FALLBACK = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
             "#31a354", "#756bb1", "#636363")

# Several series of one variant (several runs, parameter sets or shapes) keep the variant's
# colour and differ by line dash and marker symbol.
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "pentagon", "hexagon")
OOM_SYMBOL = "x-thin-open"
ERROR_SYMBOL = "asterisk-open"
CROSSOVER_SYMBOL = "star"


def color_for(variant: str) -> str:
    """The variant's colour: from ``PALETTE``, else a stable pick from its name."""
    if variant in PALETTE:
        return PALETTE[variant]
    h = int(hashlib.sha1(variant.encode()).hexdigest(), 16)
    return _FALLBACK[h % len(_FALLBACK)]


def dash_for(index: int) -> str:
    return DASHES[index % len(DASHES)]


def symbol_for(index: int) -> str:
    return SYMBOLS[index % len(SYMBOLS)]
