"""Every variant of ``costmodel.variants.REGISTRY`` as an ``nn.Module`` that runs the ops its
cost-model graph lists (same matmul shapes, same element-wise steps, bias-free projections), so
that fvcore's and FlopCounterMode's counts can be checked against the analytic ones exactly.

``build_module(variant, shape, params, device, dtype, backend="auto")`` returns
``(module, inputs)``: ``module(*inputs)`` runs one layer in the shape's phase and returns
(batch, tokens, d).

- prefill: inputs (x,), x of (batch, T, d);
- decode: inputs (x, *cache), x of (batch, 1, d) and the cache after T-1 previous tokens, built
  with the module's own weights (``module.cache_from``): K/V tensors of T slots (mha, flash, gqa,
  mqa; sliding_window keeps min(T, window)), MLA's latent cache (kv_lora_rank + rope_dim per
  token), DSA's latent and indexer-key caches, the V cache of topk / mlp_attention, Performer's
  recurrent state; msla has no cache. Decode writes slot T-1 in place (idempotent);
- train: as prefill, with gradients on the weights and on x: run forward then backward.
"""

import contextlib
from typing import Optional, Union

from ...costmodel.estimate import graph as _graph, resolve_params
from ...costmodel.shape import Shape
from ...costmodel.variants import REGISTRY, Params, VariantError
from . import exact, latent, learned, lowrank
from .base import BACKENDS, AttentionModule, resolve_dtype

MODULES = {**exact.MODULES, **latent.MODULES, **lowrank.MODULES, **learned.MODULES}

__all__ = ["build_module", "building_on", "AttentionModule", "MODULES", "BACKENDS"]


def build_module(variant: str, shape: Shape, params: Union[Params, dict, None] = None, device="cpu",
                 dtype=None, *, backend: str = "auto", seed: Optional[int] = 0):
    """The variant's module at ``shape`` (its phase included) and the inputs to call it with.

    ``params``: resolved Params, a dict of overrides, or None for the defaults. ``dtype``: a
    torch dtype, "bf16" / "fp16" / "fp32", or None for ``shape.dtype``. ``backend``: the SDPA
    backend the module asks for (auto | flash | cudnn | efficient | math), kept as
    ``module.backend``. ``seed`` makes weights and inputs reproducible (None: the global RNG).
    Raises VariantError where the cost model does (unknown variant, no decode path, bad params).
    """
    import torch

    if variant not in REGISTRY:
        raise VariantError(f"unknown variant {variant!r}: choose from {', '.join(REGISTRY)}")
    if not isinstance(params, Params):
        params = resolve_params(variant, shape, params)
    g = _graph(variant, shape, params)  # the cost model's own checks (decode path, params)
    if backend not in BACKENDS:
        raise VariantError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    dtype = resolve_dtype(dtype, shape)
    device = torch.device(device)
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), building_on(device, dtype):
        if seed is not None:
            torch.manual_seed(seed)
        module = MODULES[variant](shape, params, backend)
        module.to(device=device, dtype=dtype)  # a no-op but for tables made elsewhere
        module.graph = g
        train = shape.phase == "train"
        module.requires_grad_(train)
        module.train(train)
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        x = torch.randn(shape.batch, shape.tokens, shape.d, generator=gen)
        if shape.phase == "decode":
            past = torch.randn(shape.batch, shape.T - 1, shape.d, generator=gen)
            with torch.no_grad():
                cache = module.cache_from(past)
            del past
            inputs = (x, *cache)
        else:
            inputs = (x.requires_grad_(train),)
    return module, inputs


@contextlib.contextmanager
def building_on(device, dtype):
    """Tensors made inside (weights, masks, tables, inputs) are made on ``device`` in ``dtype``
    (floating point ones; torch's default device and dtype, restored on exit), so that nothing is
    built on the CPU in fp32 and then copied."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)
