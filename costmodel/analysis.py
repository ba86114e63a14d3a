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
    kind: str  # "matmul" (one matmul), "attention" (fused matmuls + softmax), "vector", "copy", "view" (host only)
    flops: float
    flops_matmul: float
    bytes: float
    ops: tuple

    @property
    def mm(self):
        """(batch, m, k, n) of a single-matmul kernel."""
        return self.ops[0].mm if self.kind == "matmul" else None


@dataclass(slots=True)
class Analysis:
    kernels: list
    bytes_unfused: float
    peak_unfused: float
    peak_fused: float


def analyse(g: Graph) -> Analysis:
    """Kernels with their fused bytes, unfused bytes and both peaks, in one pass over the ops."""
    t, ops, outputs = g.tensors, g.ops, set(g.outputs)
    kernel_of = {op.out: op.kernel for op in ops}
    first: dict = {}  # op index that writes each tensor
    last_read: dict = {}
    leaves: set = set()  # read by an op of another kernel than the one that wrote it
    groups: dict = {}  # kernel -> [step, ops, outside reads, bytes written, flops, matmul flops]
    step = []  # kernel step of each op
    unfused = 0.0
    i = 0
    for op in ops:
        kname, out = op.kernel, op.out
        k = groups.get(kname)
        if k is None:
            k = groups[kname] = [len(groups), [], set(), 0.0, 0.0, 0.0]
        step.append(k[0])
        k[1].append(op)
        first[out] = i
        unfused += t[out].nbytes
        outside = k[2]
        for r in op.reads:
            unfused += t[r].nbytes
            last_read[r] = i
            pk = kernel_of.get(r)
            if pk != kname:
                outside.add(r)
                if pk is not None:
                    leaves.add(r)
        k[4] += op.flops
        if op.macs:
            k[5] += op.flops
        i += 1
    # written to memory: read by another kernel, a layer output, or never read (a cache write)
    escaping = leaves | outputs | (kernel_of.keys() - last_read.keys())
    for name in escaping:
        groups[kernel_of[name]][3] += t[name].nbytes
    kernels = []
    for name, (_, kops, outside, written, flops, fm) in groups.items():
        if len(kops) == 1:
            kind = kops[0].kind if kops[0].kind in ("matmul", "copy", "view") else "vector"
        else:
            kind = _kind(kops, fm)
        for r in outside:
            written += t[r].nbytes
        kernels.append(Kernel(name, kind, flops, fm, written, tuple(kops)))
    # peaks: a tensor is live from the step that writes it to the last step that reads it
    n = i
    d_unfused = [0.0] * (n + 1)
    d_fused = [0.0] * (len(groups) + 1)
    for name, tensor in t.items():
        if tensor.role not in ACTIVATION_ROLES:
            continue
        b = tensor.nbytes
        i = first.get(name, 0)
        j = n - 1 if name in outputs else last_read.get(name, i)
        d_unfused[i] += b
        d_unfused[j + 1] -= b
        if name in first and name not in escaping:
            continue
        d_fused[step[i]] += b
        d_fused[step[j] + 1] -= b
    return Analysis(kernels, unfused, _peak(d_unfused), _peak(d_fused))


def _kind(ops: list, flops_matmul: float) -> str:
    if len(ops) == 1 and ops[0].kind == "matmul":
        return "matmul"
    if flops_matmul and any(op.kind == "softmax" for op in ops):
        return "attention"
    if all(op.kind == "copy" for op in ops):
        return "copy"
    return "vector"


def _peak(delta: list) -> float:
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
        if op.kind == "view":  # autograd's backward of a view is a view of the gradient
            g.views(f"grad_{op.name}", int(op.elems), op.part)
            continue
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


