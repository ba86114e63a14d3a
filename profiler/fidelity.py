"""Fidelity: how closely each approximate variant reproduces exact softmax attention on the same
Q, K, V (``attncost fidelity``).

For every (variant, T, inputs) the variant's core (``profiler/approx.py``) runs on the Q/K/V
that exact attention runs on, and two numbers compare each result with the exact one, over all
sequences and heads at once (the tensors flattened):

- cosine similarity  <a, e> / (|a| |e|)   (1 = same direction),
- relative error     |a - e|_F / |e|_F     (0 = identical; the Frobenius norm),

for the output (B, H, T, dh) and, where the variant has one, the attention matrix (B, H, T, T).
The reference is exact attention with the causality the variant itself runs with: Linformer and
Nystromformer are not causal by nature and are compared with non-causal attention;
sliding_window and dsa are causal by nature; every other variant follows ``causal``. Beside each
point, ``baseline_*`` gives the same numbers for uniform attention over the visible keys (the
plain mean of V), the score of an approximation that knows nothing.

Inputs (``make_inputs``; q, k, v of shape (B, H, T, dh), fp32):

- ``random``: every entry of q, k, v iid N(0, 1), so each score q.k/sqrt(dh) has variance 1.
- ``structured``: heads with a local band plus a low-rank pattern, as trained heads show. Each
  head's query and key vectors are built so that its score matrix is

      S_ij = q_i.k_j / sqrt(dh) = (beta/F) sum_f cos(w_f (i - j))  +  gamma u_i.w_j  +  eta n_i.n'_j

  by stacking, in q_i and k_j (times dh^(1/4)), three blocks of channels:
  1. local band, 2F channels: sqrt(beta/F) [cos(w_f i), sin(w_f i)] (and the same at j), whose
     product is (beta/F) sum_f cos(w_f (i - j)). The F frequencies are drawn per head from
     N(0, 1/sigma^2), random Fourier features of the Gaussian kernel, so the band bias is
     ~ beta exp(-(i-j)^2 / (2 sigma^2)) near the diagonal (plus a ripple of order beta/sqrt(F) far
     from it); the head's width sigma cycles through 1, 2, 4, 8 tokens over the heads.
  2. low-rank content, r channels: sqrt(gamma) u_i and sqrt(gamma) w_j with u, w of iid
     N(0, 1/sqrt(r)) entries, a rank-r component of standard deviation gamma.
  3. noise, the remaining dh - 2F - r channels: sqrt(eta) n_i, sqrt(eta) n'_j likewise (std eta).
  F = dh/4, r = dh/8 (at least 1 each), beta = 6, gamma = 1.5, eta = 0.5; v is iid N(0, 1).
  The frequencies and widths belong to the head (drawn from ``seed``); the content u, w, n and v
  change with every sample.

Learned variants (topk, mlp_attention) are distilled first (``distill_topk``,
``distill_synthesizer``), the seeds' method (seeds.md #1, #2): their MLPs are trained with Adam
to reproduce exact attention on fresh synthetic samples of the same kind of inputs (``steps``
steps, each on one sample of B sequences, ``train_rows(T)`` of its queries drawn at random, so
that a step costs about the same at every T), then evaluated on the held-out evaluation sample
(sample 0, all queries).

Memory: attention matrices are formed one sequence and a few heads at a time (at most
CHUNK_ELEMS entries where the variant's head groups allow), and T is at most MAX_T. A point the
cost model says cannot fit in the free memory (``memory_needed``) is not run ("oom-predicted"), and
one that runs out of memory all the same is recorded as "oom".
"""

import hashlib
import itertools
import math
import time
from typing import Callable, Iterable, Optional, Sequence

import torch

from ..costmodel.estimate import estimate, graph, resolve_params
from ..costmodel.shape import Shape
from ..costmodel.units import GIB
from ..costmodel.variants import REGISTRY, VariantError
from . import approx as A
from .device import free_memory
from .harness import is_oom
from .runner import MEMORY_HEADROOM, one_line

INPUTS = ("random", "structured")
MAX_T = 4096  # fidelity materialises T x T attention matrices
SCHEMA_VERSION = 1

# kind of comparison each variant gets (see the module docstring of profiler/approx.py)
KINDS = {
    "mha": "reference",  # exact attention itself: the reference
    "flash": "reference",  # the same attention through SDPA: agreement up to rounding
    "gqa": "conversion",  # K/V heads mean-pooled per group (Ainslie 2023), no uptraining
    "mqa": "conversion",
    "mla": "skipped",
    "sliding_window": "approximation",
    "linformer": "approximation",
    "nystrom": "approximation",
    "performer": "approximation",
    "dsa": "oracle",  # top-k of the exact scores: what a perfectly trained indexer would select
    "topk": "learned",
    "mlp_attention": "learned",
    "msla": "untrained",
}
SKIP_REASONS = {
    "mla": "MLA's attention is exact softmax attention over its own (low-rank) K and V: what it "
           "changes lies in trained weights, not in the attention computation, so there is no "
           "approximation of given Q/K/V to measure",
}
NOTES = {
    "mha": "the reference: exact softmax attention, math path",
    "flash": "F.scaled_dot_product_attention on the same Q/K/V (no attention matrix: fused)",
    "gqa": "K/V heads mean-pooled per group as Ainslie et al. 2023 convert an MHA checkpoint, before "
           "uptraining; kv_heads = heads is exact",
    "mqa": "all K/V heads mean-pooled into one (Ainslie et al. 2023 conversion), before uptraining",
    "sliding_window": "causal by construction: compared with causal exact attention; exact when window >= T",
    "linformer": "not causal: compared with non-causal exact attention; E = F = segment means "
                 "(Linformer section 4 pooling; untrained); k = T is exact",
    "nystrom": "not causal: compared with non-causal exact attention; the depthwise conv on V "
               "(a learned residual) is left out",
    "performer": "iid positive random features (FAVOR+), as the profiler module; its error grows "
                 "as exp(|q|^2 + |k|^2) / features",
    "dsa": "oracle indexer (top-k of the exact scores): an upper bound for the trained lightning "
           "indexer; causal by construction; k >= T is exact",
    "topk": "attention matrix = the selector's softmax over its k chosen keys; the output comes "
            "from the HeadApproximator MLP",
    "mlp_attention": "the synthesizer's MLP reads each head's query (a linear map of x)",
    "msla": "untrained latents (the seed trains them with the LM); no token sees another token: "
            "its token attention matrix is the identity",
}
# the parameters that change a variant's fidelity (the label and the table show these)
FIDELITY_PARAMS = {
    "gqa": ("kv_heads",), "sliding_window": ("window",), "linformer": ("k",),
    "nystrom": ("landmarks", "pinv_iters"), "performer": ("features",), "dsa": ("k",),
    "topk": ("k", "hidden"), "mlp_attention": ("hidden",), "msla": ("latents", "k"),
}
STRUCTURED = dict(beta=6.0, gamma=1.5, eta=0.5, widths=(1.0, 2.0, 4.0, 8.0))
CHUNK_ELEMS = 1 << 24  # at most this many attention-matrix entries per chunk of heads
DISTILLED = ("topk", "mlp_attention")  # trained with Adam: weights, gradients and two moments
OOM_STATUSES = ("oom", "oom-predicted")


class FidelityError(ValueError):
    """Bad settings for a fidelity run (one plain sentence)."""


# -- inputs -------------------------------------------------------------------------------------
def _gen(*parts: int) -> torch.Generator:
    """A generator seeded from the integers ``parts`` (deterministic across runs)."""
    digest = hashlib.sha256(repr(tuple(int(x) for x in parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:6], "little"))


def structured_blocks(dh: int) -> tuple:
    """(F, r, noise): frequencies of the band block (2F channels), rank of the low-rank block,
    noise channels, for head dim dh."""
    if dh < 3:
        raise FidelityError(f"structured inputs need a head dimension (d / heads) of at least 3, not {dh}")
    F = max(1, dh // 4)
    r = max(1, dh // 8)
    return F, r, dh - 2 * F - r


def make_inputs(kind: str, batch: int, heads: int, T: int, dh: int, *, seed: int = 0, sample: int = 0,
                qk_std: float = 1.0, device="cpu", dtype=torch.float32) -> tuple:
    """(q, k, v), each (batch, heads, T, dh), of the given kind (see the module docstring).
    ``seed`` fixes the heads (structured: their frequencies and widths), ``sample`` the content;
    sample 0 is the evaluation sample, training uses samples 1, 2, ... ``qk_std`` scales q and k
    of random inputs (scores of variance qk_std^4)."""
    B, H = batch, heads
    g = _gen(seed, sample, 17)
    if kind == "random":
        q = torch.randn(B, H, T, dh, generator=g) * qk_std
        k = torch.randn(B, H, T, dh, generator=g) * qk_std
        v = torch.randn(B, H, T, dh, generator=g)
    elif kind == "structured":
        F, r, p = structured_blocks(dh)
        beta, gamma, eta = STRUCTURED["beta"], STRUCTURED["gamma"], STRUCTURED["eta"]
        widths = torch.tensor([STRUCTURED["widths"][h % len(STRUCTURED["widths"])] for h in range(H)])
        gh = _gen(seed, 29)
        omega = torch.randn(H, F, generator=gh, dtype=torch.float64) / widths[:, None].double()
        pos = torch.arange(T, dtype=torch.float64)
        ang = pos[None, :, None] * omega[:, None, :]  # (H, T, F)
        band = (math.sqrt(beta / F) * torch.cat([ang.cos(), ang.sin()], -1)).float()  # (H, T, 2F)
        band = band.expand(B, H, T, 2 * F)

        def block(n, scale):
            return torch.randn(B, H, T, n, generator=g) * (scale ** 0.5) * n ** -0.25

        q = torch.cat([band, block(r, gamma), block(p, eta)], -1)
        k = torch.cat([band, block(r, gamma), block(p, eta)], -1)
        q, k = q * dh ** 0.25, k * dh ** 0.25
        v = torch.randn(B, H, T, dh, generator=g)
    else:
        raise FidelityError(f"inputs must be one of {', '.join(INPUTS)}, not {kind!r}")
    return tuple(t.to(device=device, dtype=dtype).contiguous() for t in (q, k, v))


# -- comparison ---------------------------------------------------------------------------------
class Agreement:
    """Running sums for cosine similarity and relative Frobenius error over chunks (float64)."""

    def __init__(self):
        self.dot = self.aa = self.ee = self.diff = 0.0
        self.finite = True

    def add(self, a: torch.Tensor, e: torch.Tensor) -> None:
        a, e = a.double(), e.double()
        self.finite = self.finite and bool(torch.isfinite(a).all())
        self.dot += float((a * e).sum())
        self.aa += float((a * a).sum())
        self.ee += float((e * e).sum())
        self.diff += float(((a - e) ** 2).sum())

    @property
    def cosine(self) -> float:
        if self.aa == 0 or self.ee == 0:
            return 1.0 if self.aa == self.ee else 0.0
        return self.dot / math.sqrt(self.aa * self.ee)

    @property
    def rel_error(self) -> float:
        return math.sqrt(self.diff / self.ee) if self.ee else (0.0 if self.diff == 0 else math.inf)


def agreement(a: torch.Tensor, e: torch.Tensor) -> tuple:
    """(cosine similarity, relative Frobenius error) of a against the exact e."""
    acc = Agreement()
    acc.add(a, e)
    return acc.cosine, acc.rel_error


def uniform_attention(v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Each query's mean of the values it may see: the baseline."""
    if not causal:
        return v.mean(-2, keepdim=True).expand_as(v)
    n = torch.arange(1, v.shape[-2] + 1, device=v.device, dtype=v.dtype)[:, None]
    return v.cumsum(-2) / n


def head_chunks(heads: int, T: int, group: int = 1) -> list:
    """Slices of the heads, each a whole number of groups, each with at most CHUNK_ELEMS
    attention-matrix entries where a group allows it."""
    per = min(heads, max(group, (CHUNK_ELEMS // (T * T)) // group * group))
    while heads % per:
        per -= group
    return [slice(h, h + per) for h in range(0, heads, per)]


def label(variant: str, params: dict) -> str:
    """"linformer k=64": the variant and its fidelity parameters (those known)."""
    shown = [f"{n}={params[n]}" for n in FIDELITY_PARAMS.get(variant, ()) if params.get(n) is not None]
    return " ".join([variant, *shown])


def run_causal(variant: str, causal: bool) -> bool:
    """The causality the variant runs (and is compared) with."""
    nature = REGISTRY[variant].causal
    return causal if nature is None else nature


# -- distillation of the learned variants --------------------------------------------------------
TRAIN_LOGITS = 1 << 15  # logits per head per training step: T=256 trains on 128 queries, T=1024 on 32


def train_rows(T: int) -> int:
    """Query positions each training step uses (drawn at random; all T for T <= 181)."""
    return max(1, min(T, max(16, TRAIN_LOGITS // T)))


def _kl_rows(target: torch.Tensor, logits: torch.Tensor, *, with_entropy: bool = True) -> torch.Tensor:
    """Mean over rows of KL(target || softmax(logits)) (hidden keys: -inf logits, zero target).
    ``with_entropy=False``: the cross-entropy alone, which has the same gradient."""
    logp = torch.log_softmax(logits, dim=-1)
    ce = -(target * torch.where(target > 0, logp, torch.zeros_like(logp))).sum(-1).mean()
    if not with_entropy:
        return ce
    return ce + (target * torch.log(target.clamp_min(1e-30))).sum(-1).mean()


def _rel_sq(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return ((out - ref) ** 2).sum() / (ref ** 2).sum()


def _train_sample(inputs: str, batch: int, heads: int, T: int, dh: int, seed: int, step: int, causal: bool):
    """One training sample: its q rows, positions, k, v and the exact attention on those rows."""
    q, k, v = make_inputs(inputs, batch, heads, T, dh, seed=seed, sample=1 + step)
    R = train_rows(T)
    rows = None
    if R < T:
        rows = torch.randperm(T, generator=_gen(seed, step, 41))[:R].sort().values
        q = q[:, :, rows]
    with torch.no_grad():
        ref = A.exact(q, k, v, causal=causal, rows=rows)
    return q, k, v, rows, ref


def distill_topk(params, *, inputs: str, batch: int, heads: int, T: int, dh: int, causal: bool,
                 seed: int = 0, steps: int = 200, lr: float = 3e-3) -> tuple:
    """Train topk's KeySelector (KL to the exact attention rows: it learns where attention goes)
    and HeadApproximator (relative squared error to the exact head output, given the keys the
    selector picks) with Adam, one fresh sample of ``inputs`` per step (``train_rows(T)`` of its
    queries). Returns (model, info): the losses on the evaluation sample (all queries) before and
    after, the selector's top-1 accuracy against the exact top-1 key (seeds.md #2 reported 9.2%),
    the chance level of that accuracy, and how often the exact top-1 key is among the k selected."""
    model = A.TopkMLPs(dh, T, params.k, params.hidden, seed=seed + 101)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def evaluate():
        with torch.no_grad():
            ref = A.exact(*ev, causal=causal)
            out, lg, idx = model(ev[0], ev[2], causal=causal)
            return _kl_rows(ref.attn, lg), _rel_sq(out, ref.out), ref, lg, idx

    ev = make_inputs(inputs, batch, heads, T, dh, seed=seed, sample=0)
    kl0, sq0, *_ = evaluate()
    t0 = time.perf_counter()
    for step in range(steps):
        q, k, v, rows, ref = _train_sample(inputs, batch, heads, T, dh, seed, step, causal)
        out, lg, _ = model(q, v, causal=causal, rows=rows)
        loss = _kl_rows(ref.attn, lg, with_entropy=False) + _rel_sq(out, ref.out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    kl1, sq1, ref, lg, idx = evaluate()
    with torch.no_grad():
        top1 = ref.attn.argmax(-1)
        acc = float((lg.argmax(-1) == top1).double().mean())
        recall = float((idx == top1[..., None]).any(-1).double().mean())
        visible = torch.arange(1, T + 1, dtype=torch.float64) if causal else torch.full((T,), float(T), dtype=torch.float64)
        chance = float((1.0 / visible).mean())
    model.eval()
    info = dict(steps=steps, seconds=seconds, lr=lr, rows_per_step=train_rows(T), batch=batch,
                loss="selector KL(exact || selector) + head relative squared error",
                initial_loss=float(kl0 + sq0), final_loss=float(kl1 + sq1),
                selector_kl_initial=float(kl0), selector_kl_final=float(kl1),
                head_rel_sq_error_initial=float(sq0), head_rel_sq_error_final=float(sq1),
                selector_top1=acc, selector_top1_chance=chance, selector_recall_top1=recall)
    return model, info


def distill_synthesizer(params, *, inputs: str, batch: int, heads: int, T: int, dh: int, causal: bool,
                        seed: int = 0, steps: int = 200, lr: float = 3e-3) -> tuple:
    """Train mlp_attention's per-head MLP with Adam to reproduce the exact attention weights
    (KL(exact || synthesizer) per query row, as seeds.md #1 distilled GPT-2's attention
    weights), one fresh sample of ``inputs`` per step (``train_rows(T)`` of its queries).
    Returns (model, info) with the KL on the evaluation sample (all queries) before and after."""
    model = A.SynthesizerMLP(heads, dh, T, params.hidden, seed=seed + 202)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def evaluate():
        with torch.no_grad():
            ref = A.exact(*ev, causal=causal)
            return _kl_rows(ref.attn, model.logits(ev[0], causal))

    ev = make_inputs(inputs, batch, heads, T, dh, seed=seed, sample=0)
    l0 = evaluate()
    t0 = time.perf_counter()
    for step in range(steps):
        q, k, v, rows, ref = _train_sample(inputs, batch, heads, T, dh, seed, step, causal)
        loss = _kl_rows(ref.attn, model.logits(q, causal, rows), with_entropy=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    l1 = evaluate()
    model.eval()
    info = dict(steps=steps, seconds=seconds, lr=lr, rows_per_step=train_rows(T), batch=batch,
                loss="KL(exact || synthesizer) per query, nats",
                initial_loss=float(l0), final_loss=float(l1))
    return model, info


# -- one point, many points ---------------------------------------------------------------------
def _approximate(variant: str, q, k, v, params, *, causal: bool, seed: int, head0: int, model,
                 latents) -> A.Approx:
    if variant == "mha":
        return A.exact(q, k, v, causal=causal)
    if variant in ("gqa", "mqa"):
        kv = params.kv_heads if variant == "gqa" else 1
        return A.grouped(q, k, v, min(kv, q.shape[1]), causal=causal)
    fn = A.FUNCTIONS[variant]
    return fn(q, k, v, params, causal=causal, seed=seed, head0=head0, model=model, latents=latents)


def _group(variant: str, params, heads: int) -> int:
    if variant == "gqa":
        return heads // params.kv_heads
    if variant == "mqa":
        return heads
    return 1


def memory_needed(variant: str, shape: Shape, params: dict, resolved) -> float:
    """Bytes a point allocates, by the cost model (``estimate``): q, k, v of every sequence, plus,
    for one chunk of heads of one sequence (``head_chunks``), the larger of the variant's and exact
    attention's activation peak on the math path (``activation_bytes_unfused``, which counts the
    layer's input and projections too, so it errs high), plus for the distilled variants their
    weights other than the Q/K/V/O projections (which fidelity does not run), four times: with
    their gradients and Adam's two moments. Other variants train nothing."""
    H, dh = shape.heads, shape.head_dim
    heads = head_chunks(H, shape.T, _group(variant, resolved, H))[0]
    n = heads.stop - heads.start
    chunk = shape.with_(batch=1, heads=n, d=n * dh, kv_heads=None)
    peaks = [e.activation_bytes_unfused for e in (estimate(variant, chunk, params), estimate("mha", chunk))
             if e.status == "ok"]
    trained = 0.0
    if variant in DISTILLED:
        tensors = graph(variant, shape, resolved).tensors.values()
        trained = 4 * sum(t.elems * t.itemsize for t in tensors if t.role == "weight" and not t.name.endswith("_proj"))
    return 3 * shape.batch * shape.T * shape.d * shape.itemsize + max(peaks) + trained


def fidelity_point(variant: str, shape: Shape, inputs: str, *, params: Optional[dict] = None,
                   distill_steps: int = 200, seed: int = 0, lr: float = 3e-3) -> dict:
    """One point: ``variant`` at ``shape`` (T, d, heads, batch; shape.causal is the requested
    causality) on ``inputs``. See ``fidelity_points`` for the fields."""
    if variant not in REGISTRY:
        raise FidelityError(f"unknown variant {variant!r}: choose from {', '.join(REGISTRY)}")
    if inputs not in INPUTS:
        raise FidelityError(f"inputs must be one of {', '.join(INPUTS)}, not {inputs!r}")
    if shape.T > MAX_T:
        raise FidelityError(f"T must be at most {MAX_T} for fidelity (it forms T x T attention matrices), not {shape.T}")
    causal = run_causal(variant, shape.causal)
    shape = shape.model_copy(update={"causal": causal, "phase": "prefill", "dtype": "fp32"})
    B, H, T, dh = shape.batch, shape.heads, shape.T, shape.head_dim
    kind = KINDS[variant]
    try:  # the defaults, for the label of a point that turns out to be skipped
        shown = {**REGISTRY[variant].params(**(params or {})).model_dump(exclude_none=True)}
    except ValueError:
        shown = dict(params or {})
    point = dict(variant=variant, label=label(variant, shown), kind=kind, status="ok", reason=None, params=dict(params or {}),
                 T=T, d=shape.d, heads=H, head_dim=dh, batch=B, inputs=inputs, causal=causal,
                 seed=seed, dtype="fp32", shape=shape.model_dump(),
                 cosine_output=None, rel_error_output=None, cosine_attention=None, rel_error_attention=None,
                 baseline_cosine_output=None, baseline_rel_error_output=None,
                 distill=None, notes=[NOTES[variant]] if variant in NOTES else [], seconds=None)
    t0 = time.perf_counter()
    try:
        p = resolve_params(variant, shape, params)
    except VariantError as err:
        point.update(status="skipped", reason=str(err))
        return point
    point["params"] = p.model_dump()
    point["label"] = label(variant, point["params"])
    if kind == "skipped":
        point.update(status="skipped", reason=SKIP_REASONS[variant])
        return point
    if inputs == "structured":
        structured_blocks(dh)  # raises for a head dim too small
    need, free = memory_needed(variant, shape, params or {}, p), free_memory("cpu")
    if free is not None and need > MEMORY_HEADROOM * free:
        point.update(status="oom-predicted", reason=f"not run: it needs about {need / GIB:,.1f} GiB by the cost "
                                                    f"model, the cpu has {free / GIB:,.1f} GiB free")
        return point
    try:
        _compare(point, variant, shape, inputs, p, distill_steps=distill_steps, seed=seed, lr=lr, t0=t0)
    except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if not is_oom(err):
            raise
        point.update(status="oom", reason=f"out of memory: {one_line(err)}", distill=None, seconds=None)
    return point


def _compare(point: dict, variant: str, shape: Shape, inputs: str, p, *, distill_steps: int, seed: int, lr: float,
             t0: float) -> None:
    """Distil (the learned variants), run the variant and exact attention, fill in ``point``."""
    B, H, T, dh, causal = shape.batch, shape.heads, shape.T, shape.head_dim, shape.causal
    model = None
    if variant == "topk":
        model, point["distill"] = distill_topk(p, inputs=inputs, batch=B, heads=H, T=T, dh=dh, causal=causal,
                                               seed=seed, steps=distill_steps, lr=lr)
    elif variant == "mlp_attention":
        model, point["distill"] = distill_synthesizer(p, inputs=inputs, batch=B, heads=H, T=T, dh=dh,
                                                      causal=causal, seed=seed, steps=distill_steps, lr=lr)
    q, k, v = make_inputs(inputs, B, H, T, dh, seed=seed, sample=0)
    out_acc, attn_acc, base_acc = Agreement(), Agreement(), Agreement()
    has_attn = True
    with torch.no_grad():
        # random features, latents: drawn from the seed, the same for every chunk of heads
        latents = A.msla_latents(H, dh, p.latents, seed) if variant == "msla" else None
        for b, hs in ((b, hs) for b in range(B) for hs in head_chunks(H, T, _group(variant, p, H))):
            qc, kc, vc = q[b:b + 1, hs], k[b:b + 1, hs], v[b:b + 1, hs]
            ref = A.exact(qc, kc, vc, causal=causal)
            got = _approximate(variant, qc, kc, vc, p, causal=causal, seed=seed, head0=hs.start,
                               model=model, latents=latents)
            out_acc.add(got.out, ref.out)
            base_acc.add(uniform_attention(vc, causal), ref.out)
            if got.attn is None:
                has_attn = False
            else:
                attn_acc.add(got.attn, ref.attn)
    point["seconds"] = time.perf_counter() - t0
    if not (out_acc.finite and attn_acc.finite):
        point.update(status="error", reason="the approximation produced non-finite values (fp32 overflow or "
                                            "underflow)")
        return
    point.update(cosine_output=out_acc.cosine, rel_error_output=out_acc.rel_error,
                 baseline_cosine_output=base_acc.cosine, baseline_rel_error_output=base_acc.rel_error)
    if has_attn:
        point.update(cosine_attention=attn_acc.cosine, rel_error_attention=attn_acc.rel_error)


def fidelity_points(variants: Sequence[str], Ts: Iterable[int], *, d: int = 256, heads: int = 4, batch: int = 1,
                    causal: bool = True, params: Optional[dict] = None, inputs: Sequence[str] = INPUTS,
                    distill_steps: int = 200, seed: int = 0, lr: float = 3e-3,
                    progress: Optional[Callable[[dict], None]] = None) -> list:
    """Fidelity of each variant at each T on each kind of inputs: a list of JSON-ready dicts,
    one per (T, inputs, variant, parameter set), in that nesting order.

    ``params``: {variant: {name: value}} overrides (as ``--param``); a list value is swept
    (``{"linformer": {"k": [32, 64, 128]}}``: a point per value, see ``param_sets``).
    ``progress`` is called with each point as it is made. Fields of a point (stable names):

    variant, label (the variant and the parameters that matter for fidelity, e.g.
    "linformer k=64"), kind (reference | conversion | approximation | oracle | learned | untrained |
    skipped), status (ok | skipped | error | oom | oom-predicted: see ``memory_needed``), reason (why
    skipped, not run or failed, else None), params (resolved),
    T, d, heads, head_dim, batch, inputs (random | structured), causal (the causality the variant
    ran and was compared with), seed, dtype ("fp32"), shape (a costmodel Shape dict, phase
    prefill: ``estimate(variant, Shape(**shape), params)`` gives the cost of the same point),
    cosine_output, rel_error_output, cosine_attention, rel_error_attention (None where the
    variant has no attention matrix or was skipped), baseline_cosine_output,
    baseline_rel_error_output (uniform attention), distill (None, or for topk / mlp_attention:
    steps, seconds, lr, rows_per_step, batch, loss (its definition), initial_loss, final_loss on the
    evaluation sample, and for topk selector_kl_initial/final, head_rel_sq_error_initial/final,
    selector_top1, selector_top1_chance, selector_recall_top1), notes (list of str), seconds.
    """
    points = []
    for T in Ts:
        shape = Shape(T=T, d=d, heads=heads, batch=batch, causal=causal, dtype="fp32")
        for kind in inputs:
            for v in variants:
                for p in param_sets((params or {}).get(v)):
                    pt = fidelity_point(v, shape, kind, params=p, distill_steps=distill_steps, seed=seed, lr=lr)
                    points.append(pt)
                    if progress is not None:
                        progress(pt)
    return points


def param_sets(overrides: Optional[dict]) -> list:
    """{"k": [32, 64], "hidden": 64} -> [{"k": 32, "hidden": 64}, {"k": 64, "hidden": 64}]: a value
    that is a list or tuple is swept, the product of all of them."""
    if not overrides:
        return [{}]
    keys = list(overrides)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in overrides.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
