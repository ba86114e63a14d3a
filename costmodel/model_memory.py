"""What a whole model needs in device memory, and the largest prompt and batch that fit.

Memory: weights (every parameter, all experts; the linear layers at the weights dtype) + KV
cache (every layer, batch x T, at the KV-cache dtype; a sliding-window layer keeps its window)
+ peak activations: the largest of (attention layer peak + the residual stream kept for its
add), (MLP peak + residual), the LM head (its logits: rows x vocab) and the embedding (no chunked
prefill).
"""

import math
from typing import Callable, Optional

from pydantic import ValidationError

from .analysis import analyse
from .model_graphs import Logits, embed_graph, head_graph
from .model_params import count_from_layers, group_layers
from .model_pass import layer_cost
from .model_precision import Precision
from .model_spec import ModelConfig, attention_shape
from .shape import MAX_T
from .units import Dtype
from .variants import VariantError

MAX_BATCH = 1_048_576  # Shape's limit


def memory_bytes(cfg: ModelConfig, variant: Optional[str], params: dict, T: int, batch: int, dtype: Dtype,
                 logits: Logits = "all", precision: Optional[Precision] = None) -> float:
    """Weights + KV cache (all layers, batch x T) + peak activations of the prefill of batch x T;
    inf where the variant does not apply at this T. ``precision``: default all in ``dtype``."""
    p = precision or Precision.of(dtype)
    try:
        s = attention_shape(cfg, T, batch, dtype, "prefill")
        layers = group_layers(cfg, s, variant, params)
    except (VariantError, ValidationError):
        return math.inf
    weights = count_from_layers(cfg, layers).stored_bytes(p)  # before layer_cost quantises the graphs
    kv = sum(grp.count * layer.estimate.kv_cache_bytes for grp, layer in layers) * p.kv_ratio
    peaks = [layer_cost(cfg, grp, layer, s, p).peak for grp, layer in layers]
    peaks += [analyse(embed_graph(cfg, s)).peak_fused, analyse(head_graph(cfg, s, logits)).peak_fused]
    return weights + kv + max(peaks)


def max_T_fitting(cfg: ModelConfig, variant: Optional[str], params: dict, batch: int, dtype: Dtype, mem_bytes: float,
                  start: int = 1024, logits: Logits = "all", precision: Optional[Precision] = None) -> int:
    """Largest T (up to Shape's limit) whose weights + KV cache + prefill activations fit ``mem_bytes``."""
    return _largest(lambda t: memory_bytes(cfg, variant, params, t, batch, dtype, logits, precision) <= mem_bytes,
                    max(1, min(start, MAX_T)), MAX_T)


def max_batch_fitting(cfg: ModelConfig, variant: Optional[str], params: dict, T: int, dtype: Dtype,
                      mem_bytes: float, logits: Logits = "all", precision: Optional[Precision] = None) -> int:
    """Largest batch of T-token sequences whose weights + KV cache + prefill activations fit."""
    return _largest(lambda b: memory_bytes(cfg, variant, params, T, b, dtype, logits, precision) <= mem_bytes,
                    1, MAX_BATCH)


def _largest(fits: Callable[[int], bool], start: int, hi: int) -> int:
    """Largest n in [1, hi] with fits(n), given fits is monotone (True then False); 0 if none:
    doubling up from ``start`` (or below it), then bisection."""
    if fits(start):
        lo = start
        n = start
        while n < hi:
            n = min(hi, 2 * n)
            if not fits(n):
                hi = n - 1
                break
            lo = n
        else:
            return lo
    else:
        lo, hi = 0, start - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
