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

# What the backward of a non-matmul op reads besides the incoming gradient: its output ("out", which
# autograd saves: SAVED_OUTPUT_VIEWS) or its other inputs ("in").
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
    """Append the backward pass (reverse-mode, op by op, as autograd runs it) to a forward graph, in place.

    FLOPs: each matmul (m x k @ k x n) has two backward matmuls of its size, one per input that needs a
    gradient; a non-matmul op costs BACKWARD_ELEMENT_FLOPS per element. A fused kernel's backward is
    one kernel that first recomputes the ops marked ``recompute`` instead of reading them from memory
    (FlashAttention-2: QK^T and softmax, so 5 matmuls for the 2 of its forward, 2.5x) and reads what
    its forward wrote (the output, the rows' log-sum-exp) besides the inputs and the incoming gradient.

    Kernels and host-only ops follow autograd's formulas (PyTorch's ``tools/autograd/derivatives.yaml``):
    a gradient that reaches a tensor from several ops is summed, one ``add`` per extra partial; a leaf
    (the layer input, each weight) takes its gradient with one ``detach`` (AccumulateGrad); an op that
    saves its output for its backward (softmax, exp, relu, a fused attention kernel) detaches it once
    when saving and once when unpacking; a view's backward is a view, mirrored where the gradient flows
    (a group of views belongs to the op after it); a gradient written in an op's layout is copied
    back where its tensor was read through a view that cannot take it back (``Op.grad_copy``). The
    rules of each op kind are in ``_Backward``.
    """
    _Backward(g).run()


DIFFERENTIABLE = ("input", "act", "weight")  # roles of the tensors that take a gradient
# Backward kernels of a non-matmul op per input, by fn: (kind, fn) of each, the last one carrying the FLOPs.
_KERNELS = {"cumsum": (("copy", "copy"), ("scan", "cumsum"), ("copy", "copy")),  # flip, cumsum, flip
            "gather": (("fill", "copy"), ("gather", "gather")),  # zeros, then scatter(_add) of the gradient
            "mean": (("elementwise", "div"),)}
_BACKWARD_KIND = {"scan": "scan", "softmax": "softmax", "gather": "gather"}
REDUCE_VIEWS = 2  # a reduction's gradient unsqueezed and expanded back to the input's shape
SAVED_OUTPUT_VIEWS = 2  # detach of a saved output: when the forward saves it, when the backward unpacks it


class _Backward:
    """One backward pass: the gradients not yet summed, recomputed tensors, views owed."""

    def __init__(self, g: Graph):
        self.g, self.t = g, g.tensors
        self.forward = list(g.ops)
        self.fused = {op.kernel for op in self.forward if op.recompute}  # one backward kernel each
        self.grads: dict = {}  # tensor -> its partial gradients
        self.recomputed: dict = {}
        self.views_owed = 0  # forward views without a backward (the expands of a batched matmul's inputs)
        self.flowing = True  # whether the last op walked back took a gradient

    def run(self) -> None:
        g, t = self.g, self.t
        for out in g.outputs:
            self.grads[out] = [g.input("grad_" + out, t[out].elems)]
        done = set()
        for op in reversed(self.forward):
            fused = op.kernel in self.fused
            kernel = "bwd:" + op.kernel if fused else None
            if fused and op.kernel not in done:
                done.add(op.kernel)
                self._recompute(op.kernel, kernel)
            if op.kind == "view":
                self._mirror(op)
                continue
            gout = self._gradient(op.out, op.part, kernel)
            self.flowing = gout is not None
            if gout is None:
                continue
            if op.kind in MATMUL_KINDS:
                self._matmul(op, gout, kernel)
            else:
                self._vector(op, gout, kernel)
        self._leaves()

    # -- gradients -------------------------------------------------------------------------
    def _gradient(self, name: str, part: str, kernel):
        """The gradient of ``name``: its partials summed one ``add`` at a time, in ``kernel`` (a fused
        backward) or one kernel each; None where no gradient reaches it. A weight's sums are counted
        0 FLOPs (a weight-sized add, the same at any batch: FLOP totals stay proportional to it)."""
        partial = self.grads.pop(name, None)
        if not partial:
            return None
        total = partial[0]
        tensor = self.t[name]
        role = _grad_role(tensor)
        for i, p in enumerate(partial[1:]):
            total = self._op(f"grad_{name}.sum{i}", "elementwise", part, (total, p), tensor.elems, kernel,
                             fn="add", flops=0.0 if role == "wgrad" else tensor.elems, role=role)
        return total

    def _give(self, op: Op, i: int, grad: str) -> None:
        """``grad`` flows to ``op``'s read ``i``, copied back into its tensor's layout where it must be."""
        x = op.reads[i]
        if i in op.grad_copy:
            grad = self._op(f"grad_{x}@{op.name}.copy", "copy", "other", (grad,), self.t[x].elems, None, fn="copy",
                            role=_grad_role(self.t[x]))
        self.grads.setdefault(x, []).append(grad)

    def _leaves(self) -> None:
        """The layer input and the weights: partials summed, then one ``detach`` each (AccumulateGrad)."""
        for name in list(self.grads):
            self._gradient(name, "other", None)
            self.g.views(f"grad_{name}.accumulate", 1, "other")

    def _op(self, name, kind, part, reads, out_elems, kernel, *, fn=None, flops=0.0, elems=None, mm=None,
            macs=0.0, fraction=1.0, role="act") -> str:
        self.g._add(name, out_elems, role)
        self.g.ops.append(Op(name, kind, part, flops, macs, tuple(reads), name, kernel or name, out_elems, mm,
                             fn, False, fraction, out_elems if elems is None else elems))
        return name

    # -- views -----------------------------------------------------------------------------
    def _mirror(self, op: Op) -> None:
        """The backward of a group of views: as many views, where the gradient flows into the op after
        them, less the views a batched matmul owes (their expands have no backward)."""
        if not self.flowing:
            return
        count = int(op.elems) - self.views_owed
        self.views_owed = max(0, -count)
        self._views(f"grad_{op.name}", count, op.part)

    def _views(self, name: str, count: int, part: str) -> None:
        if count > 0:
            self.g.views(name, count, part)

    # -- fused kernels ---------------------------------------------------------------------
    def _recompute(self, kernel: str, bk: str) -> None:
        """A fused kernel's backward recomputes its ``recompute`` ops and reads what the forward kernel
        wrote to memory (read by another kernel, a layer output, or never read: the log-sum-exp)."""
        ops = [f for f in self.forward if f.kernel == kernel]
        for f in ops:
            if f.recompute:
                self.recomputed[f.out] = _recompute(self.g, f, bk, self.recomputed)
        inside = {f.out for f in ops}
        read_inside = {r for f in ops for r in f.reads if r in inside}
        written = [f.out for f in ops if f.out not in read_inside or self._read_outside(f.out, kernel)]
        first = next(f for f in self.g.ops if f.kernel == bk)
        first.reads += tuple(w for w in written if w not in first.reads)
        self._views(f"grad_{kernel}.saved", SAVED_OUTPUT_VIEWS, ops[0].part)
        self._whole_output([f for f in ops if f.kind in MATMUL_KINDS and f.out in written])

    def _whole_output(self, outputs: list) -> None:
        """The outputs of a fused kernel are slices of one tensor: where only some take a gradient, the
        gradient of the whole is made (``slice_backward``: a copy, zeros in the other slices)."""
        given = [f for f in outputs if f.out in self.grads]
        if not given or len(given) == len(outputs):
            return
        f = given[0]
        whole = sum(self.t[o.out].elems for o in outputs)
        grad = self._gradient(f.out, f.part, None)
        self.grads[f.out] = [self._op(f"grad_{f.out}.whole", "copy", f.part, (grad,), whole, None, fn="copy")]

    def _read_outside(self, name: str, kernel: str) -> bool:
        return name in self.g.outputs or any(name in f.reads for f in self.forward if f.kernel != kernel)

    # -- op rules --------------------------------------------------------------------------
    def _matmul(self, op: Op, gout: str, kernel) -> None:
        """Two matmuls, one per input that takes a gradient. A batched torch.matmul runs bmm: each
        gradient transposes the other input, and that input's ``expand`` (in the forward views) has no
        backward, so the views mirror the forward's; an input without a gradient owes its two views.
        With a weight (2-D) as an input, torch runs one mm (``_folded``)."""
        t = self.t
        left = t[op.reads[0]].role in ("weight", "buffer")
        folded = op.kind == "matmul" and (left or op.mm[0] == 1 and t[op.reads[1]].role in ("weight", "buffer"))
        if folded and kernel is None:
            gout = self._folded(op, gout, left)
        saved = self.recomputed.get
        grads = 0
        for i, x in enumerate(op.reads):
            role = t[x].role
            if role not in DIFFERENTIABLE:
                continue
            grads += 1
            other = op.reads[1 - i]
            gname = self._op(f"grad_{x}@{op.name}", op.kind, op.part, (gout, saved(other, other)), t[x].elems,
                             kernel, flops=op.flops, macs=op.macs, mm=op.mm, fraction=op.fraction,
                             role=_grad_role(t[x]), elems=0.0)
            if folded:
                column_major = role == "weight" or left and op.mm[0] == 1
                self._views(gname + ".t", 2 if column_major else 1, op.part)
                if left and op.mm[0] > 1 and role != "weight":  # x^T's gradient, reshaped back to x
                    gname = self._op(gname + ".copy", "copy", "other", (gname,), t[x].elems, None, fn="copy")
            self._give(op, i, gname)
        if not folded and kernel is None:
            self.views_owed += 2 * (2 - grads)

    def _folded(self, op: Op, gout: str, left: bool) -> str:
        """One mm for a (batched) activation and a weight: F.linear, or torch.matmul of a weight on the
        left, which ``at::matmul`` folds wherever the weight requires grad. Each gradient transposes the
        other input (``t``); that of an input read column-major (the weight's W^T; x^T, folded, of one
        sequence) transposes its result too (``mm_mat2_backward``, ``mm_mat1_backward``). A weight on
        the left: torch.matmul computes (x^T W^T)^T, so in grad mode its forward copies x^T folded where
        it spans several sequences and makes the result contiguous (copies the no-grad graph lacks; one
        of its views, a transpose, has no backward); the backward reshapes the gradient into the mm's
        layout (a copy where several sequences) and x^T's gradient back to x's (the same)."""
        t = self.t
        if not left:
            return gout
        batched = op.mm[0] > 1
        act = op.reads[1]
        if batched:
            self._op(op.name + ".folded", "copy", op.part, (act,), t[act].elems, None, fn="copy")
        self._op(op.out + ".contiguous", "copy", op.part, (op.out,), t[op.out].elems, None, fn="copy")
        self.views_owed += 1
        if batched:
            gout = self._op(f"grad_{op.out}.folded", "copy", op.part, (gout,), t[op.out].elems, None, fn="copy")
        return gout

    def _vector(self, op: Op, gout: str, kernel) -> None:
        """A non-matmul op's gradient, per input that takes one (``_input_gradient``); an op whose
        backward reads its output saves it (two detaches)."""
        got = False
        for i, x in enumerate(op.reads):
            if self.t[x].role in DIFFERENTIABLE:
                got = True
                self._input_gradient(op, i, gout, kernel)
        if got and _SAVES.get(op.fn) == "out" and kernel is None:
            self._views(f"grad_{op.name}.saved", SAVED_OUTPUT_VIEWS, op.part)

    def _input_gradient(self, op: Op, i: int, gout: str, kernel) -> None:
        """One input's gradient: passed on (add, copy, the first input of a difference, a sum's expanded
        gradient), negated (the second input of a difference), summed where the input was broadcast,
        else ``_KERNELS`` of its fn (one kernel by default) reading what the fn saves."""
        t, fn, x = self.t, op.fn, op.reads[i]
        elems = t[x].elems
        gname = f"grad_{x}@{op.name}"
        role = _grad_role(t[x])
        if kernel is None and fn == "copy":
            self._give(op, i, self._copy_gradient(op, i, gout))
            return
        if kernel is None and (fn == "add" or op.backward in ("sub", "sum")):
            if op.backward == "sum":
                self._views(gname + ".expand", REDUCE_VIEWS, op.part)
            elif elems < t[op.out].elems:  # broadcast: summed over the dimensions it was expanded along
                gout = self._op(gname, "reduction", op.part, (gout,), elems, None, fn="mean", elems=t[gout].elems,
                                role=role)
            elif op.backward == "sub" and i > 0:
                gout = self._op(gname, "elementwise", op.part, (gout,), elems, None, fn="scale",
                                flops=BACKWARD_ELEMENT_FLOPS["scale"] * elems, role=role)
            self._give(op, i, gout)
            return
        what = _SAVES.get(fn)
        saved = self.recomputed.get
        others = tuple(saved(r, r) for r in op.reads if r != x and (what == "in" or t[r].role not in DIFFERENTIABLE))
        reads = (gout,) + ((saved(op.out, op.out),) if what == "out" else others)
        flops = BACKWARD_ELEMENT_FLOPS[fn] * op.elems
        steps = ((op.kind, fn),) if kernel is not None else _KERNELS.get(
            fn, ((_BACKWARD_KIND.get(op.kind, "elementwise"), fn),))
        broadcast = kernel is None and op.kind == "elementwise" and elems < t[op.out].elems
        size = t[op.out].elems if broadcast else elems
        for j, (kind, step_fn) in enumerate(steps):
            last = j == len(steps) - 1
            name = f"{gname}.{j}" if not last or broadcast else gname
            if kind == "fill":  # zeros the size of the input (torch reads the gradient for its options)
                reads = (self._op(name, "fill", op.part, (gout,), size, None, fn=step_fn, role=role),) + reads
                continue
            reads = (self._op(name, kind, op.part, reads, size, kernel, fn=step_fn, flops=flops if last else 0.0,
                              elems=op.elems if last else size, role=role),)
        if broadcast:  # summed over the dimensions the input was expanded along
            reads = (self._op(gname, "reduction", op.part, reads, elems, None, fn="mean", elems=size, role=role),)
        self._give(op, i, reads[0])
        if kernel is None and fn == "mean":
            self._views(gname + ".expand", REDUCE_VIEWS, op.part)

    def _copy_gradient(self, op: Op, i: int, gout: str) -> str:
        """A copy's backward: the gradient itself (clone, contiguous), a slice of it (cat: a view, summed
        where the input was broadcast into a larger slice, its ``expand`` then having no view in the
        backward), or the padded gradient cut back (``constant_pad_nd``: a copy)."""
        t, x = self.t, op.reads[i]
        elems, out = t[x].elems, t[op.out].elems
        gname = f"grad_{x}@{op.name}"
        role = _grad_role(t[x])
        if len(op.reads) > 1:
            self._views(gname + ".slice", 1, op.part)
            share = out - sum(t[r].elems for j, r in enumerate(op.reads) if j != i)
            if share <= elems:
                return gout
            self.views_owed += 1
            return self._op(gname, "reduction", op.part, (gout,), elems, None, fn="mean", elems=share, role=role)
        if elems < out:
            return self._op(gname, "copy", op.part, (gout,), elems, None, fn="copy", role=role)
        return gout


def _grad_role(tensor) -> str:
    """A weight's gradient is reported apart from activations (``wgrad``)."""
    return "wgrad" if tensor.role == "weight" else "act"


def _recompute(g: Graph, f: Op, kernel: str, recomputed: dict) -> str:
    name = f.out + ".recomputed"
    g._add(name, g.tensors[f.out].elems, "act")
    reads = tuple(recomputed.get(r, r) for r in f.reads)
    g.ops.append(Op(name, f.kind, f.part, f.flops, f.macs, reads, name, kernel, f.out_elems, f.mm,
                    f.fn, False, f.fraction, f.elems))
    return name
