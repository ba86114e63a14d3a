"""A trace of what a layer's module runs: every aten op the dispatcher executes, classified.

``trace_variant(variant, shape)`` builds the variant's module (``modules.build_module``) and runs it
once in the shape's phase, after one untraced warm-up call: prefill and decode run the forward under
``no_grad``; train runs the forward, then the backward with a random output gradient (made outside
the trace). A ``TorchDispatchMode`` records each aten op: its name (overload packet), its kind and
host cost class (``costmodel.opkinds``), the bytes it reads and writes.

Views (host-only ops) are told apart by their schema: an op that returns an alias of an input
without writing it (``OpOverload.is_view``: view, t, transpose, permute, expand, slice, select,
split, unbind, detach, alias, as_strided ...), an in-place view (``Tag.inplace_view``: transpose_),
or an op listed as a view in ``opkinds.ATEN_KINDS`` whose schema returns a fresh tensor but which
moves no data (``_unsafe_view``, the reshape of a matmul's output). A ``reshape`` reaches the
dispatcher as what it became: a view where it aliases, else ``clone`` + ``_unsafe_view``; so does
``contiguous``: nothing, or a ``clone``.

Bytes of a kernel: each distinct tensor it reads, plus each tensor it writes, counted by the
elements its strides address (a broadcast dimension, stride 0, counts once) times the item size; a
view moves none. A gather (index_select, gather, index, embedding) reads its indices and, of the
tensor it picks from, the elements it picks (as many as it writes), not the whole tensor. An
in-place op writes the tensor it mutates and reads it too, unless it only overwrites it (copy_,
fill_: ``opkinds.WRITE_ONLY``) or it is an ``out=`` argument. An in-place scatter (index_put_,
index_copy_, scatter_ ...) writes as many entries as its source holds and reads its source and
indices (and, where it accumulates, the entries it adds to), not the whole destination.
"""

import contextlib
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch

from .dispatch import Recorder
from ..costmodel.opkinds import CALL, HOST_CLASS, HOST_ONLY, VIEW, WRITE_ONLY, OpSummary, aten_kind
from ..costmodel.shape import Shape

ACCUMULATING = frozenset(("index_add_", "scatter_add_", "scatter_reduce_"))


@dataclass(slots=True)
class TraceOp:
    """One aten op as it ran: ``name`` is its overload packet (``"mm"``), ``overload`` the full
    name (``"aten.mm.default"``); ``kind`` is ``"view"`` for a host-only op."""

    name: str
    overload: str
    kind: str
    host: str
    read_bytes: float = 0.0
    write_bytes: float = 0.0

    @property
    def bytes(self) -> float:
        return self.read_bytes + self.write_bytes

    @property
    def is_view(self) -> bool:
        """A host-only op: a view, or a module call."""
        return self.kind in HOST_ONLY


@dataclass
class Trace:
    """The ops one call of a layer ran, in order (``variant`` and ``shape`` say which layer)."""

    variant: str
    shape: Optional[Shape]
    ops: list = field(default_factory=list)

    @property
    def kernels(self) -> list:
        return [o for o in self.ops if not o.is_view]

    @property
    def views(self) -> list:
        return [o for o in self.ops if o.is_view]

    def summary(self) -> OpSummary:
        """The ops counted by kind, as ``opkinds.graph_summary`` counts a graph."""
        out = OpSummary()
        for o in self.ops:
            out.add(o.kind, o.bytes, o.name)
        return out

    def totals(self) -> dict:
        """kind -> ``opkinds.KindTotal`` of the launched kernels."""
        return self.summary().kernels

    def model_dump(self) -> dict:
        return {"variant": self.variant, "shape": self.shape.model_dump() if self.shape else None,
                "ops": [{"name": o.name, "overload": o.overload, "kind": o.kind, "host": o.host,
                         "read_bytes": o.read_bytes, "write_bytes": o.write_bytes} for o in self.ops],
                "summary": self.summary().model_dump()}


# -- classifying one op ------------------------------------------------------------------------

class OpClass(NamedTuple):
    """What the schema of one aten overload says: its name, kind, and which arguments it mutates."""

    name: str
    kind: str
    mutated: tuple  # (position, name, write-only) of each argument the op writes in place


_CLASSES: dict = {}


def classify(func) -> OpClass:
    """The ``OpClass`` of an aten ``OpOverload`` (kept per overload)."""
    c = _CLASSES.get(func)
    if c is None:
        c = _CLASSES[func] = _classify(func)
    return c


def _classify(func) -> OpClass:
    name = func._overloadpacket.__name__
    kind = aten_kind(name, torch.Tag.pointwise in func.tags)
    if func.is_view or torch.Tag.inplace_view in func.tags:
        kind = VIEW
    mutated = tuple((i, a.name, a.kwarg_only or name in WRITE_ONLY)
                    for i, a in enumerate(func._schema.arguments)
                    if a.alias_info is not None and a.alias_info.is_write)
    return OpClass(name, kind, mutated)


def footprint(t: torch.Tensor) -> int:
    """Bytes a kernel touches in ``t``: the elements its strides address (a stride-0, broadcast
    dimension counts once) times the item size."""
    if t.numel() == 0:
        return 0
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride:
            n *= size
    return n * t.element_size()


def _tensors(value, out: list) -> list:
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors(v, out)
    return out


def _key(t: torch.Tensor) -> tuple:
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype


def _distinct(tensors) -> dict:
    return {_key(t): t for t in tensors}


def _argument(args: tuple, kwargs: dict, position: int, name: str):
    return args[position] if position < len(args) else kwargs.get(name)


def trace_op(func, args: tuple, kwargs: dict, result) -> TraceOp:
    """The ``TraceOp`` of one call of ``func`` (see the module docstring for its bytes)."""
    c = classify(func)
    host = HOST_CLASS[c.kind]
    if c.kind == VIEW:
        return TraceOp(c.name, str(func), VIEW, host)
    mutated = [(_argument(args, kwargs, i, n), only) for i, n, only in c.mutated]
    mutated = [(t, only) for t, only in mutated if isinstance(t, torch.Tensor)]
    inputs = _tensors(args, _tensors(kwargs, []))
    if c.kind == "scatter" and mutated:
        return _scatter_in_place(c, func, host, mutated[0][0], inputs, args, kwargs)
    skip = {_key(t) for t, only in mutated if only}
    reads = {k: t for k, t in _distinct(inputs).items() if k not in skip}
    written = _tensors(result, [])
    read = sum(map(footprint, reads.values())) if c.kind != "index" else _gathered(reads.values(), written)
    writes = _distinct(written + [t for t, _ in mutated])
    return TraceOp(c.name, str(func), c.kind, host, float(read), float(sum(map(footprint, writes.values()))))


def _gathered(reads, results: list) -> int:
    """Bytes a gather (index_select, gather, index, embedding) reads: its indices whole, and of each
    tensor it picks from the elements it picks (as many as its output holds), at most the whole."""
    picked = sum(r.numel() for r in results)
    return sum(footprint(t) if not (t.is_floating_point() or t.is_complex())
               else min(footprint(t), picked * t.element_size()) for t in reads)


def _scatter_in_place(c: OpClass, func, host: str, dest, inputs: list, args: tuple, kwargs: dict) -> TraceOp:
    """An in-place scatter: it writes as many entries as its source (its last tensor argument, or
    one per index where it scatters a scalar) and reads source and indices, not the destination."""
    key = _key(dest)
    others = [t for t in inputs if _key(t) != key]
    src = others[-1] if others else None
    if src is None:
        written = 0
    elif src.is_floating_point() or src.is_complex():
        written = footprint(src)
    else:  # a scalar value scattered at each index
        written = src.numel() * dest.element_size()
    read = sum(map(footprint, _distinct(others).values()))
    position = next((i for i, a in enumerate(func._schema.arguments) if a.name == "accumulate"), None)
    accumulate = c.name in ACCUMULATING or (
        position is not None and bool(_argument(args, kwargs, position, "accumulate")))
    return TraceOp(c.name, str(func), c.kind, host, float(read + (written if accumulate else 0)), float(written))


class OpRecorder(Recorder):
    """Records a ``TraceOp`` for every aten op run inside it (but those run inside ``paused()``), and
    one of kind ``call`` for every ``nn.Module`` called (a forward pre-hook on all modules)."""

    def __init__(self):
        super().__init__()
        self.ops: list = []
        self.recording = True
        self._hook = None

    def __enter__(self):
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._called)
        return super().__enter__()

    def __exit__(self, *exc):
        self._hook.remove()
        return super().__exit__(*exc)

    def _called(self, module, _inputs) -> None:
        if self.recording:
            self.ops.append(TraceOp(type(module).__name__, "module", CALL, CALL))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.recording:
            self.ops.append(trace_op(func, args, kwargs, result))
        return result

    @contextlib.contextmanager
    def paused(self):
        """Ops run inside are not recorded."""
        self.recording = False
        try:
            yield
        finally:
            self.recording = True


# -- running a layer -------------------------------------------------------------------------

def trace_call(fn: Callable) -> list:
    """The ``TraceOp``s of everything ``fn()`` runs."""
    with OpRecorder() as rec:
        fn()
    return rec.ops


def trace_module(module, inputs: tuple, train: bool, warmup: bool = True) -> list:
    """The ``TraceOp``s of one call of ``module(*inputs)``: the forward under ``no_grad``, or (``train``)
    forward and backward with a random output gradient. ``warmup``: one untraced call first."""
    if not train:
        with torch.no_grad():
            if warmup:
                module(*inputs)
            return trace_call(lambda: module(*inputs))

    def forward_backward(rec: Optional[OpRecorder]) -> None:
        out = module(*inputs)
        with contextlib.nullcontext() if rec is None else rec.paused():
            grad = torch.randn_like(out)
        out.backward(grad)

    if warmup:
        forward_backward(None)
        _clear_grads(module, inputs)
    with OpRecorder() as rec:
        forward_backward(rec)
    return rec.ops


def _clear_grads(module, inputs: tuple) -> None:
    module.zero_grad(set_to_none=True)
    for t in inputs:
        if isinstance(t, torch.Tensor):
            t.grad = None


def trace_variant(variant: str, shape: Shape, params=None, device="cpu", dtype=None, *, backend: str = "auto",
                  warmup: bool = True) -> Trace:
    """The trace of ``variant``'s module at ``shape`` in its phase (``modules.build_module``'s
    arguments; VariantError where the variant does not apply)."""
    from .modules import build_module

    module, inputs = build_module(variant, shape, params, device, dtype, backend=backend)
    return Trace(variant, shape, trace_module(module, inputs, shape.phase == "train", warmup))
