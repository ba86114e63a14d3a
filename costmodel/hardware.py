"""Hardware profiles: published peaks, and the efficiencies that turn FLOPs and bytes into time.

A profile holds two kinds of numbers:

- **Published peaks** (the ceilings, cited in ``source``): dense tensor FLOP/s per dtype (no 2:4
  sparsity), fp32 non-tensor ("vector") FLOP/s, memory bandwidth and size.
- **Efficiencies** (how much of a peak a real kernel reaches, and its fixed costs): per-dtype
  matmul efficiency as a smooth function of (m, k, n), per-backend fused-attention efficiency as a
  function of head dim and keys, the law of each kind of non-matmul op (a fixed device latency, a
  bandwidth share, a time per row), the host time PyTorch eager spends issuing an op of each host
  class, and on a CPU where memory changes pace (beyond its cache, for fresh outputs).
  ``timing.predict`` states the formulas. Efficiencies are shares of the published peaks, at most
  1, so a prediction never beats the datasheet.

The built-in ``h100`` is fitted to measured microbenchmarks: ``data/h100-microbench.json`` is made
by ``fit.fit_profile`` from the raw rows in ``data/h100-microbench-2026-11-22.json`` (a verbatim
copy of the project's shared H100 measurements) by ``bench/calibrate_from_microbench.py``.
``h200`` is the same GH100 die, so it reuses the H100 fit with its own datasheet peaks. The others
carry their datasheet peaks and generic, *assumed* efficiencies (said in their ``calibration``
field): run ``attncost calibrate`` on the machine for a fitted profile, and pass it as
``--hardware FILE.json``.

Units: FLOP/s, bytes/s, bytes (memory sizes in GiB, as NVIDIA's and Apple's "GB" of device memory
are), seconds.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Callable, Hashable, Literal, Optional, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .atomic import write_atomic
from .jsonfile import load_json_model
from .units import DTYPES, EIGHT_BIT, GIB, Dtype, EightBit

T = TypeVar("T")
DATA_DIR = Path(__file__).resolve().parent / "data"
H100_MICROBENCH = DATA_DIR / "h100-microbench-2026-11-22.json"  # raw rows the h100 profile is fitted to


class HardwareError(ValueError):
    """A hardware profile cannot be found or read (one plain sentence)."""


# -- the kinds of numbers a profile holds ----------------------------------------------------------
# Every number is finite (``allow_inf_nan=False`` on each model) and within a range wide enough
# for any real device and narrow enough that no prediction overflows: a time is at most
# latencies (<= 1 s each) plus FLOPs / (rate * share), with rates >= 1 per second, shares >= 1e-9
# and each efficiency factor x / (x + half) >= 1 / (1 + 1e12), so it stays far below 1e308 s.

def _at_least(low: float, what: str) -> AfterValidator:
    def check(x: float) -> float:
        if x < low:
            raise ValueError(f"must be at least {low:g} {what}, not {x:g}")
        return x
    return AfterValidator(check)


Rate = Annotated[float, Field(gt=0), _at_least(1.0, "per second")]  # FLOP/s, bytes/s
Share = Annotated[float, Field(gt=0, le=1), _at_least(1e-9, "(a share of a peak)")]
Seconds = Annotated[float, Field(ge=0, le=1.0)]  # the fixed cost of one op or kernel
Size = Annotated[float, Field(ge=0, le=1e12)]  # a half-efficiency point or a tile, in elements
FINITE = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# -- efficiency models -----------------------------------------------------------------------------

class MatmulEfficiency(BaseModel):
    """One matmul kernel (batch x (m x k) @ (k x n)), per dtype:

    ``time = latency_s + k_step_s * min(k, k_serial_cap)
    + max(flops / (peak * eff), bytes / (mem_bandwidth * mem_eff))``
    with ``eff = max_eff * m/(m+mn_half) * n/(n+mn_half) * k/(k+k_half)``; matrix-vector
    products (m = 1, batched or not: decode's projections at batch 1, and its explicit attention's
    scores and weighted values, one query row per batch and head) where the profile has
    ``gemv_mem_eff``: ``latency_s + bytes / (mem_bandwidth * gemv_mem_eff)``, as BLAS libraries run
    them (a kernel of its own that streams the matrices; a CPU's gemm packs them first).

    Where the profile has them, a matmul not priced as a matrix-vector product, moving more than
    ``cache_bytes``, takes at least ``bytes / (mem_bandwidth * dram_eff)`` of memory time: a CPU's gemm of a few rows
    by a matrix beyond its caches reads it block by block, several times slower than a stream.

    ``k_step_s`` is the latency of the serial reduction loop (each output tile walks k in order),
    which dominates small, deep matmuls; it is not extrapolated beyond ``k_serial_cap`` (the
    largest k fitted; libraries split longer reductions across blocks).
    """

    model_config = FINITE

    max_eff: Share = Field(0.8, description="share of the peak reached by large matmuls")
    mn_half: Size = Field(16.0, description="m (and n) at which efficiency halves")
    k_half: Size = Field(160.0, description="k at which efficiency halves")
    k_step_s: Seconds = Field(0.0, description="serial time per unit of k (s)")
    k_serial_cap: float = Field(4096.0, gt=0, description="k beyond which the serial term stops growing")
    mem_eff: Share = Field(0.8, description="share of mem_bandwidth a matmul's traffic reaches")
    latency_s: Seconds = Field(6e-6, description="fixed device time of one matmul kernel (s)")
    gemv_mem_eff: Optional[Share] = Field(None, description="share of mem_bandwidth a matrix-vector product "
                                                             "(m = 1, batched or not) reaches; None: the matmul "
                                                             "law prices it")
    cache_bytes: Optional[float] = Field(
        None, gt=0, le=1e15, description="a matmul (not priced as a matrix-vector product) that moves more bytes "
                                         "than this reaches at most dram_eff of mem_bandwidth (a CPU's gemm reads "
                                         "its matrix block by block from memory); None: no such limit beyond the "
                                         "profile's own")
    dram_eff: Optional[Share] = Field(None, description="share of mem_bandwidth such a matmul reaches beyond "
                                                         "cache_bytes")


class AttentionEfficiency(BaseModel):
    """One fused attention kernel (FlashAttention / cuDNN / memory-efficient SDPA):

    ``time = latency_s + max(flops_mm' / (peak * eff), bytes / (mem_bandwidth * mem_eff))``
    with ``eff = max_eff * dh'/(dh'+dh_half) * keys/(keys+keys_half) [* q/(q+q_half)]``,
    ``dh' = min(dh, dh_cap)``, ``q`` the query rows the kernel runs over each K/V head's keys:
    a query head's tokens (decode: 1), or, where the kernel packs the query heads that share a K/V
    head (``packs_groups``, GQA/MQA), theirs together.
    Non-matmul FLOPs (softmax)
    overlap with the matmuls and are not charged. A masked (causal, windowed) kernel skips masked
    tiles but computes the tiles the mask boundary crosses: ``flops_mm' = flops_mm + 0.5 *
    causal_tile / keys * dense_flops_mm`` (at most the dense work). A backward kernel's compute and
    memory terms take ``backward`` times as long: FlashAttention-2's backward (Dao 2023, arXiv:2307.08691)
    runs five matmuls where the forward runs two, at a lower share of the peak. On a profile with a
    cache law (``Hardware.cache_bytes``), a kernel moving more takes at least ``bytes / (mem_bandwidth *
    dram_eff)`` of memory time.
    """

    model_config = FINITE

    max_eff: Share = Field(0.6, description="share of the tensor peak at large head dim and keys")
    dh_half: Size = Field(32.0, description="head dim at which efficiency halves")
    keys_half: Size = Field(128.0, description="keys at which efficiency halves")
    causal_tile: Size = Field(128.0, description="tile size along keys of the mask boundary")
    q_half: Size = Field(0.0, description="query rows at which efficiency halves (decode has one); 0: no such term")
    dh_cap: Optional[float] = Field(None, gt=0, description="head dims above this one get its efficiency "
                                                            "(the largest fitted: no extrapolation)")
    mem_eff: Share = Field(0.85, description="share of mem_bandwidth reached")
    latency_s: Seconds = Field(8e-6, description="fixed device time of one attention kernel (s)")
    dram_eff: Optional[Share] = Field(None, description="share of mem_bandwidth at which the kernel streams its "
                                                        "bytes where they exceed the profile's cache_bytes (a CPU's "
                                                        "decode reads K and V block by block, below a copy's pace); "
                                                        "None: the profile's dram_eff")
    backward: float = Field(1.0, gt=0, description="a backward kernel's time over this law's for its FLOPs (it "
                                                    "recomputes the scores: 2.5x the forward's matmul FLOPs), "
                                                    "fitted on backward rows; 1: as the forward")
    packs_groups: bool = Field(True, description="the query heads sharing a K/V head (GQA/MQA) run as one "
                                                 "block of query rows (FlashAttention-2 decode swaps them "
                                                 "into the query dimension); false: each query head apart, "
                                                 "as PyTorch's CPU kernels run them")


class TopkPaths(BaseModel):
    """PyTorch's CPU topk (ATen's ``TopKImpl.h``, ``topk_impl_loop``), per row of ``n`` candidates keeping
    ``k``: the row is copied into (value, index) pairs, then ordered one of two ways:

    - where ``k * partial_from <= n`` (64 in ATen), ``std::partial_sort``: one scan of the n against a
      heap of the k best, whose top random scores replace about ``k ln(n/k)`` times, ``log2 k`` steps
      each: ``n * scan_s + k * log2(n/k) * log2(k + 1) * heap_s``;
    - else ``std::nth_element`` (a selection: several passes over the n) and ``std::sort`` of the k
      kept: ``n * select_s + k * log2(k + 1) * sort_s``.

    A topk op then takes ``latency_s + rows * (its path's time per row) + max(flops / vector_flops,
    bytes / (mem_bandwidth * mem_efficiency))`` (``timing.topk_path_s``). The work is comparisons, not
    bytes: a row of 1,536 keeping 16 takes 2.3 ns a candidate, keeping 64 (the other path) 5.8 ns, on
    a 2-core EPYC, whatever the tensor's size. ``calibrate`` fits it on a CPU (``fit.fit_topk_paths``).
    """

    model_config = FINITE

    latency_s: Seconds = Field(..., description="fixed time of one topk call (s)")
    scan_s: Seconds = Field(..., description="partial sort: time per candidate of the scan (s)")
    heap_s: Seconds = Field(..., description="partial sort: time per k * log2(n/k) * log2(k + 1) (s)")
    select_s: Seconds = Field(..., description="selection: time per candidate (s)")
    sort_s: Seconds = Field(..., description="selection: time per k * log2(k + 1) of sorting the kept (s)")
    partial_from: Size = Field(64.0, gt=0, description="the partial sort runs where k * partial_from <= n")

    def params(self) -> tuple:
        """(latency, scan, heap, select, sort, partial_from): as ``timing.topk_path_s`` reads them."""
        return self.latency_s, self.scan_s, self.heap_s, self.select_s, self.sort_s, self.partial_from


class Link(BaseModel):
    """One collective's alpha-beta law between ranks: ``time = steps * latency_s + bytes / bandwidth_Bps``
    (Hockney's model; ``costmodel.parallel`` gives the steps and bytes of each collective)."""

    model_config = FINITE

    bandwidth_Bps: Rate = Field(..., description="bytes/s one rank sends in one direction")
    latency_s: Seconds = Field(..., description="fixed time of one message (s)")
    measured: list[tuple[float, float]] = Field(
        default_factory=list, description="(bytes a rank sends, seconds) of the whole collective at the sizes "
                                          "`attncost calibrate --nproc N` timed; where given, times between "
                                          "them are interpolated instead of the alpha-beta law")


class Interconnect(Link):
    """The links between the devices of one node: per-direction bandwidth and per-message latency,
    with ``collectives`` (p2p, all_reduce, all_to_all) measured by ``attncost calibrate --nproc N``
    where they were (a collective absent there uses the plain link), the share of a transfer that
    hides behind compute (``overlap``) and the compute slowdown of all ranks busy at once
    (``contention``)."""

    name: str = Field(..., min_length=1)
    source: str = Field("", description="where the figures come from (datasheet, or measured)")
    collectives: dict[str, Link] = Field(default_factory=dict)
    overlap: float = Field(1.0, ge=0, le=1, description="share of a transfer's time that runs behind compute "
                                                        "issued after it: 1 where the transport has engines of "
                                                        "its own (NVLink, PCIe DMA); measured by `attncost "
                                                        "calibrate --nproc N` (gloo's TCP transport shares the "
                                                        "rank's core)")
    contention: float = Field(1.0, ge=1, le=100, description="a rank's compute time while every rank of the node "
                                                             "computes at once over its time alone (shared caches "
                                                             "and memory); 1 for devices with memory of their own; "
                                                             "measured by `attncost calibrate --nproc N`")

    def link(self, collective: str) -> Link:
        return self.collectives.get(collective, self)


Fp32Matmul = Literal["ieee", "tf32"]
ColdAccess = Literal["matmul", "index"]  # how a kernel reads operands it fetches anew (Hardware.cold_access_s_per_byte)


class Hardware(BaseModel):
    """A device: published peaks (``source``) plus efficiencies (``calibration`` says where from)."""

    model_config = FINITE

    name: str = Field(..., min_length=1)
    description: str = ""
    source: str = Field("", description="where the published peaks come from (URL or document)")
    peak_flops: dict[Dtype, Rate] = Field(
        ..., description="dense tensor FLOP/s per dtype, no sparsity (fp32: TF32 tensor cores)")
    peak_flops_8bit: dict[EightBit, Rate] = Field(
        default_factory=dict, description="dense tensor FLOP/s of fp8 and OP/s of int8 matmuls, no sparsity, "
                                          "where the device has them (absent: it has none)")
    vector_flops: Rate = Field(..., description="fp32 non-tensor FLOP/s")
    mem_bandwidth: Rate = Field(..., description="device memory bandwidth, bytes/s")
    mem_bytes: float = Field(..., gt=0, description="device memory, bytes")
    launch_overhead_s: Seconds = Field(10e-6, description="host time to issue one eager op (s)")
    matmul_overhead_s: Optional[Seconds] = Field(
        None, description="host time to issue one eager matmul or SDPA call (s); None: launch_overhead_s")
    view_overhead_s: Optional[Seconds] = Field(
        None, description="host time of one eager view / metadata-only op (view, transpose, expand, ...), "
                          "which launches no kernel (s); None: not measured, views are not priced")
    sdpa_overhead_s: Optional[Seconds] = Field(
        None, description="host time to issue one eager SDPA call (s); None: the matmul's")
    index_overhead_s: Optional[Seconds] = Field(
        None, description="host time to issue one eager index, scatter or topk op (s); None: launch_overhead_s")
    module_overhead_s: Optional[Seconds] = Field(
        None, description="host time of one nn.Module call (the layer, each nn.Linear) beyond the ops it runs "
                          "(s); None: not measured, module calls are not priced")
    autograd_node_s: Optional[Seconds] = Field(
        None, description="host time of the autograd engine per node of a backward (recording it in the forward, "
                          "running it in the backward) beyond the ops it runs (s); None: not measured")
    backward_call_s: Optional[Seconds] = Field(
        None, description="host time of one backward call beyond its nodes (the engine's start and end) (s); "
                          "None: not measured")
    pace_s: Optional[Seconds] = Field(
        None, description="time of attncost's reference workload (profiler.pace) on this machine when it was "
                          "calibrated (s): `crosscheck --time` compares each measured point's with it; None: "
                          "not calibrated")
    sequence_overhead_s: Seconds = Field(
        0.0, description="extra host time per eager op (kernel or view) when ops of different kinds follow "
                         "each other, as in a layer, above the per-class times measured each in a loop of one op "
                         "(s); 0: not measured")
    host_sync: bool = Field(
        False, description="the host runs each eager op to its end before issuing the next (a CPU): an op takes "
                           "the longer of its host time and its kernel time, nothing overlaps")
    kernel_latency_s: Seconds = Field(5e-6, description="fixed device time of one non-matmul kernel (s)")
    mem_efficiency: Share = Field(0.85, description="share of mem_bandwidth a large copy reaches")
    vector_eff: dict[str, Share] = Field(
        default_factory=dict,
        description="share of mem_bandwidth per non-matmul op kind (softmax, reduction, ...); default mem_efficiency")
    vector_latency: dict[str, Seconds] = Field(
        default_factory=dict,
        description="fixed device time per non-matmul op kind (s); default kernel_latency_s")
    vector_row_s: dict[str, Seconds] = Field(
        default_factory=dict,
        description="time per row of a row-wise op kind (softmax, topk: per row; reduction: per output) (s); "
                    "default 0")
    topk_select_s: Seconds = Field(
        0.0, description="time per kept element per row of a topk, times log2(k + 1): ordering the k kept (s)")
    threads: Optional[int] = Field(
        None, ge=1, le=4096, description="intra-op threads the profile was calibrated with (a CPU: "
                                         "torch.get_num_threads()); None: not a CPU, or not known")
    attention_speedup: Optional[float] = Field(
        None, ge=1.0, le=4096.0, description="how much faster `threads` threads run a fused attention call of "
                                             "`threads` or more independent items (batch x head x query block, "
                                             "PyTorch's CPU kernel) than one thread runs them: a call of fewer "
                                             "items leaves threads idle (timing.item_slowdown); None: never")
    topk_paths: Optional[TopkPaths] = Field(
        None, description="a topk priced as PyTorch's CPU kernel runs it (partial sort or selection, by k); "
                          "None: by the topk kind's element law")
    cache_bytes: Optional[float] = Field(
        None, gt=0, le=1e15, description="a kernel that moves more bytes than this streams them from memory, no "
                                         "faster than dram_eff of mem_bandwidth (a CPU's last-level cache, where "
                                         "mem_bandwidth is the rate within it); None: every kernel at its own rate")
    dram_eff: Optional[Share] = Field(None, description="share of mem_bandwidth beyond cache_bytes")
    fresh_bytes: Optional[float] = Field(
        None, gt=0, le=1e15, description="an op's output of at least this many bytes is fresh memory it faults in "
                                         "page by page (a CPU's allocator maps large blocks anew for each op and "
                                         "unmaps them when freed); None: no output is")
    fresh_s_per_byte: Seconds = Field(0.0, description="time per byte of faulting in a fresh output (s)")
    cold_from_bytes: Optional[float] = Field(
        None, gt=0, le=1e15, description="a layer whose kernels move more bytes than this in one call finds its "
                                         "weights, caches and inputs evicted, in part, at its next call (a CPU's "
                                         "caches); None: never")
    cold_full_bytes: Optional[float] = Field(
        None, gt=0, le=1e15, description="from this many bytes per call on, wholly (the share grows linearly "
                                         "from cold_from_bytes)")
    cold_latency_s: Seconds = Field(
        0.0, description="time a kernel pays, wholly evicted, to fetch its weights, caches and inputs anew, beyond "
                         "cold_s_per_byte per byte (s)")
    cold_s_per_byte: Seconds = Field(0.0, description="time per byte of those operands fetched anew (s), "
                                                      "streamed as a matrix-vector product streams its matrix")
    cold_access_s_per_byte: dict[ColdAccess, Seconds] = Field(
        default_factory=dict,
        description="time per byte fetched anew by a kernel that reads its operands otherwise than as a stream: "
                    "'matmul', a matmul of several rows (a CPU's gemm packs its matrix in blocks); 'index', rows "
                    "gathered by index (s); default cold_s_per_byte")
    fp32_matmul: Fp32Matmul = Field(
        "ieee", description="fp32 matmuls: 'ieee' on CUDA cores at vector_flops (PyTorch's default, "
                            "allow_tf32=False) or 'tf32' on tensor cores at peak_flops['fp32']")
    matmul: dict[Dtype, MatmulEfficiency] = Field(default_factory=dict)
    attention: dict[str, AttentionEfficiency] = Field(default_factory=dict)
    attention_backend: str = Field("flash", description="the fused attention backend predicted by default")
    calibration: str = Field("", description="where the efficiencies come from")
    notes: list[str] = Field(default_factory=list)
    interconnect: Optional[Interconnect] = Field(
        None, description="links to the other devices of a node (tensor and context parallelism); None: not known")

    _derived: dict = PrivateAttr(default_factory=dict)  # see ``cached``

    @model_validator(mode="after")
    def _check(self) -> "Hardware":
        missing = [d for d in DTYPES if d not in self.peak_flops]
        if missing:
            raise ValueError(f"peak_flops has no {', '.join(missing)}")
        if self.attention and self.attention_backend not in self.attention:
            raise ValueError(f"attention_backend {self.attention_backend!r} is not one of "
                             f"{', '.join(self.attention)}")
        return self

    @property
    def calibrated(self) -> bool:
        """Whether the efficiencies were fitted to measurements on this device (``calibration``
        starts with "fitted"), rather than assumed on top of datasheet peaks."""
        return self.calibration.strip().lower().startswith("fitted")

    # -- lookups ---------------------------------------------------------------------------------
    def tensor_peak(self, dtype: str) -> float:
        """FLOP/s ceiling of matmuls in ``dtype`` (fp32: CUDA cores unless fp32_matmul = 'tf32'; fp8
        and int8: ``peak_flops_8bit``, HardwareError where the device has no such tensor cores)."""
        if dtype == "fp32" and self.fp32_matmul == "ieee":
            return self.vector_flops
        if dtype in EIGHT_BIT:
            if dtype not in self.peak_flops_8bit:
                have = ", ".join(self.peak_flops_8bit) or "none"
                raise HardwareError(f"hardware {self.name} has no {dtype} tensor cores (its 8-bit ones: {have})")
            return self.peak_flops_8bit[dtype]
        return self.peak_flops[dtype]

    def matmul_eff(self, dtype: str) -> MatmulEfficiency:
        m = self.matmul
        if dtype in m:
            return m[dtype]
        sibling = {"bf16": "fp16", "fp16": "bf16", "fp8": "bf16", "int8": "bf16"}.get(dtype)  # 8-bit: bf16's shape
        if sibling in m:
            return m[sibling]
        return _DEFAULT_MATMUL

    def attention_eff(self, backend: Optional[str] = None) -> AttentionEfficiency:
        b = backend or self.attention_backend
        if b in self.attention:
            return self.attention[b]
        if not self.attention and backend is None:
            return _DEFAULT_ATTENTION
        raise HardwareError(f"hardware {self.name} has no attention backend {b!r}: choose one of "
                            f"{', '.join(self.attention) or self.attention_backend}")

    def op_eff(self, kind: str) -> float:
        """Share of mem_bandwidth reached by a non-matmul op of this kind."""
        return self.vector_eff.get(kind, self.mem_efficiency)

    def op_latency(self, kind: str) -> float:
        """Fixed device time of a non-matmul kernel of this kind."""
        return self.vector_latency.get(kind, self.kernel_latency_s)

    def op_row_s(self, kind: str) -> float:
        """Time per row of a non-matmul op of this kind (0: no row term)."""
        return self.vector_row_s.get(kind, 0.0)

    @property
    def host_matmul_s(self) -> float:
        return self.launch_overhead_s if self.matmul_overhead_s is None else self.matmul_overhead_s

    @property
    def host_sdpa_s(self) -> float:
        return self.host_matmul_s if self.sdpa_overhead_s is None else self.sdpa_overhead_s

    @property
    def host_index_s(self) -> float:
        return self.launch_overhead_s if self.index_overhead_s is None else self.index_overhead_s

    def cached(self, key: Hashable, build: Callable[..., T], *args) -> T:
        """A value derived from this profile (``timing.compiled``): ``build(*args)`` on the first
        call with ``key``, the kept value after. A profile is frozen, so what is derived from it does
        not go stale; the values are not part of the profile (not compared, not saved), and a copy
        starts without them. A ``build`` that raises keeps nothing."""
        derived = self.__pydantic_private__["_derived"]  # ~70x faster than self._derived (pydantic's __getattr__)
        try:
            return derived[key]
        except KeyError:
            value = derived[key] = build(*args)
            return value

    # -- io -------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def save(self, path) -> Path:
        """Write the profile as JSON, atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        write_atomic(path, self.to_json())
        return path

    def __eq__(self, other) -> bool:  # the derived values (``cached``) are not part of a profile's value
        if isinstance(other, Hardware):
            return self.__dict__ == other.__dict__
        return NotImplemented

    __hash__ = None  # dict fields: not hashable

    def model_copy(self, *, update=None, deep: bool = False) -> "Hardware":
        """A copy (with ``update`` validated), with no derived values (``cached``)."""
        if update:
            return Hardware.model_validate({**self.model_dump(), **_plain(update)})
        c = super().model_copy(deep=deep)
        c._derived = {}
        return c


def _plain(update: dict) -> dict:
    return {k: (v.model_dump() if isinstance(v, BaseModel) else
                {kk: (vv.model_dump() if isinstance(vv, BaseModel) else vv) for kk, vv in v.items()}
                if isinstance(v, dict) else v) for k, v in update.items()}


_DEFAULT_MATMUL = MatmulEfficiency()
_DEFAULT_ATTENTION = AttentionEfficiency()


# -- loading ---------------------------------------------------------------------------------------

def load_profile(path) -> Hardware:
    """Read a profile from a JSON file; HardwareError with one sentence if it is not one."""
    return load_json_model(path, Hardware, ("hardware file", "profile"), HardwareError)


def get_hardware(name_or_path: str) -> Hardware:
    """A built-in profile by name (case-insensitive) or a profile from a JSON file."""
    if isinstance(name_or_path, Hardware):
        return name_or_path
    key = str(name_or_path).strip()
    if key.lower() in _BUILTIN:
        return _builtin(key.lower())
    p = Path(key).expanduser()
    if p.suffix.lower() == ".json" or os.sep in key or (os.altsep and os.altsep in key) or p.exists():
        return load_profile(p)
    raise HardwareError(f"unknown hardware {key!r}: choose one of {', '.join(_BUILTIN)} or give a JSON file")


def list_hardware() -> list:
    """The built-in profiles, in a fixed order."""
    return [_builtin(n) for n in _BUILTIN]


def hardware_names() -> tuple:
    return tuple(_BUILTIN)


# -- built-in profiles -----------------------------------------------------------------------------
# Peaks are the vendors' published dense numbers. Efficiencies of the non-fitted profiles are
# assumptions (said in ``calibration``): the H100 fit's shape for NVIDIA GPUs, with attention
# efficiency from the FlashAttention-2 paper for Ampere/Ada; round guesses for Apple and CPUs.

# Interconnects. Bandwidths are NVIDIA's per direction (half the bidirectional total it quotes);
# latencies are modelled values (typical NCCL small-message times), not datasheet figures.
NVLINK4 = Interconnect(
    name="NVLink 4 (SXM, NVSwitch)", bandwidth_Bps=450e9, latency_s=5e-6,
    source="NVIDIA H100/H200 datasheets: NVLink 900 GB/s total = 450 GB/s per direction; latency modelled")
NVLINK3 = Interconnect(
    name="NVLink 3 (SXM4, NVSwitch)", bandwidth_Bps=300e9, latency_s=6e-6,
    source="NVIDIA A100 datasheet: NVLink 600 GB/s total = 300 GB/s per direction; latency modelled")
PCIE4 = Interconnect(
    name="PCIe Gen4 x16", bandwidth_Bps=32e9, latency_s=10e-6,
    source="PCI-SIG PCIe 4.0: 16 GT/s x 16 lanes, ~32 GB/s per direction; no NVLink; latency modelled")
PCIE5 = Interconnect(
    name="PCIe Gen5 x16", bandwidth_Bps=64e9, latency_s=10e-6,
    source="PCI-SIG PCIe 5.0: 32 GT/s x 16 lanes, ~64 GB/s per direction; latency modelled")

_NV_EAGER = dict(launch_overhead_s=10.7e-6, matmul_overhead_s=19.6e-6)  # H100 host, eager_tiny_op / _matmul

# Shape of the H100 fit, used as the assumption for other NVIDIA GPUs (see data/h100-microbench.json).
_NV_MATMUL = {
    "bf16": MatmulEfficiency(max_eff=0.8, mn_half=1.0, k_half=160.0, k_step_s=8e-10, mem_eff=0.8, latency_s=6e-6),
    "fp32": MatmulEfficiency(max_eff=0.8, mn_half=30.0, k_half=30.0, k_step_s=1.2e-9, mem_eff=0.85, latency_s=8e-6),
}
# FlashAttention-2 forward reaches 50-73% of A100's peak (Dao 2023, arXiv:2307.08691, Fig. 4-5).
_FA2_AMPERE = AttentionEfficiency(max_eff=0.8, dh_half=25.0, keys_half=150.0, causal_tile=128.0,
                                  mem_eff=0.85, latency_s=8e-6)
_ASSUMED_NV = ("assumed, not measured: matmul efficiency shaped like the H100 fit, fused attention "
               "from FlashAttention-2's reported 50-73% of peak on A100 (Dao 2023); fit it with "
               "`attncost calibrate`")

A100 = Hardware(
    name="a100",
    description="NVIDIA A100 80GB SXM4 (HBM2e)",
    source="NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4): "
           "BF16/FP16 312, TF32 156, FP32 19.5 TFLOPS dense; INT8 624 TOPS dense (1,248 with sparsity), no "
           "FP8; 80GB HBM2e at 2,039 GB/s; "
           "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
    peak_flops={"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}, peak_flops_8bit={"int8": 624e12},
    vector_flops=19.5e12, mem_bandwidth=2.039e12, mem_bytes=80 * GIB, **_NV_EAGER,
    kernel_latency_s=5e-6, mem_efficiency=0.88, vector_eff={"softmax": 0.7, "reduction": 0.8},
    matmul=_NV_MATMUL, attention={"flash": _FA2_AMPERE, "efficient": AttentionEfficiency(max_eff=0.35, dh_half=55)},
    attention_backend="flash", calibration=_ASSUMED_NV, interconnect=NVLINK3,
)

L4 = Hardware(
    name="l4",
    description="NVIDIA L4 24GB (Ada, PCIe, 72 W)",
    source="NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3 TFLOPS; TF32 120, BF16/FP16 242 TFLOPS, FP8 485 "
           "TFLOPS, INT8 485 TOPS with sparsity (60 / 121 / 242.5 / 242.5 dense); 24GB GDDR6 at 300 GB/s; "
           "https://www.nvidia.com/en-us/data-center/l4/",
    peak_flops={"bf16": 121e12, "fp16": 121e12, "fp32": 60e12},
    peak_flops_8bit={"fp8": 242.5e12, "int8": 242.5e12},
    vector_flops=30.3e12, mem_bandwidth=300e9, mem_bytes=24 * GIB, **_NV_EAGER,
    kernel_latency_s=5e-6, mem_efficiency=0.88, vector_eff={"softmax": 0.7, "reduction": 0.8},
    matmul=_NV_MATMUL, attention={"flash": _FA2_AMPERE, "efficient": AttentionEfficiency(max_eff=0.35, dh_half=55)},
    attention_backend="flash", calibration=_ASSUMED_NV, interconnect=PCIE4,
    notes=["a 72 W card: sustained tensor throughput is often power-limited below the datasheet peak"],
)

RTX4090 = Hardware(
    name="rtx4090",
    description="NVIDIA GeForce RTX 4090 24GB (Ada)",
    source="NVIDIA Ada Lovelace GPU Architecture whitepaper v2.1, Appendix A (GeForce RTX 4090): "
           "FP32 82.6 TFLOPS; FP16/BF16 tensor with FP32 accumulate 165.2, FP8 with FP32 accumulate 330.3, "
           "TF32 82.6 TFLOPS, INT8 660.6 TOPS dense; "
           "24GB GDDR6X at 1,008 GB/s; https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
    peak_flops={"bf16": 165.2e12, "fp16": 165.2e12, "fp32": 82.6e12},
    peak_flops_8bit={"fp8": 330.3e12, "int8": 660.6e12},
    vector_flops=82.6e12, mem_bandwidth=1008e9, mem_bytes=24 * GIB, **_NV_EAGER,
    kernel_latency_s=4e-6, mem_efficiency=0.9, vector_eff={"softmax": 0.7, "reduction": 0.8},
    matmul=_NV_MATMUL, attention={"flash": _FA2_AMPERE, "efficient": AttentionEfficiency(max_eff=0.35, dh_half=55)},
    attention_backend="flash", calibration=_ASSUMED_NV, interconnect=PCIE4,
    notes=["PyTorch accumulates half-precision matmuls in fp32: the GeForce tensor rate with FP32 "
           "accumulate (half the FP16-accumulate rate) is the peak"],
)

_ASSUMED_APPLE = ("assumed, not measured: matmul at up to 70% of the FP32 ALU peak, fused attention "
                  "at up to 40%, 20 us per eager op on MPS; fit it with `attncost calibrate`")
_APPLE_MATMUL = {"fp32": MatmulEfficiency(max_eff=0.7, mn_half=32.0, k_half=64.0, k_step_s=0.0,
                                          mem_eff=0.8, latency_s=10e-6)}
_APPLE_ATTN = {"mps": AttentionEfficiency(max_eff=0.4, dh_half=32.0, keys_half=256.0, causal_tile=64.0,
                                          mem_eff=0.8, latency_s=10e-6)}

M2_MAX = Hardware(
    name="m2-max",
    description="Apple M2 Max, 38-core GPU, unified memory (up to 96GB)",
    source="Apple newsroom, 'Apple unveils M2 Pro and M2 Max' (2023-01-17): 38-core GPU, 400GB/s, up "
           "to 96GB; Apple publishes no FLOP figure: 38 cores x 128 FP32 ALUs x 2 x 1.398 GHz = 13.6 "
           "TFLOP/s; no tensor cores, fp16/bf16 at the FP32 rate; "
           "https://www.apple.com/newsroom/2023/01/apple-unveils-m2-pro-and-m2-max-next-generation-chips-for-next-level-workflows/",
    peak_flops={"bf16": 13.6e12, "fp16": 13.6e12, "fp32": 13.6e12},
    vector_flops=13.6e12, mem_bandwidth=400e9, mem_bytes=96 * GIB,
    launch_overhead_s=20e-6, matmul_overhead_s=25e-6, kernel_latency_s=10e-6, mem_efficiency=0.8,
    matmul=_APPLE_MATMUL, attention=_APPLE_ATTN, attention_backend="mps",
    calibration=_ASSUMED_APPLE,
    notes=["unified memory: the GPU can use only part of mem_bytes (macOS keeps a share)"],
)

M3_MAX = Hardware(
    name="m3-max",
    description="Apple M3 Max, 40-core GPU, unified memory (up to 128GB)",
    source="Apple newsroom, 'Apple unveils new MacBook Pro featuring M3 chips' (2023-10-30): 40-core "
           "GPU, 400GB/s, up to 128GB; Apple publishes no FLOP figure: 40 cores x 128 FP32 ALUs x 2 "
           "x ~1.4 GHz = 14.2 TFLOP/s (third-party estimates range 14.2-16.4); no tensor cores; "
           "https://www.apple.com/newsroom/2023/10/apple-unveils-new-macbook-pro-featuring-m3-family-of-chips/",
    peak_flops={"bf16": 14.2e12, "fp16": 14.2e12, "fp32": 14.2e12},
    vector_flops=14.2e12, mem_bandwidth=400e9, mem_bytes=128 * GIB,
    launch_overhead_s=20e-6, matmul_overhead_s=25e-6, kernel_latency_s=10e-6, mem_efficiency=0.8,
    matmul=_APPLE_MATMUL, attention=_APPLE_ATTN, attention_backend="mps",
    calibration=_ASSUMED_APPLE,
    notes=["unified memory: the GPU can use only part of mem_bytes (macOS keeps a share)"],
)

CPU = Hardware(
    name="cpu",
    description="A generic modest CPU: 8 cores with AVX2 at 3 GHz, dual-channel DDR4-3200, 32GB",
    source="not a product: 8 cores x 3.0 GHz x 32 FP32 FLOP/cycle (2 AVX2 FMA units) = 768 GFLOP/s; "
           "2 channels x 25.6 GB/s (DDR4-3200) = 51.2 GB/s; bf16/fp16 at the FP32 rate (no AMX/AVX512-BF16)",
    peak_flops={"bf16": 768e9, "fp16": 768e9, "fp32": 768e9},
    vector_flops=768e9, mem_bandwidth=51.2e9, mem_bytes=32 * GIB,
    launch_overhead_s=4e-6, matmul_overhead_s=6e-6, kernel_latency_s=1e-6, mem_efficiency=0.7,
    matmul={"fp32": MatmulEfficiency(max_eff=0.7, mn_half=16.0, k_half=32.0, k_step_s=0.0, mem_eff=0.7,
                                     latency_s=2e-6),
            "bf16": MatmulEfficiency(max_eff=0.35, mn_half=16.0, k_half=32.0, k_step_s=0.0, mem_eff=0.7,
                                     latency_s=2e-6)},
    attention={"flash": AttentionEfficiency(max_eff=0.35, dh_half=32.0, keys_half=128.0, causal_tile=64.0,
                                            mem_eff=0.7, latency_s=2e-6, packs_groups=False)},
    attention_backend="flash",
    calibration="assumed, not measured: matmul at up to 70% of the FP32 peak (35% in bf16, converted "
                "on the fly without AMX), fused attention up to 35%; fit it with `attncost calibrate`",
)

# H200: same GH100 die and software stack as the H100, more and faster memory.
_H200_PEAKS = dict(
    description="NVIDIA H200 141GB SXM (HBM3e)",
    source="NVIDIA H200 Tensor Core GPU datasheet: BF16/FP16 1,979, TF32 989, FP8 3,958 TFLOPS, INT8 "
           "3,958 TOPS with sparsity (989.4 / 494.7 / 1,978.9 / 1,978.9 dense), FP32 67 TFLOPS; 141GB "
           "HBM3e at 4.8 TB/s; https://www.nvidia.com/en-us/data-center/h200/",
    peak_flops={"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12},
    peak_flops_8bit={"fp8": 1978.9e12, "int8": 1978.9e12},
    vector_flops=66.9e12, mem_bandwidth=4.8e12, mem_bytes=141 * GIB,
)

# The published H100 numbers: the base (and ceilings) of the fitted data/h100-microbench.json.
H100_PUBLISHED = Hardware(
    name="h100",
    description="NVIDIA H100 80GB SXM5 (HBM3)",
    source="NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16/FP16 1,979, TF32 989, FP8 3,958 TFLOPS, "
           "INT8 3,958 TOPS with sparsity (989.4 / 494.7 / 1,978.9 / 1,978.9 dense), FP32 66.9 TFLOPS; "
           "80GB HBM3 at 3.35 TB/s; https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
    peak_flops={"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12},
    peak_flops_8bit={"fp8": 1978.9e12, "int8": 1978.9e12},
    vector_flops=66.9e12, mem_bandwidth=3.35e12, mem_bytes=80 * GIB, **_NV_EAGER,
    kernel_latency_s=5e-6, mem_efficiency=0.88, vector_eff={"softmax": 0.7, "reduction": 0.8},
    matmul=_NV_MATMUL,
    attention={"cudnn": AttentionEfficiency(max_eff=0.85, dh_half=50.0),
               "flash": AttentionEfficiency(max_eff=0.45, dh_half=30.0),
               "efficient": AttentionEfficiency(max_eff=0.25, dh_half=55.0)},
    attention_backend="cudnn", calibration="published peaks only, efficiencies assumed", interconnect=NVLINK4,
)


def _h200() -> Hardware:
    fitted = _builtin("h100")
    return fitted.model_copy(update={
        "name": "h200", **_H200_PEAKS,
        "calibration": "efficiencies from the H100 microbenchmark fit (same GH100 die and software); "
                       "peaks and bandwidth from the H200 datasheet; " + fitted.calibration,
        "notes": ["the H100's fitted efficiencies are applied to the H200's faster memory: "
                  "bandwidth-bound kernels are scaled by 4.8/3.35, not measured"]
                 + ["H100 fit: " + n for n in fitted.notes]})


_BUILTIN: dict = {
    "h100": "h100-microbench.json",
    "h200": None,
    "a100": A100,
    "l4": L4,
    "rtx4090": RTX4090,
    "m2-max": M2_MAX,
    "m3-max": M3_MAX,
    "cpu": CPU,
}


@lru_cache(maxsize=None)
def _builtin(name: str) -> Hardware:
    spec = _BUILTIN[name]
    if name == "h200":
        return _h200()
    if isinstance(spec, str):  # a derived (fitted) profile shipped in data/
        published = {"h100": H100_PUBLISHED}[name]  # the datasheet it was fitted under
        return load_profile(DATA_DIR / spec).model_copy(update={
            "name": name, "source": published.source, "peak_flops_8bit": published.peak_flops_8bit,
            "interconnect": published.interconnect})
    return spec
