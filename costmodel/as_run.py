"""A measured layer priced as it ran: in its execution mode, with the attention kernel that ran.

``timing.predict`` prices a variant's graph as the cost model writes it. A profiled point may have
run otherwise, and ``kernel_parts`` prices what ran:

- the execution mode (``timing.MODES``): "eager", the host issues each op (PyTorch eager); "graph",
  the device replays a captured sequence with no host cost (CUDA graphs). ``graph_profile`` is a
  profile whose host costs are 0, which prices any ``estimate`` or ``evaluate`` in graph mode;
- the SDPA backend torch chose: fused attention at that backend's efficiency where the profile has
  one (else at its default backend's);
- torch's math backend: the unfused path (``math_path_time``);
- a sliding window run by a dense kernel: where flex_attention did not run (``FLEX``: the kernel
  that skips the masked band, ``profiler.modules.flex``), the module passes a boolean band mask to
  SDPA, and a kernel given a mask computes every tile of the T x T square (it skips tiles only for
  ``is_causal``) and reads the mask: the variant is priced with ``kernel="masked"``.
"""

from typing import Optional

from .analysis import analyse
from .estimate import graph, resolve_params
from .graph import Graph, Tensor
from .hardware import Hardware, HardwareError
from .shape import Shape
from .timing import MODES, predict
from .units import DTYPE_BYTES
from .variants.base import attention_core

FLEX = "flex"  # ``Point.backend`` where flex_attention with a block mask ran
_PLAIN = ("scale", "mask", "softmax")  # the element-wise steps of one plain fused attention
BAND_VARIANTS = ("sliding_window",)  # variants whose module passes a band mask where flex_attention does not run
HOST_FIELDS = tuple(f for f in Hardware.model_fields if f.endswith("_overhead_s"))  # host time per op issued


def other_mode(mode: str) -> str:
    """The other execution mode of ``timing.MODES``."""
    return MODES[1 - MODES.index(mode)]


def graph_profile(hw: Hardware) -> Hardware:
    """``hw`` with no host cost: what ``timing.predict``'s graph mode leaves out, for callers that
    price through a profile alone (``estimate``, ``evaluate``)."""
    return hw.model_copy(update=dict.fromkeys(HOST_FIELDS, 0.0))


def runs_dense(variant: str, phase: str, backend: Optional[str]) -> bool:
    """Whether a measured point of ``variant`` computed its band with a dense masked kernel: a
    sliding window outside decode (which attends over its rolling cache, unmasked) that did not run
    flex_attention."""
    return variant in BAND_VARIANTS and phase != "decode" and backend is not None and backend != FLEX


def kernel_parts(variant: str, shape: Shape, params, hw: Hardware, *, backend: Optional[str] = None,
                 mode: str = "eager", compute_dtype: Optional[str] = None) -> Optional[list]:
    """[(kernels, ``timing.TimeEstimate``)] of the layer as it ran (see the module docstring): one
    part, or on the math backend the layer without its fused kernels and then each of them as the
    math path, priced apart (their times add). ``backend``: the attention kernel that ran (None: the
    profile's default); ``compute_dtype``: the math path's (default ``shape.dtype``). None where the
    model does not price what ran (the math path in train, a fused kernel that is not one plain
    attention). VariantError and pydantic's ValidationError where the variant does not apply;
    HardwareError where the profile lacks what it needs."""
    params = dict(params or {})
    if runs_dense(variant, shape.phase, backend):
        params["kernel"] = "masked"
    g = graph(variant, shape, resolve_params(variant, shape, params))
    kernels = analyse(g).kernels
    if backend == "math":
        return _math_parts(g, kernels, shape, hw, compute_dtype or shape.dtype, mode)
    fused = backend if backend in hw.attention else None
    return [(kernels, predict(kernels, hw, shape.dtype, backend=fused, mode=mode))]


def time_as_run(variant: str, shape: Shape, params, hw: Hardware, **how) -> Optional[float]:
    """Predicted seconds of the layer as it ran: ``kernel_parts``' times added (None where it has none)."""
    parts = kernel_parts(variant, shape, params, hw, **how)
    if parts is None:
        return None
    return sum(te.time_s for _, te in parts)


def math_path_time(variant: str, shape: Shape, params, hardware: Hardware, compute_dtype: str,
                   mode: str = "eager") -> Optional[float]:
    """Predicted time of the layer when SDPA ran torch's math backend, from the cost model's pieces:
    the variant's kernels but its fused attention kernels, in the shape's dtype, plus for each fused
    kernel the math path of the same attention (``costmodel.variants.base.attention_core`` unfused:
    scores, scale, a mask pass where the kernel masked, softmax, AV, each writing its output, the
    scores dense) in ``compute_dtype``, with K and V repeated to the query heads where they are shared
    (``enable_gqa``) and, where the compute dtype differs, q, k, v converted to it and the output back
    (torch's math SDPA upcasts half precision). The two halves are priced apart
    (``costmodel.timing.predict``) and added. None where the variant does not apply, where the fused
    kernel is not one plain attention (extra ops in it) and in train (the math path's backward is not
    modelled)."""
    try:
        return time_as_run(variant, shape, params, hardware, backend="math", mode=mode, compute_dtype=compute_dtype)
    except HardwareError:
        raise
    except ValueError:  # VariantError, pydantic's ValidationError: no model of this point
        return None


def _math_parts(g: Graph, kernels: list, shape: Shape, hw: Hardware, compute_dtype: str, mode: str) -> Optional[list]:
    if shape.phase == "train":
        return None
    cores = [_math_core(g, k, shape, compute_dtype) for k in kernels if k.kind == "attention"]
    if not cores or None in cores:
        return None
    rest = [k for k in kernels if k.kind != "attention"]
    parts = [(rest, predict(rest, hw, shape.dtype, mode=mode))]
    for c in cores:
        ks = analyse(c).kernels
        parts.append((ks, predict(ks, hw, compute_dtype, mode=mode)))
    return parts


def _math_core(g: Graph, kernel, shape: Shape, compute_dtype: str) -> Optional[Graph]:
    """The Graph of one fused attention kernel run as torch's math backend runs it (see
    ``math_path_time``), or None when the kernel is not scores, scale, (mask,) softmax, AV, and what
    else it writes beside its output (the rows' log-sum-exp, which the math path does not keep). The
    heads are split and merged outside the kernel: the math path's graph leaves that out."""
    ops = kernel.ops
    mms = [i for i, o in enumerate(ops) if o.mm is not None]
    if len(mms) < 2 or mms[0] != 0 or mms[1:] != list(range(mms[1], mms[-1] + 1)):
        return None
    sc, av = ops[0], ops[mms[1]]  # AV: one matmul, or its columns in pieces (V padded to the scores' dim)
    if any(o.fn not in _PLAIN for o in ops[1:mms[1]]) or any(o.fn != "copy" for o in ops[mms[-1] + 1:]):
        return None
    groups, rows, qk_dim, keys = sc.mm
    heads = shape.batch * shape.heads
    if groups * rows != heads * shape.tokens or heads % groups:
        return None
    h = Graph(itemsize=DTYPE_BYTES[compute_dtype])
    q, k, v = sc.reads[0], sc.reads[1], av.reads[1]  # k and v are one tensor in a latent cache
    for name in {q, k, v}:
        t = g.tensors[name]
        h.tensors[name] = Tensor(name, t.elems, t.itemsize, "input")
    upcast = h.itemsize != shape.itemsize
    steps = ([(f"_to_{compute_dtype}", 1.0, (q, k, v))] if upcast else []) + (
        [("_repeat", heads / groups, (k, v))] if heads > groups else [])
    for suffix, factor, which in steps:
        made = {n: h.elementwise(n + suffix, "copy", (n,), elems=h.tensors[n].elems * factor)
                for n in dict.fromkeys(which)}
        q, k, v = made.get(q, q), made.get(k, k), made.get(v, v)
    v_dim = sum(ops[i].mm[3] for i in mms[1:])
    out = attention_core(h, shape, q, k, v, groups=heads, qk_dim=qk_dim, v_dim=v_dim, keys=keys,
                         fraction=1.0, fused=False, mask=sc.fraction < 1.0, split=0, merge=False)
    if upcast:
        elems = h.tensors[out].elems
        out = h.elementwise(f"out_to_{shape.dtype}", "copy", (out,), elems=elems)
        h.tensors[out] = Tensor(out, elems, shape.itemsize, "act")
    h.output(out)
    return h
