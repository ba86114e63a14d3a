"""What a graph costs: FLOPs, kernels and the bytes they move, peak live memory, the backward pass.

Bytes: run op by op (unfused), every op reads its inputs from memory and writes its output; run
kernel by kernel (fused), a kernel reads each outside input once and writes only what leaves it.
Peak memory: the largest sum of live activation tensors (layer input, intermediates, gradients;
weights and the KV cache are reported apart), a tensor living from the step that writes it to
the last step that reads it; fused, tensors that never leave a kernel are never live in memory.
"""

from dataclasses import dataclass

from .graph import ACTIVATION_ROLES, Graph, Op
from .units import BACKWARD_ELEMENT_FLOPS

MATMUL_KINDS = ("matmul", "conv")

# What the backward of a non-matmul op reads besides the incoming gradient.
_SAVES = {"softmax": "out", "exp": "out", "feature_map": "out", "relu": "out", "mul": "in",
          "div": "in", "square_sum": "in", "gather": "in", "max": "in"}


@dataclass(slots=True)
class Kernel:
    """One launch: its ops, FLOPs and the bytes it moves through device memory."""

    name: str
    kind: str  # "matmul" (one matmul), "attention" (fused matmuls + softmax), "vector", "copy"
    flops: float
    flops_matmul: float
    bytes: float
    ops: tuple

    @property
    def mm(self):
        """(batch, m, k, n) of a single-matmul kernel."""
        return self.ops[0].mm if self.kind == "matmul" else None


def kernels(g: Graph, escaping: set) -> list:
    """The graph's kernels in launch order, each with the bytes it moves (``escaping``: the
    tensors written to memory, from ``escaping_tensors``)."""
    groups: dict = {}
    for op in g.ops:
        groups.setdefault(op.kernel, []).append(op)
    t = g.tensors
    out = []
    for name, ops in groups.items():
        produced = {op.out for op in ops}
        reads = {r for op in ops for r in op.reads if r not in produced}
        nbytes = sum(t[r].nbytes for r in reads) + sum(t[w].nbytes for w in produced if w in escaping)
        flops = fm = 0.0
        for op in ops:
            flops += op.flops
            if op.kind in MATMUL_KINDS:
                fm += op.flops
        if len(ops) == 1 and ops[0].kind == "matmul":
            kind = "matmul"
        elif fm and any(op.kind == "softmax" for op in ops):
            kind = "attention"
        elif all(op.kind == "copy" for op in ops):
            kind = "copy"
        else:
            kind = "vector"
        out.append(Kernel(name, kind, flops, fm, nbytes, tuple(ops)))
    return out


def readers_of(g: Graph) -> dict:
    readers: dict = {}
    for op in g.ops:
        for r in op.reads:
            readers.setdefault(r, []).append(op)
    return readers


def escaping_tensors(g: Graph, readers: dict) -> set:
    """Tensors a fused run writes to memory: read in another kernel, a layer output, or unread."""
    outputs = set(g.outputs)
    return {op.out for op in g.ops
            if op.out in outputs or not readers.get(op.out)
            or any(r.kernel != op.kernel for r in readers[op.out])}


def unfused_bytes(g: Graph) -> float:
    return sum(sum(g.op_bytes(op)) for op in g.ops)


def peak_bytes(g: Graph, readers: dict, escaping: set = None) -> float:
    """Peak of live activation bytes over the ops (unfused) or, given the ``escaping`` tensors,
    over the kernels (fused)."""
    fused = escaping is not None
    step: dict = {}
    n = -1
    last = None
    for i, op in enumerate(g.ops):
        if not fused:
            n = i
        elif op.kernel != last:
            n, last = n + 1, op.kernel
        step[op.name] = n
    outputs = set(g.outputs)
    delta = [0.0] * (n + 2)
    for name, t in g.tensors.items():
        if t.role not in ACTIVATION_ROLES:
            continue
        if name in step:  # produced by an op (op and output share their name)
            if fused and name not in escaping:
                continue
            birth = step[name]
        else:
            birth = 0
        rs = readers.get(name, ())
        death = n if name in outputs else max((step[op.name] for op in rs), default=birth)
        delta[birth] += t.nbytes
        delta[death + 1] -= t.nbytes
    peak = live = 0.0
    for dv in delta:
        live += dv
        if live > peak:
            peak = live
    return peak


def add_backward(g: Graph) -> None:
    """Append the backward pass (reverse-mode, op by op) to a forward graph, in place.

    Each matmul (m x k @ k x n) has two backward matmuls of its size, one per input that needs a
    gradient; non-matmul ops cost BACKWARD_ELEMENT_FLOPS per element. A fused kernel's backward is
    one kernel that first recomputes the ops marked ``recompute`` instead of reading them from
    memory: for FlashAttention-2, QK^T and softmax, so its backward does 5 matmuls of the 2 in
    its forward (2.5x, FlashAttention's convention).
    """
    t = g.tensors
    forward = list(g.ops)
    counts: dict = {}
    for op in forward:
        counts[op.kernel] = counts.get(op.kernel, 0) + 1
    grads: dict = {}
    for out in g.outputs:
        grads[out] = [g.input("grad_" + out, t[out].elems)]
    recomputed: dict = {}
    done = set()
    for op in reversed(forward):
        fused = counts[op.kernel] > 1
        bk = "bwd:" + op.kernel
        if fused and op.kernel not in done:
            done.add(op.kernel)
            for f in forward:
                if f.kernel == op.kernel and f.recompute:
                    recomputed[f.out] = _recompute(g, f, bk, recomputed)
        partial = grads.pop(op.out, None)
        if not partial:
            continue
        gout = partial[0]
        if len(partial) > 1:
            elems = t[gout].elems
            gout = g.elementwise(f"grad_{op.out}.sum", "add", tuple(partial),
                                 elems=elems * (len(partial) - 1), out_elems=elems, part=op.part,
                                 kernel=bk if fused else None)
        saved = lambda name: recomputed.get(name, name)  # noqa: E731
        for i, x in enumerate(op.reads):
            role = t[x].role
            if role not in ("input", "act", "weight"):
                continue
            gname = f"grad_{x}@{op.name}"
            kernel = bk if fused else gname  # an unfused op's backward launches one kernel per gradient
            if op.kind in MATMUL_KINDS:
                other = op.reads[1 - i]
                g._add(gname, t[x].elems, "wgrad" if role == "weight" else "act")
                g.ops.append(Op(gname, op.kind, op.part, op.flops, op.macs, (gout, saved(other)),
                                gname, kernel, t[x].elems, op.mm, None, False, op.fraction))
            else:
                what = _SAVES.get(op.fn)
                extra = (saved(op.out),) if what == "out" else tuple(
                    saved(r) for r in op.reads if r != x) if what == "in" else ()
                g._add(gname, t[x].elems, "act")
                g.ops.append(Op(gname, op.kind, op.part, BACKWARD_ELEMENT_FLOPS[op.fn] * op.elems,
                                0.0, (gout,) + extra, gname, kernel, t[x].elems, None, op.fn, False,
                                1.0, op.elems))
            if role != "weight":
                grads.setdefault(x, []).append(gname)


def _recompute(g: Graph, f: Op, kernel: str, recomputed: dict) -> str:
    name = f.out + ".recomputed"
    g._add(name, g.tensors[f.out].elems, "act")
    reads = tuple(recomputed.get(r, r) for r in f.reads)
    g.ops.append(Op(name, f.kind, f.part, f.flops, f.macs, reads, name, kernel, f.out_elems, f.mm,
                    f.fn, False, f.fraction, f.elems))
    return name


