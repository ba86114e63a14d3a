"""What each part of a model is stored and computed in, and what that changes in its cost.

Three precisions (``Precision``): ``compute`` (activations and matmul inputs, ``--dtype``),
``weights`` (the linear layers of the blocks: attention projections, MLPs and experts;
``--weights-dtype``) and ``kv`` (the KV cache, ``--kv-dtype``). Embeddings, the LM head, norms,
biases and MoE routers stay at the compute dtype, as vLLM's fp8, AWQ and GPTQ checkpoints keep
them. Byte sizes are ``units.DTYPE_BYTES`` (int4: half a byte).

What changes (``quantise`` edits a layer's graph, ``timing_kernels`` the kernels priced):

- weights memory and the bytes a step reads: each linear layer's weight tensor takes the weights
  dtype's size, so a bandwidth-bound decode step reads half the bytes at 8 bits;
- fp8 weights run fp8 matmuls (activations quantised per token, the scales ignored): their
  FLOPs are priced at the profile's fp8 peak (``Hardware.peak_flops_8bit``; twice bf16's on
  Hopper and Ada) with the compute dtype's matmul efficiency, by scaling the FLOPs the time model
  sees by rate(compute) / rate(fp8); the FLOPs reported are not scaled;
- int8 / int4 weights are weight-only (Marlin-style kernels): the matmul runs at the compute
  dtype and dequantises each weight tile in the same kernel, ``units.DEQUANT_OPS`` per weight
  element each time a tile of ``DEQUANT_TILE_M`` activation rows loads it (counted as FLOPs of
  the MLP or projections; timed as one matmul kernel whose compute also does the dequantisation
  on the vector units, ``vector_flops``);
- the KV cache takes the kv dtype's size: its memory, what fits, and the bytes a decode step's
  attention reads (the kernel reads the quantised cache; its conversion is free in a fused
  kernel, as FlashInfer's and FlashAttention-3's fp8 caches).

A device without fp8 tensor cores (A100) cannot run fp8 weights or an fp8 cache: ``check``
says so in one sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from .graph import Graph, Tensor
from .hardware import Hardware, HardwareError
from .timing import compiled, matmul_parts
from .units import DEQUANT_OPS, DEQUANT_TILE_M, DTYPE_BYTES, KV_DTYPES, WEIGHT_DTYPES, WEIGHT_ONLY

UNQUANTISED = frozenset(("W_router",))  # weights kept at the compute dtype inside a block
DEQUANT = ".dequant"  # the suffix of a dequantisation op's name


class PrecisionError(ValueError):
    """A precision that does not exist or that the hardware cannot run (one plain sentence)."""


@dataclass(frozen=True)
class Precision:
    """Compute, weights and KV-cache dtypes; ``of`` fills the last two from the first."""

    compute: str
    weights: str
    kv: str

    @classmethod
    def of(cls, compute: str, weights: Optional[str] = None, kv: Optional[str] = None) -> "Precision":
        """``weights`` and ``kv`` default to ``compute``; other values must be in WEIGHT_DTYPES /
        KV_DTYPES (PrecisionError otherwise)."""
        w, k = weights or compute, kv or compute
        if w != compute and w not in WEIGHT_DTYPES:
            raise PrecisionError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}, not {w!r}")
        if k != compute and k not in KV_DTYPES:
            raise PrecisionError(f"KV-cache dtype must be one of {', '.join(KV_DTYPES)}, not {k!r}")
        return cls(compute, w, k)

    @property
    def act_bytes(self) -> float:
        return DTYPE_BYTES[self.compute]

    @property
    def weight_bytes(self) -> float:
        return DTYPE_BYTES[self.weights]

    @property
    def kv_bytes(self) -> float:
        return DTYPE_BYTES[self.kv]

    @property
    def kv_ratio(self) -> float:
        """KV-cache bytes per element over the compute dtype's (what the cost model assumes)."""
        return self.kv_bytes / self.act_bytes

    @property
    def quantised(self) -> bool:
        return self.weights != self.compute or self.kv != self.compute


def check(p: Precision, hw: Optional[Hardware]) -> None:
    """PrecisionError where ``hw`` cannot run ``p``: fp8 weights or an fp8 cache on a device
    without fp8 tensor cores."""
    if hw is None or "fp8" not in (p.weights, p.kv):
        return
    try:
        hw.tensor_peak("fp8")
    except HardwareError as err:
        what, alt = ("fp8 weights", "int8 (weight-only) or bf16") if p.weights == "fp8" else (
            "an fp8 KV cache", "int8 or bf16")
        raise PrecisionError(f"{what} cannot run on {hw.name}: {err}; use {alt}") from None


def quantise(g: Graph, p: Precision) -> set:
    """Give ``g``'s linear-layer weights and KV cache ``p``'s sizes, in place; weight-only
    precisions get a dequantisation op in each weight matmul's kernel. Returns the names of the
    matmul ops that run in fp8."""
    fp8: set = set()
    if p.kv != p.compute:
        for t in list(g.tensors.values()):
            if t.role == "cache":
                _resize(g, t.name, t.elems, p.kv_bytes)
    if p.weights == p.compute:
        return fp8
    i = 0
    while i < len(g.ops):
        op = g.ops[i]
        w = op.reads[1] if op.kind == "matmul" and len(op.reads) > 1 else None
        if w is None or w in UNQUANTISED or g.tensors[w].role != "weight":
            i += 1
            continue
        t = g.tensors[w]
        if t.itemsize != p.weight_bytes:
            _resize(g, w, t.elems, p.weight_bytes)
        if p.weights == "fp8":
            fp8.add(op.name)
        elif p.weights in WEIGHT_ONLY:
            i += _dequantise(g, i, p)
        i += 1
    return fp8


def _resize(g: Graph, name: str, elems: float, itemsize: float) -> None:
    t = g.tensors[name]
    g.tensors[name] = Tensor(name, elems, itemsize, t.role)


def _dequantise(g: Graph, i: int, p: Precision) -> int:
    """Insert, before the matmul ``g.ops[i]``, the op that dequantises its weight in the same
    kernel, and make the matmul read it; returns the number of ops inserted (1)."""
    op = g.ops[i]
    w = op.reads[1]
    batch, m, k, n = op.mm
    passes = math.ceil(m / DEQUANT_TILE_M)
    elems = g.tensors[w].elems
    name = g.elementwise(op.name + DEQUANT, "mul", (w,), elems=elems * passes * DEQUANT_OPS[p.weights],
                         out_elems=elems, part=op.part, kernel=op.kernel)
    g.ops.insert(i, g.ops.pop())
    op.reads = (op.reads[0], name) + tuple(op.reads[2:])
    return 1


def fp8_time_scale(hw: Hardware, compute: str) -> float:
    """rate(compute) / rate(fp8) of large matmuls on ``hw``: what an fp8 matmul's FLOPs are
    multiplied by for the time model, which prices them at the compute dtype's rate."""
    rate = hw.tensor_peak(compute) * hw.matmul_eff(compute).max_eff
    return rate / (hw.tensor_peak("fp8") * hw.matmul_eff("fp8").max_eff)


def timing_kernels(kernels: list, fp8: list, hw: Hardware, compute: str) -> list:
    """``kernels`` as the time model (priced in ``compute``) should see them: those flagged in
    ``fp8`` with their matmul FLOPs scaled by ``fp8_time_scale``; a weight-only matmul with its
    dequantisation as one matmul kernel whose FLOPs take as long as its matmul and, on the vector
    units, its dequantisation (``vector_flops``)."""
    f = fp8_time_scale(hw, compute) if any(fp8) else 1.0
    mm = compiled(hw, compute).mm
    out = []
    for k, flag in zip(kernels, fp8):
        if flag:
            k = _scaled(k, f)
        deq = [op for op in k.ops if op.name.endswith(DEQUANT)]
        if deq:
            k = _as_matmul(k, sum(op.flops for op in deq) / hw.vector_flops, mm)
        out.append(k)
    return out


def _scaled(k, f: float):
    ops = tuple(replace(op, flops=op.flops * f, macs=op.macs * f) if op.kind == "matmul" else op for op in k.ops)
    return replace(k, flops=k.flops + k.flops_matmul * (f - 1), flops_matmul=k.flops_matmul * f, ops=ops)


def _as_matmul(k, extra_s: float, mm: tuple):
    """A dequantising matmul kernel as one matmul whose compute time is its own plus ``extra_s``."""
    op = next(o for o in k.ops if o.kind == "matmul")
    b, m, kk, n = op.mm
    _, compute, _ = matmul_parts(mm, b, m, kk, n, op.flops, k.bytes)
    f = (compute + extra_s) / compute if compute else 1.0
    op = replace(op, flops=op.flops * f, macs=op.macs * f)
    return replace(k, kind="matmul", flops=op.flops, flops_matmul=op.flops, ops=(op,))
