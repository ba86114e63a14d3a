"""A whole model preset as a torch stack with random weights: time to first token and decode speed.

``build_stack(cfg, variant, T, batch, device, dtype)`` builds ``cfg`` (a ``costmodel.model_presets``
preset, file or ``ModelConfig``) the way ``costmodel.model_cost`` costs it: token embedding (+ learned
positions), ``layers`` pre-norm blocks [norm, attention, residual add, norm, MLP, residual add],
final norm, LM head (tied to the token table or not). The attention of every layer is the
profiler's own module of the variant (``profiler.modules.build_module``, with the preset's
parameters for it), the op-for-op module the cost model counts; a ``rope`` model whose variant
does not rotate its own queries gets RoPE on the q_proj and k_proj outputs (forward hooks), as
``costmodel.model_pass`` prices it. MLP: GELU (tanh form, 2 matmuls), SwiGLU (3 matmuls), or MoE: a
softmax router, top-k of the routed SwiGLU experts (tokens gathered per expert, weighted and
added back) and the shared experts.

Attention modules are built for one phase (a decode module writes slot T-1 of a T-slot cache),
so the stack starts in prefill and ``to_decode()`` swaps every layer's attention for its decode
module (other weights are kept) and builds each layer's cache of T slots from random hidden
states of T-1 past tokens (``cache_from``).

``measure_model(...)`` times the prefill (``stack(ids)``: the forward over T tokens producing the
logits, ``logits`` "all" rows or the "last" token of each sequence, as ``predict_model``) and
decode (one timed call = ``new_tokens`` greedy steps, each one token per sequence against the
caches of T; the per-token time is the call's time / new_tokens, always at cache length T because
a decode module rewrites slot T-1), beside ``costmodel.model_cost.predict_model`` for a hardware
profile. Before anything is allocated, the predicted memory (weights + KV cache + prefill
activations) is compared with the device's free memory (``profiler.runner.predicted_oom``, as the
layer sweep does): a model that cannot fit gets status "oom-predicted" with the numbers; a real
out-of-memory error becomes "oom" (``profiler.runner.guarded``). ``run_models`` runs every
(T, variant) point through ``profiler.runner``, resumable as the layer sweep. Everything is built
on the run's device in its dtype, and the stack is built once per (T, batch): the points of the
other variants at that T swap in their attention (``ModelStack.set_attention``), keeping the
embeddings, MLPs, norms and head.

``FAULT_HOOK`` (or the ``fault_hook`` argument), called with (model name, variant, T) before a
point is built, lets tests simulate an OOM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..costmodel.model_cost import predict_model
from ..costmodel.model_presets import get_model
from ..costmodel.model_spec import ModelConfig, attention_shape
from ..costmodel.results import Point, Run
from ..costmodel.shape import Shape
from ..costmodel.units import TORCH_DTYPE_NAMES
from .device import synchronize, torch_dtype
from .harness import measure
from .modules import build_module
from .modules.base import Rope, uniform_
from .runner import OnPoint, guarded, one_line, open_run, predicted_oom, run_points

FAULT_HOOK: Optional[Callable[[str, str, int], None]] = None


# -- the stack ---------------------------------------------------------------------------------
def _norm(cfg: ModelConfig, dev, dt) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d, device=dev, dtype=dt)
    return nn.RMSNorm(cfg.d, device=dev, dtype=dt)


class GeluMLP(nn.Module):
    def __init__(self, d: int, h: int, bias: bool, dev, dt):
        super().__init__()
        self.fc = nn.Linear(d, h, bias=bias, device=dev, dtype=dt)
        self.proj = nn.Linear(h, d, bias=bias, device=dev, dtype=dt)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class SwiGLU(nn.Module):
    def __init__(self, d: int, h: int, bias: bool, dev, dt):
        super().__init__()
        self.gate = nn.Linear(d, h, bias=bias, device=dev, dtype=dt)
        self.up = nn.Linear(d, h, bias=bias, device=dev, dtype=dt)
        self.down = nn.Linear(h, d, bias=bias, device=dev, dtype=dt)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MoEMLP(nn.Module):
    """Softmax router, top-k routed SwiGLU experts (weights (E, d, h)), shared experts always on.
    Tokens are sorted by expert; each expert with tokens runs one SwiGLU over its rows."""

    def __init__(self, cfg: ModelConfig, dev, dt):
        super().__init__()
        m, d = cfg.moe, cfg.d
        E, h = m.routed_experts, m.expert_hidden
        self.k = m.active_experts
        self.router = nn.Linear(d, E, bias=False, device=dev, dtype=dt)
        self.w_gate = nn.Parameter(uniform_(torch.empty(E, d, h, device=dev, dtype=dt), d))
        self.w_up = nn.Parameter(uniform_(torch.empty(E, d, h, device=dev, dtype=dt), d))
        self.w_down = nn.Parameter(uniform_(torch.empty(E, h, d, device=dev, dtype=dt), h))
        self.shared = SwiGLU(d, m.shared_experts * h, False, dev, dt) if m.shared_experts else None

    def forward(self, x):
        B, L, d = x.shape
        xf = x.reshape(-1, d)
        probs = torch.softmax(self.router(xf), dim=-1)
        w, idx = probs.topk(self.k, dim=-1)  # (N, k)
        flat = idx.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.w_gate.shape[0]).tolist()
        rows = order // self.k  # the token of each (token, choice), sorted by expert
        xs = xf[rows]
        ws = w.reshape(-1)[order].unsqueeze(-1)
        out = torch.zeros_like(xf)
        start = 0
        for e, c in enumerate(counts):
            if not c:
                continue
            seg = xs[start:start + c]
            y = torch.matmul(F.silu(torch.matmul(seg, self.w_gate[e])) * torch.matmul(seg, self.w_up[e]),
                             self.w_down[e])
            out.index_add_(0, rows[start:start + c], y * ws[start:start + c])
            start += c
        if self.shared is not None:
            out = out + self.shared(xf)
        return out.view(B, L, d)


class Block(nn.Module):
    def __init__(self, attn: nn.Module, mlp: nn.Module, cfg: ModelConfig, dev, dt):
        super().__init__()
        self.norm_attn, self.attn = _norm(cfg, dev, dt), attn
        self.norm_mlp, self.mlp = _norm(cfg, dev, dt), mlp

    def forward(self, x, *cache):
        x = x + self.attn(self.norm_attn(x), *cache)
        return x + self.mlp(self.norm_mlp(x))


class ModelStack(nn.Module):
    """The whole model in one phase; ``forward(ids)`` (prefill, ids (B, T)) or, after
    ``to_decode()``, ``decode(ids)`` (ids (B, 1)) against ``self.caches``; both return logits."""

    def __init__(self, cfg: ModelConfig, variant: str, params: dict, T: int, batch: int, device: str,
                 dtype, *, logits: str = "all", backend: str = "auto", seed: int = 0):
        super().__init__()
        if logits not in ("all", "last"):
            raise ValueError(f"logits must be 'all' or 'last', not {logits!r}")
        self.cfg, self.variant, self.params, self.T, self.batch = cfg, variant, dict(params), T, batch
        self.device_name, self.dtype, self.logits, self.backend, self.seed = device, dtype, logits, backend, seed
        dev, dt = torch.device(device), dtype
        self.phase = "prefill"
        self.caches: list = []
        torch.manual_seed(seed)
        self.wte = nn.Embedding(cfg.vocab, cfg.d, device=dev, dtype=dt)
        self.wpe = (nn.Embedding(max(cfg.context, T), cfg.d, device=dev, dtype=dt)
                    if cfg.positions == "learned" else None)
        blocks = []
        for i in range(cfg.layers):
            kind = "moe" if (cfg.moe is not None and i >= cfg.moe.first_dense_layers) else "dense"
            if kind == "moe":
                mlp = MoEMLP(cfg, dev, dt)
            elif cfg.mlp == "swiglu":
                mlp = SwiGLU(cfg.d, cfg.mlp_hidden, cfg.bias, dev, dt)
            else:
                mlp = GeluMLP(cfg.d, cfg.mlp_hidden, cfg.bias, dev, dt)
            blocks.append(Block(self._attention("prefill", i), mlp, cfg, dev, dt))
        self.blocks = nn.ModuleList(blocks)
        self.norm_final = _norm(cfg, dev, dt)
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(cfg.d, cfg.vocab, bias=False, device=dev, dtype=dt)
        self.rope = None
        self._hook_ropes()
        self.requires_grad_(False)
        self.eval()

    def set_attention(self, variant: str, params: dict) -> None:
        """Every layer's attention becomes ``variant``'s (``params`` resolved by the model, as
        ``build_stack`` does), in prefill; the other weights stay, the caches go."""
        self.caches = []
        for b in self.blocks:
            b.attn = None  # free each module (and its mask) before building the next
        self.variant, self.params, self.phase = variant, dict(params), "prefill"
        for i, b in enumerate(self.blocks):
            b.attn = self._attention("prefill", i)
        self._hook_ropes()

    def held_bytes(self) -> int:
        """Device bytes the stack holds: parameters, buffers and decode caches."""
        tensors = [*self.parameters(), *self.buffers(), *(t for c in self.caches for t in c)]
        return sum(t.numel() * t.element_size() for t in tensors)

    # -- pieces --------------------------------------------------------------------------------
    def _shape(self, phase: str) -> Shape:
        dtype = next(k for k, v in TORCH_DTYPE_NAMES.items() if getattr(torch, v) == self.dtype)
        return attention_shape(self.cfg, self.T, self.batch, dtype, phase)

    def _attention(self, phase: str, layer: int) -> nn.Module:
        module, inputs = build_module(self.variant, self._shape(phase), dict(self.params), self.device_name,
                                      self.dtype, backend=self.backend, seed=self.seed + layer)
        del inputs  # the random layer input (and, in decode, its cache): the stack makes its own
        module.requires_grad_(False)
        module.eval()
        return module

    def _hook_ropes(self) -> None:
        """A ``rope`` model whose attention does not rotate its own queries: RoPE hooks on every layer."""
        cfg = self.cfg
        if cfg.positions != "rope" or any(op.fn == "rope" for op in self.blocks[0].attn.graph.ops):
            self.rope = None
            return
        if self.rope is None:
            self.rope = Rope(cfg.d // cfg.heads, self.T).to(device=torch.device(self.device_name), dtype=self.dtype)
        for b in self.blocks:
            self._hook_rope(b.attn)

    def _hook_rope(self, attn: nn.Module) -> None:
        """RoPE on the q_proj and k_proj outputs (B, L, n*dh), at positions from ``attn.rope_start``."""
        dh = self.cfg.d // self.cfg.heads
        attn.rope_start = 0

        def hook(mod, args, out):
            B, L, n = out.shape
            return self.rope(out.view(B, L, n // dh, dh), attn.rope_start, heads=True).view(B, L, n)

        for name in ("q_proj", "k_proj"):
            lin = getattr(attn, name, None)
            if isinstance(lin, nn.Module):
                lin.register_forward_hook(hook)

    def _embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        x = self.wte(ids)
        if self.wpe is not None:
            pos = torch.arange(start, start + ids.shape[1], device=ids.device)
            x = x + self.wpe(pos)
        return x

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_final(x)
        return F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x)

    # -- phases --------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Prefill: ids (B, T) -> logits (B, T, vocab), or (B, 1, vocab) with logits="last"."""
        if self.phase != "prefill":
            raise RuntimeError("the stack is in decode: call decode(ids)")
        x = self._embed(ids, 0)
        for b in self.blocks:
            x = b(x)
        if self.logits == "last":
            x = x[:, -1:]
        return self._head(x)

    def to_decode(self, ids: Optional[torch.Tensor] = None) -> None:
        """Swap every layer's attention for its decode module (same seed, so the same weights;
        the other weights stay) and build its cache of T slots from the T-1 past tokens: the
        hidden states of the prefill of ``ids`` (B, T), whose last token decode then repeats
        (``decode(ids[:, -1:])`` gives the prefill's last logits), or random hidden states."""
        dev = torch.device(self.device_name)
        pasts = []
        if ids is not None:
            with torch.inference_mode():
                x = self._embed(ids, 0)
                for b in self.blocks:
                    h = b.norm_attn(x)
                    pasts.append(h[:, :self.T - 1].clone())
                    x = x + b.attn(h)
                    x = x + b.mlp(b.norm_mlp(x))
                del x, h
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed)
        self.caches = []
        for i, b in enumerate(self.blocks):
            b.attn = None  # free the prefill module (and its mask) before building the next
            attn = self._attention("decode", i)
            if self.rope is not None:
                self._hook_rope(attn)
            if pasts:
                past, pasts[i] = pasts[i], None
            else:
                past = torch.randn(self.batch, self.T - 1, self.cfg.d, device=dev, dtype=self.dtype, generator=gen)
            with torch.inference_mode():
                self.caches.append(tuple(attn.cache_from(past)))
            del past
            if self.rope is not None:
                attn.rope_start = self.T - 1
            b.attn = attn
        self.phase = "decode"

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """One new token per sequence, ids (B, 1), at position T-1 against the caches: logits (B, 1, vocab)."""
        if self.phase != "decode":
            raise RuntimeError("call to_decode() first")
        x = self._embed(ids, self.T - 1)
        for b, cache in zip(self.blocks, self.caches):
            x = b(x, *cache)
        return self._head(x)


def build_stack(model, variant: Optional[str] = None, T: int = 128, batch: int = 1, device: str = "cpu",
                dtype="fp32", *, params: Optional[dict] = None, logits: str = "all", backend: str = "auto",
                seed: int = 0) -> ModelStack:
    """The model (preset name, JSON file or ModelConfig) with attention ``variant`` (default its
    native one, with the preset's parameters for it, ``params`` over them), in prefill."""
    cfg = get_model(model)
    variant = variant or cfg.attention
    dt = dtype if isinstance(dtype, torch.dtype) else torch_dtype(dtype)
    return ModelStack(cfg, variant, cfg.variant_params(variant, params), T, batch, device, dt,
                      logits=logits, backend=backend, seed=seed)


# -- one point ---------------------------------------------------------------------------------
def model_point(model, variant: Optional[str], T: int, batch: int, device: str, dtype: str, *,
                params: Optional[dict] = None, new_tokens: int = 8, logits: str = "all", hardware=None,
                backend: str = "auto", measure_kwargs: Optional[dict] = None,
                fault_hook: Optional[Callable] = None, model_label: Optional[str] = None,
                stacks: Optional[StackCache] = None) -> Point:
    """Measure one (model, variant, T, batch) point beside ``predict_model``: status ok, n/a
    (the variant does not apply), oom-predicted (not built), oom, or error (one-line message).
    ``stacks``: where the stack of the previous point is kept for reuse (None: build a new one)."""
    cfg = get_model(model)
    variant = variant or cfg.attention
    shape = attention_shape(cfg, T, batch, dtype, "prefill")
    point = Point(variant=variant, params=cfg.variant_params(variant, params), shape=shape,
                  backend=None if backend == "auto" else backend, model=model_label or cfg.name, logits=logits,
                  new_tokens=new_tokens)
    try:
        est = predict_model(cfg, T=T, batch=batch, dtype=dtype, variant=variant, params=params,
                            hardware=hardware, search=False, logits=logits)
    except ValueError as err:  # VariantError, HardwareError, out-of-range values
        point.status, point.message = "n/a", one_line(err)
        return point
    if est.status != "ok":
        point.status, point.message = "n/a", est.reason
        return point
    point.params = dict(est.params)
    point.predicted_flops = est.prefill.flops_total
    point.predicted_activation_bytes = est.prefill.activation_bytes
    point.predicted_memory_bytes = est.memory_bytes
    point.predicted_time_s = point.predicted_ttft_s = est.ttft_s
    if est.decode is not None:
        point.predicted_decode_s_per_token = est.decode.time_s
        point.predicted_decode_tokens_per_s = est.decode_tokens_per_s
    stacks = stacks if stacks is not None else StackCache()
    what = (f"{cfg.name} in {dtype} (weights {est.weights_bytes / 2**30:,.1f} GiB + KV cache + activations, "
            f"predicted)")
    if predicted_oom(point, est.memory_bytes, device, what, held_bytes=stacks.held_bytes()):
        return point
    hook = fault_hook if fault_hook is not None else FAULT_HOOK
    return guarded(point, device, lambda p: _measure(p, cfg, est, device, dtype, params, new_tokens, logits,
                                                      backend, measure_kwargs or {}, hook, stacks))


class StackCache:
    """The stack of the last point, kept for the next point at the same (T, batch, logits,
    backend), which swaps in its own attention; dropped as soon as it cannot serve."""

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self.stack: Optional[ModelStack] = None

    def get(self, cfg: ModelConfig, variant: str, params: Optional[dict], T: int, batch: int, device: str,
            dtype: str, logits: str, backend: str) -> ModelStack:
        key = (cfg.name, T, batch, device, dtype, logits, backend)
        if self.stack is not None and self.key == key:
            self.stack.set_attention(variant, cfg.variant_params(variant, params))
            return self.stack
        self.drop()
        self.stack = build_stack(cfg, variant, T, batch, device, dtype, params=params, logits=logits, backend=backend)
        self.key = key
        return self.stack

    def held_bytes(self) -> int:
        return 0 if self.stack is None else self.stack.held_bytes()

    def drop(self) -> None:
        self.key = self.stack = None


def _measure(point: Point, cfg, est, device, dtype, params, new_tokens, logits, backend, kw, hook,
             stacks: StackCache) -> None:
    """Build (or reuse), time the prefill, swap to decode, time the decode; fills ``point`` as it
    goes. A failure drops the stack (it may be half built), so that its memory is released."""
    try:
        _measure_stack(point, cfg, est, device, dtype, params, new_tokens, logits, backend, kw, hook, stacks)
    except BaseException:
        stacks.drop()
        raise


def _measure_stack(point: Point, cfg, est, device, dtype, params, new_tokens, logits, backend, kw, hook,
                   stacks: StackCache) -> None:
    if hook is not None:
        hook(point.model, point.variant, point.shape.T)
    B, T = point.shape.batch, point.shape.T
    stack = stacks.get(cfg, point.variant, params, T, B, device, dtype, logits, backend)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    ids = torch.randint(0, cfg.vocab, (B, T), device=device, generator=gen)

    def prefill():
        with torch.inference_mode():
            return stack(ids)

    point.timing = measure(prefill, device, **_kwargs(prefill, device, kw))
    point.ttft_s = point.timing.median_s
    if est.decode is None:
        point.message = f"no decode: {est.decode_reason}"
        return
    stack.to_decode(ids)  # the caches of the T-1 first tokens; decode steps repeat token T
    first = ids[:, -1:].clone()

    def generate():
        tok = first
        with torch.inference_mode():
            for _ in range(new_tokens):
                tok = stack.decode(tok)[:, -1].argmax(-1, keepdim=True)
        return tok

    t = measure(generate, device, **_kwargs(generate, device, kw))
    n = new_tokens
    point.decode_timing = t.model_copy(update={
        "median_s": t.median_s / n, "p10_s": t.p10_s / n, "p90_s": t.p90_s / n,
        "min_s": None if t.min_s is None else t.min_s / n})
    point.decode_s_per_token = point.decode_timing.median_s
    point.decode_tokens_per_s = B / point.decode_s_per_token
    stack.caches = []  # the next point at this T starts from the prefill again


def _kwargs(fn, device, kw: dict) -> dict:
    """measure()'s arguments; one call slower than half the budget is warm-up enough (as the sweep)."""
    import time

    t0 = time.perf_counter()
    fn()  # first call: lazy initialisation
    synchronize(device)
    first = time.perf_counter() - t0
    kw = dict(kw)
    if first > kw.get("budget_s", 2.0) / 2:
        kw["warmup"] = min(kw.get("warmup", 3), 1 if device == "cuda" else 0)
        kw.setdefault("min_reps", 3)
    return kw


# -- a run -------------------------------------------------------------------------------------
def run_models(run_path, model, variants: list, Ts: list, batch: int, device: str, dtype: str, *,
               params: Optional[dict] = None, new_tokens: int = 8, logits: str = "all", hardware=None,
               backend: str = "auto", resume: bool = False, env=None, command: str = "", name: str = "",
               measure_kwargs: Optional[dict] = None, on_begin=None, on_point: Optional[OnPoint] = None,
               fault_hook: Optional[Callable] = None) -> Run:
    """Every (T, variant) point of ``model``, saved to ``run_path`` after each point (temp file +
    rename, as the layer sweep); ``resume`` skips the points the file already holds.
    ``on_begin(point, index, total)``; ``on_point(point, index, total, skipped)``."""
    cfg = get_model(model)
    path = Path(run_path)
    run = open_run(path, resume, device, dtype, env=env, command=command, name=name, hardware=hardware)
    grid = [(v or cfg.attention, t) for t in Ts for v in variants]
    probes = [Point(variant=v, params=_resolved(cfg, v, T, batch, dtype, params),
                    shape=attention_shape(cfg, T, batch, dtype, "prefill"),
                    model=cfg.name, logits=logits, new_tokens=new_tokens) for v, T in grid]

    stacks = StackCache()

    def measure_one(index: int) -> Point:
        variant, T = grid[index]
        return model_point(cfg, variant, T, batch, device, dtype, params=params, new_tokens=new_tokens,
                           logits=logits, hardware=hardware, backend=backend, measure_kwargs=measure_kwargs,
                           fault_hook=fault_hook, model_label=cfg.name, stacks=stacks)

    try:
        return run_points(path, run, probes, measure_one, on_begin=on_begin, on_point=on_point)
    finally:
        stacks.drop()


def _resolved(cfg: ModelConfig, variant: str, T: int, batch: int, dtype: str, params) -> dict:
    """The variant's parameters as predict_model resolves them (the point's key)."""
    from ..costmodel.estimate import resolve_params

    extra = cfg.variant_params(variant, params)
    try:
        return dict(resolve_params(variant, attention_shape(cfg, T, batch, dtype, "prefill"), extra))
    except ValueError:  # VariantError, pydantic's ValidationError: the key keeps the given values
        return extra


__all__ = ["ModelStack", "StackCache", "build_stack", "model_point", "run_models", "FAULT_HOOK"]
