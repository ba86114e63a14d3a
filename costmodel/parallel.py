"""One attention layer split over N devices: tensor parallelism (heads) and context parallelism
(the sequence), per device: compute, communication, how much of it hides behind compute, memory.

Collectives follow the alpha-beta (Hockney) model with ring algorithms over N ranks, a message of
M bytes per rank (Patarasuk & Yuan 2009; NCCL's performance notes, "bus bandwidth"):

=================  ======================  ==============================
collective         bytes a rank sends      time
=================  ======================  ==============================
all-reduce         2 (N-1)/N M             2 (N-1) alpha + 2 (N-1)/N M / B
reduce-scatter     (N-1)/N M               (N-1) alpha + (N-1)/N M / B
all-gather         (N-1)/N M (M: output)   (N-1) alpha + (N-1)/N M / B
all-to-all         (N-1)/N M               (N-1) alpha + (N-1)/N M / B
point-to-point     M                       alpha + M / B
=================  ======================  ==============================

Schemes:

- ``tp``: heads split (Megatron-LM, Shoeybi et al. 2019); K/V heads replicated where N exceeds them
  (as vLLM does); one all-reduce of the layer output after the output projection (train: one more for
  the input's gradient); ``sequence_parallel``: a reduce-scatter and an all-gather instead
  (Korthikanti et al. 2022).
- ``ring``: the sequence in 2N zig-zag chunks, rank r holding chunks r and 2N-1-r, so every rank does
  the same causal work (Megatron-LM context parallel; Liu et al. 2023, Ring Attention); N-1 steps each
  pass a K/V block to the next rank while the current one is computed, merged by log-sum-exp. Train:
  the backward passes the K/V blocks round again, and each block's dK/dV, summed in fp32, follows it
  from the next rank round to its owner (ring-flash-attention; Megatron-LM): N-1 K/V blocks forward,
  N-1 K/V and N-1 fp32 dK/dV blocks backward. Each transfer hides behind the block computed meanwhile
  up to the interconnect's ``overlap`` share (1 where the transport has engines of its own; measured
  where it shares the rank's core, as gloo's TCP transport does). Decode: the KV cache is sharded over
  the sequence; each rank attends its shard and the partial outputs are all-gathered and merged.
- ``ulysses``: all-to-alls turn sequence shards into head shards for Q, K and V, and the output back
  (Jacobs et al. 2023, DeepSpeed-Ulysses); N must divide the (K/V) heads. Train: four more backward.

The compute of a rank is priced by the single-device model (``estimate``) on the rank's shape, plus
the distributed layer's own copies (``copies_s``: buffers made contiguous, stacked or concatenated
around a transfer); its time is split into the attention core and the rest by each kernel's part, and
scaled by the
interconnect's ``contention``: how much longer a rank computes while every rank of the node does
(1 for devices with memory of their own; measured where ranks share a CPU's caches and memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from .analysis import add_backward, analyse
from .estimate import estimate_many, graph, resolve_params
from .hardware import Hardware, HardwareError
from .shape import MAX_T, Shape
from .timing import predict
from .variants import VariantError
from .variants.base import layout_copy, new_graph, proj

CpKind = Literal["ring", "ulysses"]
CP_KINDS: tuple = ("ring", "ulysses")
COLLECTIVES: tuple = ("p2p", "all_reduce", "reduce_scatter", "all_gather", "all_to_all")
EXACT = ("mha", "flash", "gqa", "mqa")
SUPPORTED = {"tp": EXACT + ("sliding_window",), "ring": EXACT, "ulysses": EXACT + ("sliding_window",)}
WHY_NOT = {
    "linformer": "projects K and V along the whole sequence, which needs the full sequence gathered on every rank",
    "nystrom": "takes landmarks as means over the whole sequence, which needs it gathered on every rank",
    "sliding_window": "exchanges K/V only between ranks within the window, which is not modelled",
    "mla": "shares its latent K/V projection across heads, which is not modelled split",
    "dsa": "selects keys with an indexer over the whole sequence, which is not modelled split",
    "performer": "carries prefix sums over the sequence between ranks, which is not modelled",
}
MERGE_OUT_OPS = ("mul", "mul", "add")  # out * exp(lse - new) + block * exp(block_lse - new), per element
MERGE_LSE_OPS = ("exp", "add", "exp", "add", "exp")  # logaddexp; (lse - new).exp() for both, per row


class ParallelError(ValueError):
    """A parallel layout that is not defined or not modelled (one plain sentence)."""


# -- collectives -----------------------------------------------------------------------------------

def collective_bytes(kind: str, n: int, nbytes: float) -> float:
    """Bytes one rank sends in ``kind`` over ``n`` ranks with an ``nbytes`` buffer (table above)."""
    if n <= 1:
        return 0.0
    share = (n - 1) / n
    return {"all_reduce": 2 * share * nbytes, "p2p": nbytes}.get(kind, share * nbytes)


def collective_steps(kind: str, n: int) -> int:
    """Messages in sequence (latency terms) of ``kind``'s ring algorithm."""
    if n <= 1:
        return 0
    return {"all_reduce": 2 * (n - 1), "p2p": 1}.get(kind, n - 1)


def collective_s(kind: str, n: int, nbytes: float, hw: Hardware) -> float:
    """Alpha-beta time of one collective on ``hw.interconnect`` (its measured law where it has one)."""
    if n <= 1:
        return 0.0
    link = interconnect(hw).link(kind)
    sent = collective_bytes(kind, n, nbytes)
    if len(link.measured) >= 2:
        return interpolate(link.measured, sent)
    return collective_steps(kind, n) * link.latency_s + sent / link.bandwidth_Bps


def interpolate(table: list, x: float) -> float:
    """Piecewise-linear y(x) through the (x, y) points of ``table``; below them, the first y; above, the
    last segment extended (never below the smallest y): a measured curve that no straight line fits
    (gloo's transport switches protocol with the message size)."""
    pts = sorted(table)
    if x <= pts[0][0]:
        return pts[0][1]
    i = next((j for j in range(1, len(pts) - 1) if x < pts[j][0]), len(pts) - 1)
    (x0, y0), (x1, y1) = pts[i - 1], pts[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return max(y, min(p[1] for p in pts))


def contention(hw: Hardware) -> float:
    """How much longer a rank computes while every rank of the node does (the profile's measured figure)."""
    return interconnect(hw).contention


def interconnect(hw: Hardware):
    if hw.interconnect is None:
        raise HardwareError(f"hardware {hw.name} has no interconnect figures: give a profile with one "
                            f"(`attncost calibrate --nproc N` measures it)")
    return hw.interconnect


# -- the layout -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How one layer is split: ``tp`` ranks over heads, ``cp`` ranks over the sequence."""

    tp: int = 1
    cp: int = 1
    cp_kind: CpKind = "ring"
    sequence_parallel: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.cp


@dataclass
class ParallelEstimate:
    """Per device: ``compute_s`` (its kernels), ``comm_s`` (its collectives), ``hidden_s`` (the part of
    comm_s overlapped with compute), ``time_s = compute_s + comm_s - hidden_s``; memory in bytes;
    ``bytes_sent``: what one rank sends; ``messages``: (collective, count, bytes per rank each)."""

    variant: str
    shape: Shape
    layout: Layout
    status: str = "ok"
    reason: Optional[str] = None
    compute_s: float = 0.0
    comm_s: float = 0.0
    hidden_s: float = 0.0
    time_s: float = 0.0
    bytes_sent: float = 0.0
    weights_bytes: float = 0.0
    activation_bytes: float = 0.0
    kv_cache_bytes: float = 0.0
    messages: list = field(default_factory=list)

    @property
    def memory_bytes(self) -> float:
        return self.weights_bytes + self.activation_bytes + self.kv_cache_bytes

    @property
    def comm_share(self) -> float:
        return (self.comm_s - self.hidden_s) / self.time_s if self.time_s else 0.0

    def model_dump(self) -> dict:
        out = {k: getattr(self, k) for k in ("variant", "status", "reason", "compute_s", "comm_s", "hidden_s",
                                             "time_s", "bytes_sent", "weights_bytes", "activation_bytes",
                                             "kv_cache_bytes", "memory_bytes", "comm_share")}
        out.update(shape=self.shape.model_dump(), tp=self.layout.tp, cp=self.layout.cp,
                   cp_kind=self.layout.cp_kind if self.layout.cp > 1 else None,
                   sequence_parallel=self.layout.sequence_parallel,
                   messages=[{"collective": c, "count": n, "bytes": b} for c, n, b in self.messages])
        return out


def scheme_of(layout: Layout) -> Optional[str]:
    """"tp", "ring" or "ulysses"; None on one device."""
    return "tp" if layout.tp > 1 else layout.cp_kind if layout.cp > 1 else None


def measured_variants(scheme: str) -> tuple:
    """The variants `attncost profile --tp/--cp` runs under ``scheme``: those the model splits, less mha
    (its math path has no log-sum-exp to merge, nor a kernel worth splitting)."""
    return tuple(v for v in SUPPORTED[scheme] if v != "mha")


def check_counts(layout: Layout) -> None:
    """ParallelError where the device counts of ``layout`` are not a modelled split."""
    if layout.tp < 1 or layout.cp < 1:
        raise ParallelError("--tp and --cp count devices: each must be at least 1")
    if layout.tp > 1 and layout.cp > 1:
        raise ParallelError("--tp and --cp together are not modelled: give one of them")


def check_shape(shape: Shape, layout: Layout) -> None:
    """ParallelError where ``shape`` cannot be split this way by any variant (heads, phase, T)."""
    scheme, n = scheme_of(layout), layout.gpus
    if scheme is None:
        return
    if shape.heads % n and scheme != "ring":
        raise ParallelError(f"{n} devices must divide heads={shape.heads} to split heads")
    if scheme == "ulysses" and shape.phase == "decode":
        raise ParallelError("--cp-kind ulysses has no decode: one new token has no sequence to split (use ring, "
                            "a KV cache sharded over the sequence)")
    chunks = 2 * n if scheme == "ring" and shape.causal and shape.phase != "decode" else n
    if shape.T % chunks:
        raise ParallelError(f"T={shape.T} must be a multiple of {chunks} to split it into "
                            f"{'zig-zag chunks' if chunks == 2 * n else 'equal shards'}")


def check_layout(name: str, shape: Shape, layout: Layout, params: Optional[dict] = None) -> None:
    """ParallelError with one sentence where ``name`` cannot run split this way at ``shape``."""
    check_counts(layout)
    scheme = scheme_of(layout)
    if scheme is None:
        return
    n = layout.gpus
    if name not in SUPPORTED[scheme]:
        why = WHY_NOT.get(name, "is not modelled split this way")
        flag = "--tp" if scheme == "tp" else f"--cp-kind {scheme}"
        raise ParallelError(f"{name} under {flag}: it {why}")
    check_shape(shape, layout)
    if scheme == "ring" and getattr(resolve_params(name, shape, params), "window", None) is not None:
        raise ParallelError(f"{name} with a window under --cp-kind ring: it {WHY_NOT['sliding_window']}")
    kv = kv_heads(name, shape, params)
    if scheme == "tp" and kv % n and n % kv:
        raise ParallelError(f"--tp {n} and {kv} K/V heads: one must divide the other (K/V heads are "
                            f"replicated only by whole copies)")
    if scheme == "ulysses" and kv % n:
        raise ParallelError(f"--cp-kind ulysses {n} must divide the {kv} K/V heads of {name}")


def kv_heads(name: str, shape: Shape, params: Optional[dict] = None) -> int:
    """K/V heads of the exact family at ``shape``."""
    if name == "mqa":
        return 1
    if name == "gqa":
        return resolve_params(name, shape, params).kv_heads
    return shape.heads


# -- pricing ------------------------------------------------------------------------------------------

def core_time(name: str, shape: Shape, params: Optional[dict], hw: Hardware) -> tuple:
    """(core seconds, other seconds) of one device running ``name`` at ``shape``: the predicted time
    of its attention-core kernels and of the rest (projections, copies)."""
    p = resolve_params(name, shape, params)
    g = graph(name, shape, p)
    kernels = analyse(g).kernels
    rows = predict(kernels, hw, shape.dtype).per_kernel
    core = sum(r.time_s for r, k in zip(rows, kernels) if any(op.part == "core" for op in k.ops))
    return core, sum(r.time_s for r in rows) - core


def _estimate(name: str, shape: Shape, params: Optional[dict], hw: Hardware):
    """``estimate``, by the programs the store keeps where it has them (``estimate_many``)."""
    return estimate_many(name, [shape], params, hw)[0]


def split_time(name: str, shape: Shape, params: Optional[dict], hw: Hardware) -> tuple:
    """(core seconds, other seconds, Estimate) of one device running ``name`` at ``shape`` (``core_time``)."""
    return (*core_time(name, shape, params, hw), _estimate(name, shape, params, hw))


def head_shard(name: str, shape: Shape, n: int, kv_local: int, params: Optional[dict]) -> tuple:
    """(shape, params) of one rank's H/N heads (d/N wide) holding ``kv_local`` K/V heads (gqa's own count)."""
    gqa = name == "gqa"
    local = shape.with_(d=shape.d // n, heads=shape.heads // n, kv_heads=kv_local if gqa else None)
    return local, dict(params or {}, kv_heads=kv_local) if gqa else params


def _graph_time(g, shape: Shape, hw: Hardware) -> float:
    if shape.phase == "train":
        add_backward(g)
    return predict(analyse(g).kernels, hw, shape.dtype).time_s


def merge_s(shape: Shape, rows: int, hw: Hardware) -> float:
    """One log-sum-exp merge of a block's output into the running one: ``rows`` query rows per head."""
    g, _, _ = new_graph(shape.with_(phase="prefill"))
    lse = g.input("lse", shape.batch * shape.heads * rows)
    out = g.input("out", shape.batch * rows * shape.d)
    for i, fn in enumerate(MERGE_LSE_OPS):
        lse = g.elementwise(f"lse{i}", fn, (lse,), elems=shape.batch * shape.heads * rows)
    for i, fn in enumerate(MERGE_OUT_OPS):
        out = g.elementwise(f"out{i}", fn, (out,), elems=shape.batch * rows * shape.d)
    return _graph_time(g, shape, hw)


def copies_s(shape: Shape, sizes: tuple, hw: Hardware) -> float:
    """Seconds of the distributed layer's own copies, one of each of ``sizes`` elements: buffers made
    contiguous for a transfer, the pieces of an all-to-all stacked and concatenated, the all-reduced
    output cloned, the merged halves of ring attention's output concatenated."""
    if not sizes:
        return 0.0
    g, _, _ = new_graph(shape.with_(phase="prefill"))
    for i, elems in enumerate(sizes):
        layout_copy(g, f"copy{i}", g.input(f"buffer{i}", elems), elems)
    return _graph_time(g, shape, hw)


def tp_projection_delta(shape: Shape, local: Shape, kv_cols: int, hw: Hardware) -> float:
    """Seconds to add to the single-device price of ``local`` (d/N wide, H/N heads) for the rank's
    real projections: Q/K/V read the full width d, the output projection writes it."""
    def projections(d_in: int, d_out: int) -> float:
        g, x, rows = new_graph(shape.with_(phase="prefill") if shape.phase == "train" else shape)
        for nm, cols in (("q_proj", local.d), ("k_proj", kv_cols), ("v_proj", kv_cols)):
            proj(g, nm, x, rows, d_in, cols)
        o = g.input("o", rows * local.d)
        g.output(proj(g, "o_proj", o, rows, local.d, d_out))
        return _graph_time(g, shape, hw)

    return projections(shape.d, shape.d) - projections(local.d, local.d)


def predict_parallel(name: str, shape: Shape, layout: Layout, hw: Hardware,
                     params: Optional[dict] = None) -> ParallelEstimate:
    """Per-device cost of ``name`` at ``shape`` split by ``layout`` on ``hw``; status "n/a" with the
    reason where the split is not defined or the variant has no such phase."""
    out = ParallelEstimate(name, shape, layout)
    try:
        check_layout(name, shape, layout, params)
        if layout.tp > 1:
            _tp(out, params, hw)
        elif layout.cp > 1 and layout.cp_kind == "ring":
            _ring(out, params, hw)
        elif layout.cp > 1:
            _ulysses(out, params, hw)
        else:
            _single(out, params, hw)
    except (ParallelError, VariantError) as err:
        out.status, out.reason = "n/a", str(err)
    out.time_s = out.compute_s + out.comm_s - out.hidden_s
    return out


def _memory(out: ParallelEstimate, e, extra_act: float = 0.0) -> None:
    if e.status != "ok":
        raise VariantError(e.reason)
    out.weights_bytes = e.weights_bytes
    out.activation_bytes = e.activation_bytes_fused + extra_act
    out.kv_cache_bytes = e.kv_cache_bytes


def _send(out: ParallelEstimate, kind: str, count: int, nbytes: float, n: int, hw: Hardware) -> float:
    """Record ``count`` collectives of an ``nbytes`` buffer; returns their seconds."""
    out.messages.append((kind, count, nbytes))
    out.bytes_sent += count * collective_bytes(kind, n, nbytes)
    return count * collective_s(kind, n, nbytes, hw)


def _single(out: ParallelEstimate, params, hw: Hardware) -> None:
    e = _estimate(out.variant, out.shape, params, hw)
    _memory(out, e)
    out.compute_s = e.time_s


def _tp(out: ParallelEstimate, params, hw: Hardware) -> None:
    s, n = out.shape, out.layout.tp
    kv = kv_heads(out.variant, s, params)
    kv_local = max(1, kv // n)
    local, lp = head_shard(out.variant, s, n, kv_local, params)
    e = _estimate(out.variant, local, lp, hw)
    _memory(out, e)
    out.weights_bytes += (s.d * s.d + 2 * s.d * kv_local * s.head_dim) * s.itemsize * (1 - 1 / n)  # full-width Q/K/V
    layer_out = s.batch * s.tokens * s.d * s.itemsize
    clone = () if out.layout.sequence_parallel else (layer_out / s.itemsize,)  # the all-reduced buffer
    out.compute_s = (e.time_s + tp_projection_delta(s, local, kv_local * s.head_dim, hw)
                     + copies_s(s, clone, hw)) * contention(hw)
    times = 2 if s.phase == "train" else 1  # backward: the input's gradient is summed too
    if out.layout.sequence_parallel:
        out.comm_s = (_send(out, "all_gather", times, layer_out, n, hw)
                      + _send(out, "reduce_scatter", times, layer_out, n, hw))
    else:
        out.comm_s = _send(out, "all_reduce", times, layer_out, n, hw)


def _ring(out: ParallelEstimate, params, hw: Hardware) -> None:
    s, n = out.shape, out.layout.cp
    kv = kv_heads(out.variant, s, params)
    local = s.with_(T=s.T // n)
    kv_block = 2 * s.batch * local.T * kv * s.head_dim * s.itemsize  # K and V of one rank's shard
    if s.phase == "decode":
        e = _estimate(out.variant, local, params, hw)
        _memory(out, e)
        partial = s.batch * (s.d + s.heads) * 4  # each rank's output and log-sum-exp, fp32
        out.compute_s = (e.time_s + merge_s(s, n, hw)) * contention(hw)  # the n partial outputs merged at once
        out.comm_s = _send(out, "all_gather", 1, n * partial, n, hw)
        return
    core_c, other, e = split_time(out.variant, local, params, hw)
    core_full = core_time(out.variant, local.with_(causal=False), params, hw)[0] if s.causal else core_c
    half = 0.5 if s.causal else 1.0  # zig-zag: half a block per step
    step = (core_full * half + merge_s(s, local.T, hw)) * contention(hw)
    train = s.phase == "train"
    dkv_block = kv_block * 4 / s.itemsize  # dK/dV summed in fp32
    _memory(out, e, extra_act=2 * kv_block + (2 * kv_block + 2 * dkv_block if train else 0))  # receive buffers
    kv_elems = (kv_block / 2 / s.itemsize,) * 2 if kv > 1 else ()  # K, V (heads, rows) views made contiguous
    halves = (s.batch * local.T * s.d, s.batch * s.heads * local.T) if s.causal else ()  # output, lse
    own = copies_s(s, kv_elems + halves * (n - 1), hw)  # rank 0: n-1 later blocks
    out.compute_s = (other + core_c + own) * contention(hw) + (n - 1) * step
    comm_step = _send(out, "p2p", (n - 1) * (2 if train else 1), kv_block, n, hw) / (n - 1)  # backward: K/V again
    if train:
        comm_step += _send(out, "p2p", n - 1, dkv_block, n, hw) / (n - 1)  # and each block's dK/dV
    out.comm_s = (n - 1) * comm_step
    out.hidden_s = (n - 1) * min(comm_step, step) * interconnect(hw).overlap


def _ulysses(out: ParallelEstimate, params, hw: Hardware) -> None:
    s, n = out.shape, out.layout.cp
    kv = kv_heads(out.variant, s, params)
    local = s.with_(T=s.T // n)
    heads, hp = head_shard(out.variant, s, n, kv // n, params)
    _, other, e = split_time(out.variant, local, params, hw)
    core, _, eh = split_time(out.variant, heads, hp, hw)
    _memory(out, e, extra_act=eh.activation_bytes_fused)
    out.kv_cache_bytes = eh.kv_cache_bytes  # the full sequence of this rank's heads
    times = 2 if s.phase == "train" else 1
    q_elems, kv_elems = s.batch * local.T * s.d, s.batch * local.T * kv * s.head_dim
    stacked = (q_elems, kv_elems, kv_elems, q_elems) * 2  # stack, then cat, of Q, K, V and the output
    out.compute_s = (other + core + copies_s(s, stacked, hw)) * contention(hw)
    q_bytes, kv_bytes = q_elems * s.itemsize, kv_elems * s.itemsize
    out.comm_s = (_send(out, "all_to_all", 2 * times, q_bytes, n, hw)  # Q and the output
                  + _send(out, "all_to_all", 2 * times, kv_bytes, n, hw))  # K and V


# -- searches over T ---------------------------------------------------------------------------------

def round_T(T: int, layout: Layout) -> int:
    step = 2 * layout.gpus
    return max(step, T // step * step)


def pays_from_T(name: str, shape: Shape, layout: Layout, hw: Hardware, params: Optional[dict] = None,
                lo: int = 256) -> Optional[int]:
    """The smallest T (a multiple of 2N, searched from ``lo`` to the largest T) from which the per-device
    time on ``layout`` is below one device's; None if it never is."""
    one = Layout()

    def pays(T: int) -> bool:
        s = shape.with_(T=T)
        par, single = predict_parallel(name, s, layout, hw, params), predict_parallel(name, s, one, hw, params)
        return par.status == "ok" and single.status == "ok" and par.time_s < single.time_s

    return _first(pays, layout, lo)


def fits_until_T(name: str, shape: Shape, hw: Hardware, params: Optional[dict] = None,
                 layout: Layout = Layout(), lo: int = 256) -> Optional[int]:
    """The smallest T at which one device of ``layout`` (default: a single device) can no longer hold
    the layer (weights + activations + KV cache > ``hw.mem_bytes``); None if it holds every T."""
    def over(T: int) -> bool:
        e = predict_parallel(name, shape.with_(T=T), layout, hw, params)
        return e.status == "ok" and e.memory_bytes > hw.mem_bytes

    return _first(over, layout, lo)


def _first(test, layout: Layout, lo: int) -> Optional[int]:
    """Smallest T where ``test`` holds, assuming it holds from there on: doubling, then bisection."""
    step = 2 * layout.gpus
    T = round_T(max(lo, step), layout)
    prev = None
    while T <= MAX_T:
        if test(T):
            break
        prev, T = T, T * 2
    else:
        return None
    if prev is None:
        return T
    a, b = prev, T  # test(a) false, test(b) true
    while b - a > step and b - a > a // 64:
        mid = round_T((a + b) // 2, layout)
        if mid <= a:
            break
        a, b = (a, mid) if test(mid) else (mid, b)
    return b


def gpus_needed(name: str, shape: Shape, layout: Layout, hw: Hardware, params: Optional[dict] = None) -> int:
    """Fewest devices (a power of two) of ``layout``'s kind on which one layer fits; 0 if none up to 1024."""
    for k in range(11):
        n = 2 ** k
        lay = Layout(tp=n if layout.tp > 1 else 1, cp=n if layout.tp == 1 else 1, cp_kind=layout.cp_kind,
                     sequence_parallel=layout.sequence_parallel)
        e = predict_parallel(name, shape, lay, hw, params)
        if e.status == "ok" and e.memory_bytes <= hw.mem_bytes:
            return n
    return 0


__all__ = ["CP_KINDS", "COLLECTIVES", "CpKind", "Layout", "ParallelError", "ParallelEstimate", "SUPPORTED",
           "check_counts", "check_layout", "check_shape", "collective_bytes", "collective_s", "collective_steps",
           "contention", "copies_s", "core_time", "fits_until_T", "gpus_needed", "head_shard", "interpolate",
           "kv_heads", "measured_variants", "merge_s", "pays_from_T", "predict_parallel", "scheme_of", "split_time",
           "tp_projection_delta"]
