"""A whole model as a torch stack with random weights: time to first token and decode speed.

``build_stack(cfg, variant, T, batch, device, dtype)`` builds ``cfg`` (a ``costmodel.model_presets``
preset, a config.json or model file, or a ``ModelConfig``) the way ``costmodel.model_cost`` costs
it: token embedding (+ learned positions; Gemma's sqrt(d) scale), ``layers`` pre-norm blocks
[norm, attention, (post-norm), residual add, norm, MLP, (post-norm), residual add], final norm,
LM head (tied to the token table or not; soft-capped logits where the model caps them). The
attention of every layer is the profiler's own module of the layer's variant
(``profiler.modules.build_module``, with the layer's parameters: Gemma's local layers get their
window), the op-for-op module the cost model counts. Around it, as ``costmodel.model_attention``
prices it: a model whose heads x head dim differs from its width gets input projections from d
and an output projection to d (``_widen``); forward hooks on the q_proj and k_proj outputs apply
the q/k RMSNorm (Qwen3, Gemma 3) and RoPE (a ``rope`` model whose variant does not rotate its own
queries; a ``rope_fraction`` share of the channels), and on MLA's down projections the latent
RMSNorms. MLP: GELU (tanh form, 2 matmuls), SwiGLU / GeGLU (3 matmuls), or MoE: a softmax router
(with DeepSeek-V3's per-expert score bias), top-k of the routed experts (tokens gathered per
expert, weighted and added back) and the shared experts. Not built: biases of the attention
projections (the modules are bias-free) and attention soft-capping (PyTorch's SDPA has none; the
point says so).

Precision (``weights`` / ``kv``): fp8 weights replace every linear layer of the blocks but the
router by ``Fp8Linear`` (E4M3 weights with one scale, activations quantised per call, one
``torch._scaled_mm``), and the experts' matmuls likewise (MLA's per-head up-projections, raw
parameters of its module, stay in the compute dtype); an fp8 KV cache is stored in E4M3 and
converted to the compute dtype before each decode step (PyTorch's SDPA reads no fp8: the step
pays the conversion, which a fused fp8-cache kernel would not). Both need CUDA with compute
capability 8.9 or later (``precision_unmeasurable`` says what cannot be measured elsewhere);
weight-only int8 / int4 and an int8 cache are not measured (no such kernel in PyTorch).

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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..costmodel.model_attention import applies_rope
from ..costmodel.model_cost import predict_model
from ..costmodel.model_presets import get_model
from ..costmodel.model_spec import ModelConfig, attention_shape
from ..costmodel.results import Point, Run
from ..costmodel.shape import Shape
from ..costmodel.units import GIB, TORCH_DTYPE_NAMES, TORCH_FP8
from ..costmodel.variants import VariantError
from .device import synchronize, torch_dtype
from .harness import measure
from .modules import build_module
from .modules.base import Rope, uniform_
from .runner import OnPoint, guarded, one_line, open_run, predicted_oom, run_points

FAULT_HOOK: Optional[Callable[[str, str, int], None]] = None
FP8_MAX = 448.0  # largest finite E4M3 value
FP8_CAPABILITY = (8, 9)  # Ada and Hopper: fp8 tensor cores
UNQUANTISED = ("router",)  # linear layers of a block kept at the compute dtype


# -- what this device can measure --------------------------------------------------------------
def precision_unmeasurable(weights: Optional[str], kv: Optional[str], device: str,
                           dtype: Optional[str] = None) -> Optional[str]:
    """None where ``weights`` and ``kv`` (None or ``dtype``: the compute dtype) can be measured on
    ``device``; else one sentence saying what is not measurable there."""
    given = [(w, what) for w, what in ((weights, "weights"), (kv, "KV cache")) if w and w != dtype]
    other = [f"{w} {what}" for w, what in given if w in TORCH_DTYPE_NAMES]
    if other:
        return (f"{' and '.join(other)} with --dtype {dtype}: the stack keeps weights and caches in --dtype, or in "
                f"fp8 (pass --dtype {given[0][0]} instead)")
    asked = [f"{w} {what}" for w, what in given]
    if not asked:
        return None
    if weights in ("int8", "int4") or kv == "int8":
        return (f"{' and '.join(asked)} cannot be measured: PyTorch has no weight-only int8/int4 matmul or int8-cache "
                f"attention kernel that attncost runs (`attncost predict --model` predicts them)")
    why = _fp8_missing(device)
    return None if why is None else f"{' and '.join(asked)} cannot be measured here: {why}"


def _fp8_missing(device: str) -> Optional[str]:
    if device != "cuda":
        where = "on the CPU" if device == "cpu" else f"on {device}"
        return (f"fp8 matmuls (torch._scaled_mm) and fp8 tensors run only on a CUDA GPU of compute capability "
                f"{FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]} or later (Ada, Hopper), not {where}")
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, TORCH_FP8):
        return f"this torch {torch.__version__} has no torch._scaled_mm or {TORCH_FP8}"
    cap = torch.cuda.get_device_capability()
    if cap < FP8_CAPABILITY:
        return (f"{torch.cuda.get_device_name()} has compute capability {cap[0]}.{cap[1]}; fp8 tensor cores need "
                f"{FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]} or later (Ada, Hopper)")
    return None


# -- fp8 --------------------------------------------------------------------------------------
def _fp8(t: torch.Tensor) -> tuple:
    """(t in E4M3, its fp32 scale): one scale for the tensor, its largest magnitude at FP8_MAX."""
    scale = t.detach().abs().amax().float().clamp(min=1e-12) / FP8_MAX
    return (t.float() / scale).to(getattr(torch, TORCH_FP8)), scale


def fp8_matmul(x: torch.Tensor, w8: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """x (..., k) @ w8 (n, k)^T in fp8: x quantised with one scale, one ``torch._scaled_mm``
    (fp32 accumulation), the result in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    x8, x_scale = _fp8(rows)
    out = torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=x.dtype)
    out = out[0] if isinstance(out, tuple) else out  # torch < 2.4 also returned the amax
    return out.view(*x.shape[:-1], w8.shape[0])


class Fp8Linear(nn.Module):
    """A linear layer with E4M3 weights (one scale) run by ``fp8_matmul``; the bias, if any, in
    the compute dtype. cuBLASLt's fp8 GEMM needs both weight dims divisible by 16."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        n, k = lin.weight.shape
        if n % 16 or k % 16:
            raise VariantError(f"an fp8 matmul needs dims divisible by 16, not a {k} x {n} linear layer")
        w8, scale = _fp8(lin.weight)
        self.weight = nn.Parameter(w8, requires_grad=False)
        self.register_buffer("scale", scale)
        self.bias = lin.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = fp8_matmul(x, self.weight, self.scale)
        return y if self.bias is None else y + self.bias


def to_fp8(module: nn.Module) -> None:
    """Every ``nn.Linear`` inside ``module`` (but routers) becomes an ``Fp8Linear``, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and name not in UNQUANTISED:
            setattr(module, name, Fp8Linear(child))
        elif not isinstance(child, Fp8Linear):
            to_fp8(child)


# -- the stack ---------------------------------------------------------------------------------
def _norm(cfg: ModelConfig, dev, dt, width: int = 0) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(width or cfg.d, device=dev, dtype=dt)
    return nn.RMSNorm(width or cfg.d, device=dev, dtype=dt)


class GeluMLP(nn.Module):
    def __init__(self, d: int, h: int, bias: bool, dev, dt):
        super().__init__()
        self.fc = nn.Linear(d, h, bias=bias, device=dev, dtype=dt)
        self.proj = nn.Linear(h, d, bias=bias, device=dev, dtype=dt)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU (SiLU) or GeGLU (GELU, tanh form)."""

    def __init__(self, d: int, h: int, bias: bool, dev, dt, act: str = "swiglu"):
        super().__init__()
        self.gate = nn.Linear(d, h, bias=bias, device=dev, dtype=dt)
        self.up = nn.Linear(d, h, bias=bias, device=dev, dtype=dt)
        self.down = nn.Linear(h, d, bias=bias, device=dev, dtype=dt)
        self.act = F.silu if act == "swiglu" else (lambda t: F.gelu(t, approximate="tanh"))

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


class MoEMLP(nn.Module):
    """Softmax router (a score bias per expert where the model has one), top-k routed SwiGLU
    experts (weights (E, out, in), as linear layers hold them), shared experts always on. Tokens
    are sorted by expert; each expert with tokens runs one SwiGLU over its rows; ``to_fp8`` makes
    the experts' matmuls fp8."""

    def __init__(self, cfg: ModelConfig, dev, dt):
        super().__init__()
        m, d = cfg.moe, cfg.d
        E, h = m.routed_experts, m.expert_hidden
        self.k = m.active_experts
        self.router = nn.Linear(d, E, bias=False, device=dev, dtype=dt)
        self.score_bias = nn.Parameter(torch.zeros(E, device=dev, dtype=dt)) if m.router_bias else None
        self.w_gate = nn.Parameter(uniform_(torch.empty(E, h, d, device=dev, dtype=dt), d))
        self.w_up = nn.Parameter(uniform_(torch.empty(E, h, d, device=dev, dtype=dt), d))
        self.w_down = nn.Parameter(uniform_(torch.empty(E, d, h, device=dev, dtype=dt), h))
        self.scales: Optional[dict] = None  # per-expert fp8 scales, once ``to_fp8`` ran
        self.shared = GatedMLP(d, m.shared_experts * h, False, dev, dt) if m.shared_experts else None

    def to_fp8(self) -> None:
        if any(n % 16 for n in self.w_gate.shape[1:]):
            dims = tuple(self.w_gate.shape[1:])
            raise VariantError(f"an fp8 matmul needs dims divisible by 16, not experts of {dims}")
        self.scales = {}
        for name in ("w_gate", "w_up", "w_down"):
            w = getattr(self, name)
            pairs = [_fp8(w[e]) for e in range(w.shape[0])]
            setattr(self, name, nn.Parameter(torch.stack([p[0] for p in pairs]), requires_grad=False))
            self.scales[name] = [p[1] for p in pairs]
        if self.shared is not None:
            to_fp8(self.shared)

    def _mm(self, x, name: str, e: int):
        w = getattr(self, name)[e]
        return F.linear(x, w) if self.scales is None else fp8_matmul(x, w, self.scales[name][e])

    def forward(self, x):
        B, L, d = x.shape
        xf = x.reshape(-1, d)
        probs = torch.softmax(self.router(xf), dim=-1)
        scores = probs if self.score_bias is None else probs + self.score_bias
        idx = scores.topk(self.k, dim=-1).indices  # (N, k)
        w = probs.gather(-1, idx)
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
            y = self._mm(F.silu(self._mm(seg, "w_gate", e)) * self._mm(seg, "w_up", e), "w_down", e)
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
        self.post_attn = _norm(cfg, dev, dt) if cfg.post_norms else None
        self.post_mlp = _norm(cfg, dev, dt) if cfg.post_norms else None

    def attend(self, h, *cache):
        """The attention's output for the normed input ``h`` (post-normed where the model does)."""
        a = self.attn(h, *cache)
        return a if self.post_attn is None else self.post_attn(a)

    def feed(self, x):
        m = self.mlp(self.norm_mlp(x))
        return m if self.post_mlp is None else self.post_mlp(m)

    def forward(self, x, *cache):
        x = x + self.attend(self.norm_attn(x), *cache)
        return x + self.feed(x)


def _window(attn: nn.Module) -> None:
    """A grouped-query module whose parameters carry a window (Mistral, Gemma's local layers)
    attends within it, as the cost model's gqa does: a band mask in prefill, a rolling cache of
    min(T, window) slots in decode (a no-op where the module already took its window)."""
    w = getattr(attn.params, "window", None)
    if w is None or getattr(attn, "window", w) is not None:
        return
    attn.window, attn.slots = w, min(attn.T, w)
    if attn.phase != "decode":
        attn.band_mask()


class ModelStack(nn.Module):
    """The whole model in one phase; ``forward(ids)`` (prefill, ids (B, T)) or, after
    ``to_decode()``, ``decode(ids)`` (ids (B, 1)) against ``self.caches``; both return logits.
    ``params``: the variant's parameters for every layer (each layer's own, such as a local
    layer's window, under them); ``weights`` / ``kv``: "fp8" or None (the compute dtype)."""

    def __init__(self, cfg: ModelConfig, variant: str, params: dict, T: int, batch: int, device: str,
                 dtype, *, logits: str = "all", backend: str = "auto", seed: int = 0,
                 weights: Optional[str] = None, kv: Optional[str] = None):
        super().__init__()
        if logits not in ("all", "last"):
            raise ValueError(f"logits must be 'all' or 'last', not {logits!r}")
        why = precision_unmeasurable(weights, kv, device, next(
            (k for k, v in TORCH_DTYPE_NAMES.items() if getattr(torch, v) == dtype), None))
        if why:
            raise VariantError(why)
        self.cfg, self.variant, self.params, self.T, self.batch = cfg, variant, dict(params), T, batch
        self.device_name, self.dtype, self.logits, self.backend, self.seed = device, dtype, logits, backend, seed
        self.weights, self.kv = weights, kv
        dev, dt = torch.device(device), dtype
        self.phase = "prefill"
        self.caches: list = []
        self.cache_scales: list = []
        torch.manual_seed(seed)
        self.wte = nn.Embedding(cfg.vocab, cfg.d, device=dev, dtype=dt)
        self.wpe = (nn.Embedding(max(cfg.context, T), cfg.d, device=dev, dtype=dt)
                    if cfg.positions == "learned" else None)
        rot = int(cfg.head_size * cfg.rope_fraction)
        self.rope = Rope(rot, T).to(device=dev, dtype=dt) if cfg.positions == "rope" and rot else None
        blocks = []
        for i in range(cfg.layers):
            if cfg.layer_kind(i) == "moe":
                mlp = MoEMLP(cfg, dev, dt)
            elif cfg.mlp == "gelu":
                mlp = GeluMLP(cfg.d, cfg.mlp_hidden, cfg.bias or cfg.mlp_bias, dev, dt)
            else:
                mlp = GatedMLP(cfg.d, cfg.mlp_hidden, cfg.bias or cfg.mlp_bias, dev, dt, cfg.mlp)
            if weights == "fp8":
                mlp.to_fp8() if isinstance(mlp, MoEMLP) else to_fp8(mlp)
            blocks.append(Block(self._attention("prefill", i), mlp, cfg, dev, dt))
        self.blocks = nn.ModuleList(blocks)
        self.norm_final = _norm(cfg, dev, dt)
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(cfg.d, cfg.vocab, bias=False, device=dev, dtype=dt)
        self.requires_grad_(False)
        self.eval()

    @property
    def notes(self) -> list:
        """What the stack runs differently from the cost model's prediction."""
        out = []
        if self.cfg.attention_softcap:
            out.append("attention soft-capping is not run (PyTorch's SDPA has none): the measured times leave it out")
        if self.kv == "fp8":
            out.append("fp8 KV cache: stored in fp8, converted to the compute dtype before each decode step (SDPA "
                       "reads no fp8), which the prediction's fused kernel does not pay")
        return out

    def set_attention(self, variant: str, params: dict) -> None:
        """Every layer's attention becomes ``variant``'s (``params`` as ``ModelStack`` takes them),
        in prefill; the other weights stay, the caches go."""
        self.caches, self.cache_scales = [], []
        for b in self.blocks:
            b.attn = None  # free each module (and its mask) before building the next
        self.variant, self.params, self.phase = variant, dict(params), "prefill"
        for i, b in enumerate(self.blocks):
            b.attn = self._attention("prefill", i)

    def held_bytes(self) -> int:
        """Device bytes the stack holds: parameters, buffers and decode caches."""
        tensors = [*self.parameters(), *self.buffers(), *(t for c in self.caches for t in c)]
        return sum(t.numel() * t.element_size() for t in tensors)

    # -- pieces --------------------------------------------------------------------------------
    def _shape(self, phase: str) -> Shape:
        dtype = next(k for k, v in TORCH_DTYPE_NAMES.items() if getattr(torch, v) == self.dtype)
        return attention_shape(self.cfg, self.T, self.batch, dtype, phase)

    def _attention(self, phase: str, layer: int) -> nn.Module:
        """Layer ``layer``'s attention module in ``phase``, fitted into the model (width, norms,
        RoPE hooks, fp8 linear layers)."""
        cfg = self.cfg
        swapped = None if self.variant == cfg.attention else self.variant
        variant, params, _ = cfg.layer_attention_at(layer, swapped, self.params)
        module, inputs = build_module(variant, self._shape(phase), params, self.device_name, self.dtype,
                                      backend=self.backend, seed=self.seed + layer)
        del inputs  # the random layer input (and, in decode, its cache): the stack makes its own
        _window(module)
        self._widen(module, layer)
        if self.weights == "fp8":
            to_fp8(module)
        self._hook(module)
        module.requires_grad_(False)
        module.eval()
        return module

    def _widen(self, attn: nn.Module, layer: int) -> None:
        """A module built at heads x head dim, in a model of another width d: its input
        projections (the graph's ops that read "x") take d, its output projection gives d."""
        d, width = self.cfg.d, self.cfg.attention_width
        if d == width:
            return
        g = attn.graph
        last = next(op.name for op in reversed(g.ops) if op.out == g.outputs[-1])
        gen = torch.Generator().manual_seed(1000 * self.seed + layer)
        for name in [op.name for op in g.ops if "x" in op.reads] + [last]:
            lin = getattr(attn, name, None)
            if not isinstance(lin, nn.Linear):
                raise VariantError(f"{attn.variant}: its {name} is not a linear layer the stack can fit to d={d}")
            k, n = (lin.in_features, d) if name == last else (d, lin.out_features)
            w = torch.empty(n, k).uniform_(-1 / math.sqrt(k), 1 / math.sqrt(k), generator=gen)  # nn.Linear's range
            new = nn.Linear(k, n, bias=False, device=lin.weight.device, dtype=lin.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(w)
            setattr(attn, name, new)

    def _hook(self, attn: nn.Module) -> None:
        """Forward hooks: q/k RMSNorm and RoPE on the q_proj and k_proj outputs (B, L, n*dh), at
        positions from ``attn.rope_start``; MLA's latent RMSNorms on its down projections."""
        cfg, dev = self.cfg, torch.device(self.device_name)
        attn.rope_start = 0
        rope = self.rope if applies_rope(cfg, attn.graph) else None
        for name in ("q_proj", "k_proj"):
            lin = getattr(attn, name, None)
            if isinstance(lin, nn.Module) and (rope is not None or cfg.qk_norm):
                norm = nn.RMSNorm(cfg.head_size, device=dev, dtype=self.dtype) if cfg.qk_norm else None
                if norm is not None:
                    setattr(attn, name.replace("_proj", "_norm"), norm)
                lin.register_forward_hook(self._qk_hook(attn, norm, rope))
        if cfg.latent_norm and hasattr(attn.params, "kv_lora_rank"):
            dc, dq = attn.params.kv_lora_rank, attn.params.q_lora_rank
            attn.kv_latent_norm = nn.RMSNorm(dc, device=dev, dtype=self.dtype)
            attn.kv_down.register_forward_hook(lambda mod, args, out: attn.kv_latent_norm(out))
            if dq:
                attn.q_latent_norm = nn.RMSNorm(dq, device=dev, dtype=self.dtype)
                attn.q_down.register_forward_hook(lambda mod, args, out: attn.q_latent_norm(out))

    def _qk_hook(self, attn: nn.Module, norm: Optional[nn.Module], rope: Optional[Rope]):
        dh = self.cfg.head_size

        def hook(mod, args, out):
            B, L, n = out.shape
            h = out.view(B, L, n // dh, dh)
            if norm is not None:
                h = norm(h)
            if rope is not None:
                r = rope.dim
                turned = rope(h[..., :r], attn.rope_start, heads=True)
                h = turned if r == dh else torch.cat([turned, h[..., r:]], -1)
            return h.reshape(B, L, n)

        return hook

    def _embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        x = self.wte(ids)
        if self.wpe is not None:
            pos = torch.arange(start, start + ids.shape[1], device=ids.device)
            x = x + self.wpe(pos)
        return x * math.sqrt(self.cfg.d) if self.cfg.embed_scale else x

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_final(x)
        logits = F.linear(x, self.wte.weight) if self.lm_head is None else self.lm_head(x)
        cap = self.cfg.logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

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
                    x = x + b.attend(h)
                    x = x + b.feed(x)
                del x, h
        gen = torch.Generator(device=dev)
        gen.manual_seed(self.seed)
        self.caches, self.cache_scales = [], []
        for i, b in enumerate(self.blocks):
            b.attn = None  # free the prefill module (and its mask) before building the next
            attn = self._attention("decode", i)
            if pasts:
                past, pasts[i] = pasts[i], None
            else:
                past = torch.randn(self.batch, self.T - 1, self.cfg.d, device=dev, dtype=self.dtype, generator=gen)
            with torch.inference_mode():
                self._keep_cache(tuple(attn.cache_from(past)))
            del past
            attn.rope_start = self.T - 1
            b.attn = attn
        self.phase = "decode"

    def _keep_cache(self, cache: tuple) -> None:
        """Keep one layer's cache: as it is, or its float tensors in fp8 with their scales."""
        if self.kv != "fp8":
            self.caches.append(cache)
            self.cache_scales.append(None)
            return
        pairs = [_fp8(t) if t.is_floating_point() else (t, None) for t in cache]
        self.caches.append(tuple(p[0] for p in pairs))
        self.cache_scales.append(tuple(p[1] for p in pairs))

    def _cache(self, i: int) -> tuple:
        """Layer ``i``'s cache as its attention reads it (an fp8 cache converted first)."""
        scales = self.cache_scales[i]
        if scales is None:
            return self.caches[i]
        return tuple(t if s is None else t.to(self.dtype) * s.to(self.dtype) for t, s in zip(self.caches[i], scales))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """One new token per sequence, ids (B, 1), at position T-1 against the caches: logits (B, 1, vocab)."""
        if self.phase != "decode":
            raise RuntimeError("call to_decode() first")
        x = self._embed(ids, self.T - 1)
        for i, b in enumerate(self.blocks):
            x = b(x, *self._cache(i))
        return self._head(x)


def build_stack(model, variant: Optional[str] = None, T: int = 128, batch: int = 1, device: str = "cpu",
                dtype="fp32", *, params: Optional[dict] = None, logits: str = "all", backend: str = "auto",
                seed: int = 0, weights_dtype: Optional[str] = None, kv_dtype: Optional[str] = None) -> ModelStack:
    """The model (preset name, config.json or model file, or ModelConfig) with attention
    ``variant`` (default its native one, with the model's parameters for it, ``params`` over them),
    in prefill; ``weights_dtype`` / ``kv_dtype``: "fp8" or None (the compute dtype)."""
    cfg = get_model(model)
    variant = variant or cfg.attention
    dt = dtype if isinstance(dtype, torch.dtype) else torch_dtype(dtype)
    return ModelStack(cfg, variant, cfg.variant_params(variant, params), T, batch, device, dt, logits=logits,
                      backend=backend, seed=seed, weights=weights_dtype, kv=kv_dtype)


# -- one point ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackSpec:
    """How a run builds and times its stacks (everything but the variant and T)."""

    dtype: str
    params: Optional[dict] = None
    new_tokens: int = 8
    logits: str = "all"
    backend: str = "auto"
    weights: Optional[str] = None  # "fp8" or None: the compute dtype
    kv: Optional[str] = None
    measure_kwargs: dict = field(default_factory=dict)

    def label(self, name: str) -> str:
        """The model's name in the results, with its stored precisions where they are not the dtype's."""
        parts = [f"{what} {v}" for what, v in (("weights", self.weights), ("KV", self.kv)) if v and v != self.dtype]
        return f"{name} ({', '.join(parts)})" if parts else name


def model_point(model, variant: Optional[str], T: int, batch: int, device: str, dtype: str, *,
                params: Optional[dict] = None, new_tokens: int = 8, logits: str = "all", hardware=None,
                backend: str = "auto", measure_kwargs: Optional[dict] = None,
                fault_hook: Optional[Callable] = None, model_label: Optional[str] = None,
                stacks: Optional[StackCache] = None, weights_dtype: Optional[str] = None,
                kv_dtype: Optional[str] = None) -> Point:
    """Measure one (model, variant, T, batch) point beside ``predict_model``: status ok, n/a
    (the variant does not apply), oom-predicted (not built), oom, or error (one-line message).
    ``stacks``: where the stack of the previous point is kept for reuse (None: build a new one)."""
    cfg = get_model(model)
    variant = variant or cfg.attention
    spec = StackSpec(dtype, params, new_tokens, logits, backend, weights_dtype, kv_dtype, measure_kwargs or {})
    shape = attention_shape(cfg, T, batch, dtype, "prefill")
    point = Point(variant=variant, params=cfg.variant_params(variant, params), shape=shape,
                  backend=None if backend == "auto" else backend, model=model_label or spec.label(cfg.name),
                  logits=logits, new_tokens=new_tokens)
    try:
        est = predict_model(cfg, T=T, batch=batch, dtype=dtype, variant=variant, params=params, hardware=hardware,
                            search=False, logits=logits, weights_dtype=weights_dtype or dtype,
                            kv_dtype=kv_dtype or dtype)
    except ValueError as err:  # VariantError, HardwareError, PrecisionError, out-of-range values
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
    what = (f"{cfg.name} in {dtype} (weights {est.weights_bytes / GIB:,.1f} GiB + KV cache + activations, "
            f"predicted)")
    if predicted_oom(point, est.memory_bytes, device, what, held_bytes=stacks.held_bytes()):
        return point
    hook = fault_hook if fault_hook is not None else FAULT_HOOK
    return guarded(point, device, lambda p: _measure(p, cfg, est, device, spec, hook, stacks))


class StackCache:
    """The stack of the last point, kept for the next point at the same (T, batch, logits,
    backend, precision), which swaps in its own attention; dropped as soon as it cannot serve."""

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self.stack: Optional[ModelStack] = None

    def get(self, cfg: ModelConfig, variant: str, T: int, batch: int, device: str, spec: StackSpec) -> ModelStack:
        key = (cfg.name, T, batch, device, spec.dtype, spec.logits, spec.backend, spec.weights, spec.kv)
        if self.stack is not None and self.key == key:
            self.stack.set_attention(variant, cfg.variant_params(variant, spec.params))
            return self.stack
        self.drop()
        self.stack = build_stack(cfg, variant, T, batch, device, spec.dtype, params=spec.params, logits=spec.logits,
                                 backend=spec.backend, weights_dtype=spec.weights, kv_dtype=spec.kv)
        self.key = key
        return self.stack

    def held_bytes(self) -> int:
        return 0 if self.stack is None else self.stack.held_bytes()

    def drop(self) -> None:
        self.key = self.stack = None


def _measure(point: Point, cfg, est, device, spec: StackSpec, hook, stacks: StackCache) -> None:
    """Build (or reuse), time the prefill, swap to decode, time the decode; fills ``point`` as it
    goes. A failure drops the stack (it may be half built), so that its memory is released."""
    try:
        _measure_stack(point, cfg, est, device, spec, hook, stacks)
    except BaseException:
        stacks.drop()
        raise


def _measure_stack(point: Point, cfg, est, device, spec: StackSpec, hook, stacks: StackCache) -> None:
    if hook is not None:
        hook(point.model, point.variant, point.shape.T)
    B, T = point.shape.batch, point.shape.T
    stack = stacks.get(cfg, point.variant, T, B, device, spec)
    point.message = "; ".join(stack.notes) or None
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    ids = torch.randint(0, cfg.vocab, (B, T), device=device, generator=gen)

    def prefill():
        with torch.inference_mode():
            return stack(ids)

    kw = spec.measure_kwargs
    point.timing = measure(prefill, device, **_kwargs(prefill, device, kw))
    point.ttft_s = point.timing.median_s
    if est.decode is None:
        point.message = "; ".join(filter(None, [point.message, f"no decode: {est.decode_reason}"]))
        return
    stack.to_decode(ids)  # the caches of the T-1 first tokens; decode steps repeat token T
    first = ids[:, -1:].clone()

    def generate():
        tok = first
        with torch.inference_mode():
            for _ in range(spec.new_tokens):
                tok = stack.decode(tok)[:, -1].argmax(-1, keepdim=True)
        return tok

    t = measure(generate, device, **_kwargs(generate, device, kw))
    n = spec.new_tokens
    point.decode_timing = t.model_copy(update={
        "median_s": t.median_s / n, "p10_s": t.p10_s / n, "p90_s": t.p90_s / n,
        "min_s": None if t.min_s is None else t.min_s / n})
    point.decode_s_per_token = point.decode_timing.median_s
    point.decode_tokens_per_s = B / point.decode_s_per_token
    stack.caches, stack.cache_scales = [], []  # the next point at this T starts from the prefill again


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
               fault_hook: Optional[Callable] = None, weights_dtype: Optional[str] = None,
               kv_dtype: Optional[str] = None) -> Run:
    """Every (T, variant) point of ``model``, saved to ``run_path`` after each point (temp file +
    rename, as the layer sweep); ``resume`` skips the points the file already holds.
    ``on_begin(point, index, total)``; ``on_point(point, index, total, skipped)``."""
    cfg = get_model(model)
    path = Path(run_path)
    run = open_run(path, resume, device, dtype, env=env, command=command, name=name, hardware=hardware)
    grid = [(v or cfg.attention, t) for t in Ts for v in variants]
    label = StackSpec(dtype, weights=weights_dtype, kv=kv_dtype).label(cfg.name)
    probes = [Point(variant=v, params=_resolved(cfg, v, T, batch, dtype, params),
                    shape=attention_shape(cfg, T, batch, dtype, "prefill"),
                    model=label, logits=logits, new_tokens=new_tokens) for v, T in grid]

    stacks = StackCache()

    def measure_one(index: int) -> Point:
        variant, T = grid[index]
        return model_point(cfg, variant, T, batch, device, dtype, params=params, new_tokens=new_tokens,
                           logits=logits, hardware=hardware, backend=backend, measure_kwargs=measure_kwargs,
                           fault_hook=fault_hook, model_label=label, stacks=stacks, weights_dtype=weights_dtype,
                           kv_dtype=kv_dtype)

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


__all__ = ["ModelStack", "StackCache", "StackSpec", "build_stack", "model_point", "run_models",
           "precision_unmeasurable", "Fp8Linear", "fp8_matmul", "FAULT_HOOK"]
