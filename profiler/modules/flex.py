"""Sliding-window attention in a kernel that skips the masked band: torch's ``flex_attention`` with a
block mask, compiled (``torch.compile``), on CUDA.

An SDPA kernel given a boolean band mask computes every tile of the T x T square (it skips tiles
only for ``is_causal``); flex_attention computes only the blocks its block mask marks, each query
block's window, so its work grows as T x window: the band the cost model counts
(``costmodel.variants.base.causal_pairs``).

``window_attention(T, window)`` is the attention call of a sliding window over T tokens, q, k, v of
(B, H, T, dh) -> (B, H, T, dh), on the default device (where the module is built); None where
flex_attention cannot run (not CUDA, a torch without it), where the module keeps SDPA with a band
mask. The block mask is built once per (T, window, device) and kept; the compiled flex_attention is
one per process (torch.compile specialises it per shape).

A module that uses it keeps the call as its ``flex`` attribute (None where it does not), and
``recording()`` collects a note per call: a profiling run so records which kernel ran
(``costmodel.as_run.FLEX``), without the SDPA recorder (a TorchFunctionMode, which torch.compile
would trace into the compiled call).
"""

import contextlib
import functools
import importlib.util
from typing import Callable, Optional

import torch

from ...costmodel.as_run import FLEX

_recorders: list = []  # the lists ``recording`` hands out, while they are open


def available(device) -> bool:
    """Whether flex_attention runs compiled on ``device``: a CUDA device and a torch that has it."""
    if torch.device(device).type != "cuda":
        return False
    try:
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None  # torch 2.5 and later
    except ModuleNotFoundError:  # no torch.nn.attention at all (before torch 2.2)
        return False


def band(window: int) -> Callable:
    """flex_attention's mask_mod of a causal window: query i sees keys i - window < j <= i."""
    def mask_mod(b, h, q, kv):
        return (kv <= q) & (q - kv < window)
    return mask_mod


@functools.lru_cache(maxsize=8)
def band_block_mask(T: int, window: int, device: str):
    """The block mask of a causal window over T queries and T keys, shared by batch and heads."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(band(window), B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


@functools.lru_cache(maxsize=None)
def compiled_flex() -> Callable:
    """flex_attention through torch.compile (eager flex_attention is a slow reference, not a kernel)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def window_attention(T: int, window: int, device=None) -> Optional[Callable]:
    """The attention call of a causal window (see the module docstring), or None where flex_attention
    cannot run. ``device``: default, the default device (``torch.device(...)`` context included)."""
    device = torch.device(device) if device is not None else torch.empty(0).device
    if not available(device):
        return None
    mask = band_block_mask(T, window, str(device))
    attend = compiled_flex()

    def call(q, k, v, scale: Optional[float] = None):
        for seen in _recorders:
            seen.append(FLEX)
        return attend(q, k, v, block_mask=mask, scale=scale)

    return call


@contextlib.contextmanager
def recording():
    """A list that gets ``FLEX`` for each call of a ``window_attention`` made inside."""
    seen: list = []
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


def window_kernel(device) -> str:
    """The windowed prefill kernel that runs on ``device``: "flex" where flex_attention does, else
    "masked" (SDPA with a dense band mask): the ``kernel`` parameter to price it with."""
    return "flex" if available(device) else "masked"


def with_window_kernel(variant: str, params: Optional[dict], device) -> dict:
    """``params`` with the windowed prefill's ``kernel`` set to what runs on ``device``
    (``window_kernel``), where the variant has a window and the kernel was not given."""
    from ...costmodel.variants import REGISTRY

    params = dict(params or {})
    fields = REGISTRY[variant].params.model_fields if variant in REGISTRY else {}
    if "kernel" in fields and "kernel" not in params and params.get("window", fields["window"].default):
        params["kernel"] = window_kernel(device)
    return params
