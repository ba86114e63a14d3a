"""What a graph costs: FLOPs, kernels and the bytes they move, peak live memory, the backward pass.

Bytes: run op by op (unfused), every op reads its inputs from memory and writes its output; run
kernel by kernel (fused), a kernel reads each outside input once and writes only what leaves it.
Peak memory: the largest sum of live activation tensors (layer input, intermediates, gradients;
weights and the KV cache are reported apart), a tensor living from the step that writes it to
the last step that reads it; fused, tensors that never leave a kernel are never live in memory.
"""

from dataclasses import dataclass

from .graph import ACTIVATION_ROLES, Graph, Op
from .tape import is_zero, larger, plus, smaller
from .units import BACKWARD_ELEMENT_FLOPS, INDEX_BYTES

MATMUL_KINDS = ("matmul", "conv")

HELD_ROLES = frozenset(("input", "weight", "buffer", "cache"))  # what a layer holds between its calls
BACKWARD_PREFIX = "grad_"  # ``add_backward`` names every op it appends so
BACKWARD_KERNEL = "bwd:"  # ... and the backward kernel of a fused (attention) kernel so

# What the backward of a non-matmul op reads besides the incoming gradient: its output ("out", which
# autograd saves: SAVED_OUTPUT_VIEWS) or its other inputs ("in").
_SAVES = {"softmax": "out", "exp": "out", "feature_map": "out", "relu": "out", "mul": "in",
          "div": "in", "square_sum": "in", "gather": "in", "max": "in"}


@dataclass(slots=True)
class Kernel:
    """One launch: its ops, FLOPs and the bytes it moves through device memory."""

    name: str
    kind: str  # "matmul" (one matmul), "attention" (fused matmuls + softmax), "vector", "copy"; host only:
    # "view", "call" (a module call), "autograd" (the backward's engine)
    flops: float
    flops_matmul: float
    bytes: float
    ops: tuple
    held: float = 0.0  # bytes it reads of what the layer holds between calls: weights, caches, inputs

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
    # kernel -> [step, ops, outside reads (tensor -> bytes, None: whole), bytes written, flops, matmul flops]
    groups: dict = {}
    step = []  # kernel step of each op
    uses: dict = {}  # tensor -> times an op writes or reads it whole (the bytes moved unfused)
    picked = 0.0  # bytes the gathers read of their sources (unfused)
    i = 0
    for op in ops:
        kname, out = op.kernel, op.out
        k = groups.get(kname)
        if k is None:
            k = groups[kname] = [len(groups), [], {}, 0.0, 0.0, 0.0]
        step.append(k[0])
        k[1].append(op)
        first[out] = i
        uses[out] = uses.get(out, 0) + 1
        outside = k[2]
        for r in op.reads:
            last_read[r] = i
            b = _picked(op, t[r])
            if b is None:
                uses[r] = uses.get(r, 0) + 1
            else:
                picked = plus(picked, b)
            pk = kernel_of.get(r)
            if pk != kname:
                if b is None or r not in outside:
                    outside[r] = b
                elif outside[r] is not None:  # picked from by two gathers of one kernel
                    outside[r] = larger(outside[r], b)
                if pk is not None:
                    leaves.add(r)
        k[4] += op.flops
        if op.macs:
            k[5] += op.flops
        i += 1
    unfused = picked  # summed by tensor: a step per tensor, not per use, for the fast path (``tape``)
    for name, n in uses.items():
        b = t[name].nbytes
        unfused = plus(unfused, b if n == 1 else b * n)
    # written to memory: read by another kernel, a layer output, or never read (a cache write)
    escaping = leaves | outputs | (kernel_of.keys() - last_read.keys())
    for name in escaping:
        groups[kernel_of[name]][3] += t[name].nbytes
    kernels = []
    for name, (_, kops, outside, written, flops, fm) in groups.items():
        if len(kops) == 1:
            kind = kops[0].kind if kops[0].kind in ("matmul", "copy", "view", "call", "autograd") else "vector"
        else:
            kind = _kind(kops, fm)
        held = 0.0
        for r, b in outside.items():
            b = t[r].nbytes if b is None else b
            written += b
            if r not in kernel_of and t[r].role in HELD_ROLES:
                held = plus(held, b)
        kernels.append(Kernel(name, kind, flops, fm, written, tuple(kops), held))
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


def _picked(op: Op, source) -> object:
    """The bytes a gather (``fn`` "gather": index_select, gather, an embedding) reads of ``source``,
    a tensor it picks from: the elements it picks, at most the whole tensor; None where ``op`` reads
    ``source`` whole (any other op, the indices, or a gather's gradient: a scatter)."""
    if op.fn != "gather" or source.role == "index" or op.name.startswith(BACKWARD_PREFIX):
        return None
    return smaller(source.nbytes, op.out_elems * source.itemsize)


def _kind(ops: list, flops_matmul: float) -> str:
    if len(ops) == 1 and ops[0].kind == "matmul":
        return "matmul"
    if flops_matmul and any(op.kind == "softmax" for op in ops):
        return "attention"
    if all(op.kind == "copy" for op in ops):
        return "copy"
    return "vector"


def _peak(delta: list) -> float:
    """The largest running sum of ``delta`` (from 0); a plain 0.0 (a view: nothing starts or ends
    there) changes neither, and is skipped so that the fast path (``tape``) records no step for it."""
    peak = live = 0.0
    for dv in delta:
        if is_zero(dv):
            continue
        live += dv
        peak = larger(live, peak)
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
# Op.backward values whose gradient is passed on (negated for a difference's second input)
_PASSED = ("sub", "sub_alpha", "sum", "sum_kept", "pass")
MASK_BYTES = 1  # a boolean mask: one byte per entry
REDUCE_VIEWS = 2  # a reduction's gradient unsqueezed and expanded back to the input's shape
SAVED_OUTPUT_VIEWS = 2  # detach of a saved output: when the forward saves it, when the backward unpacks it


class _Backward:
    """One backward pass: the gradients not yet summed, recomputed tensors, views owed."""

    def __init__(self, g: Graph):
        self.g, self.t = g, g.tensors
        self.forward = list(g.ops)
        self.fused = {op.kernel for op in self.forward if op.recompute}  # one backward kernel each
        self.grads: dict = {}  # tensor -> its partial gradients
        self.copies: dict = {}  # tensor -> the ops through whose reads its gradient is copied back
        self.recomputed: dict = {}
        self.views_owed = 0  # forward views without a backward (the expands of a batched matmul's inputs)
        self.flowing = True  # whether the last op walked back took a gradient
        self.blocks = _blocks(self.forward)  # kernel -> the ops that write blocks of its one output
        self.block_of = {op.out: k for k, ops in self.blocks.items() for op in ops}
        self.merged: dict = {}  # (fused kernel, input, other input) -> the gradient its matmuls write
        self.kernel_of = {op.out: op.kernel for op in self.forward}
        self.nodes = 0  # autograd nodes the backward runs: forward ops the gradient flows through, leaves

    def run(self) -> None:
        g, t = self.g, self.t
        for out in g.outputs:
            self.grads[out] = [g.input(BACKWARD_PREFIX + out, t[out].elems)]
        g.autograd("autograd", 0)
        engine = g.ops[-1]  # its node count is known at the end
        done = set()
        for op in reversed(self.forward):
            fused = op.kernel in self.fused
            kernel = BACKWARD_KERNEL + op.kernel if fused else None
            if fused and op.kernel not in done:
                done.add(op.kernel)
                self._recompute(op.kernel, kernel)
            if op.kind == "view":
                self._mirror(op)
                continue
            if op.kind == "call":  # the backward calls no module
                continue
            if op.out in self.block_of:
                self.nodes += 1
                self._block(op)
                continue
            gout = self._gradient(op.out, op.part, kernel)
            self.flowing = gout is not None
            if gout is None:
                continue
            self.nodes += 1
            if op.kind in MATMUL_KINDS:
                self._matmul(op, gout, kernel)
            else:
                self._vector(op, gout, kernel)
        self.nodes += len(self.grads)  # the leaves' AccumulateGrad
        self._leaves()
        engine.elems = float(self.nodes)

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
        for via in self.copies.pop(name, ()):
            copy = f"grad_{name}@{via}.copy"
            if role == "wgrad":  # AccumulateGrad's clone into the weight's layout: an empty tensor, then copy_
                total = self._op(copy + ".empty", "fill", "other", (total,), tensor.elems, None, fn="copy", role=role)
            total = self._op(copy, "copy", "other", (total,), tensor.elems, None, fn="copy", role=role)
        return total

    def _give(self, op: Op, i: int, grad: str) -> None:
        """``grad`` flows to ``op``'s read ``i``; where it must be copied back into its tensor's layout
        (``Op.grad_copy``), the copy is made as the gradient is used (``_gradient``), as autograd's
        reshape in the backward of the op that reads it."""
        x = op.reads[i]
        if i in op.grad_copy:
            self.copies.setdefault(x, []).append(op.name)
        self.grads.setdefault(x, []).append(grad)

    def _leaves(self) -> None:
        """The layer input and the weights: partials summed, then one ``detach`` each (AccumulateGrad)."""
        for name in list(self.grads):
            self._gradient(name, "other", None)
            self.g.views(f"grad_{name}.accumulate", 1, "other")

    def _op(self, name, kind, part, reads, out_elems, kernel, *, fn=None, flops=0.0, elems=None, mm=None,
            macs=0.0, fraction=1.0, role="act", itemsize=None) -> str:
        self.g._add(name, out_elems, role, itemsize)
        self.g.ops.append(Op(name, kind, part, flops, macs, tuple(reads), name, kernel or name, out_elems, mm,
                             fn, False, fraction, out_elems if elems is None else elems))
        return name

    # -- views -----------------------------------------------------------------------------
    def _mirror(self, op: Op) -> None:
        """The backward of a group of views: as many views, where the gradient flows into the op after
        them, less the views a batched matmul owes (their expands have no backward); none for a group
        whose backward is no view (``Op.backward`` "none")."""
        if not self.flowing or op.backward == "none":
            return
        count = int(op.elems) - self.views_owed
        self.views_owed = max(0, -count)
        self.nodes += max(0, count)
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
        """Two matmuls, one per input that takes a gradient (a convolution: one kernel computing both,
        ``convolution_backward``). A batched torch.matmul runs bmm: each gradient transposes the other
        input, and that input's ``expand`` (in the forward views) has no backward, so the views mirror
        the forward's; an input without a gradient owes its two views. With a weight (2-D) as an
        input, torch runs one mm (``_folded``), unless both are batched (``Op.backward`` "bmm")."""
        t = self.t
        left = t[op.reads[0]].role in ("weight", "buffer")
        folded = op.kind == "matmul" and op.backward != "bmm" and (
            left or op.mm[0] == 1 and t[op.reads[1]].role in ("weight", "buffer"))
        if folded and kernel is None:
            gout = self._folded(op, gout, left)
        if op.kind == "conv" and kernel is None:  # convolution_backward: both gradients in one kernel
            kernel = BACKWARD_PREFIX + op.name
        saved = self.recomputed.get
        grads = 0
        for i, x in enumerate(op.reads):
            role = t[x].role
            if role not in DIFFERENTIABLE:
                continue
            grads += 1
            other = op.reads[1 - i]
            # two products of one fused kernel with the same inputs (channels of one output) write one
            # gradient of each input
            key = (kernel, x, other)
            merged = kernel is not None and key in self.merged
            gname = self._op(f"grad_{x}@{op.name}", op.kind, op.part, (gout, saved(other, other)),
                             0.0 if merged else t[x].elems, kernel, flops=op.flops, macs=op.macs, mm=op.mm,
                             fraction=op.fraction, role=_grad_role(t[x]), elems=0.0)
            if merged:
                continue
            if kernel is not None:
                self.merged[key] = gname
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
        gradient), negated (the second input of a difference; times alpha: two kernels), summed where
        the input was broadcast; a max's (``_max_gradient``), a divisor's (``_divisor_gradient``); else
        ``_KERNELS`` of its fn (one kernel by default) reading what the fn saves (an input read twice,
        x * x, takes two gradients, each reading the other read)."""
        t, fn, x = self.t, op.fn, op.reads[i]
        elems = t[x].elems
        gname = f"grad_{x}@{op.name}" + (f"#{i}" if op.reads.count(x) > 1 else "")
        role = _grad_role(t[x])
        if kernel is None and fn == "copy":
            self._give(op, i, self._copy_gradient(op, i, gout))
            return
        if kernel is None and (fn == "add" or op.backward in _PASSED):
            if op.backward in ("sum", "sum_kept"):  # the gradient expanded (unsqueezed first, unless kept)
                self._views(gname + ".expand", REDUCE_VIEWS if op.backward == "sum" else 1, op.part)
            else:
                if i > 0 and op.backward in ("sub", "sub_alpha"):
                    gout = self._negated(gname, gout, op.part, op.backward == "sub_alpha", role)
                if elems < t[op.out].elems:  # broadcast: summed over the dimensions it was expanded along
                    gout = self._op(gname, "reduction", op.part, (gout,), elems, None, fn="mean",
                                    elems=t[gout].elems, role=role)
            self._give(op, i, gout)
            return
        if kernel is None and fn == "max":
            self._give(op, i, self._max_gradient(op, gname, gout, role))
            return
        if kernel is None and fn == "div" and i == 1:
            self._give(op, i, self._divisor_gradient(op, gname, gout, role))
            return
        if kernel is None and fn == "gather" and x in self.block_of:
            self._gather_blocks(op, i, gout)
            return
        what = _SAVES.get(fn)
        saved = self.recomputed.get
        others = tuple(saved(r, r) for j, r in enumerate(op.reads)
                       if j != i and (what == "in" or t[r].role not in DIFFERENTIABLE))
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

    # -- blocks of one tensor ------------------------------------------------------------------
    def _whole(self, kernel: str) -> str:
        """The tensor ``kernel`` writes in blocks, as one (a view of them all)."""
        name = kernel + ".whole"
        if name not in self.t:
            self.g._add(name, sum(self.t[o.out].elems for o in self.blocks[kernel]), "view")
        return name

    def _block(self, op: Op) -> None:
        """A block of a tensor one kernel writes in blocks (a cat listed by the rows later kernels
        read): its gradient written into one of the whole tensor's size (``slice_backward``: a copy),
        the blocks' summed; walked back to its first block, the whole's gradient flows to the reads,
        a slice (a view) to each, one slice to the reads one kernel wrote (channels of one output),
        copied where a block's ``Op.grad_copy`` names a read of them."""
        kernel = self.block_of[op.out]
        whole = self._whole(kernel)
        gout = self._gradient(op.out, op.part, None)
        if gout is not None:
            grad = self._op(f"grad_{op.out}.whole", "copy", op.part, (gout,), self.t[whole].elems, None, fn="copy")
            self.grads.setdefault(whole, []).append(grad)
        if op is not self.blocks[kernel][0]:
            return
        gout = self._gradient(whole, op.part, None)
        self.flowing = gout is not None
        if gout is None:
            return
        copied = {i for o in self.blocks[kernel] for i in o.grad_copy}
        groups: dict = {}  # the reads one kernel wrote (channels of one output) take one slice
        for i, x in enumerate(op.reads):
            if self.t[x].role in DIFFERENTIABLE:
                groups.setdefault(self.kernel_of.get(x, x), []).append(i)
        for group in groups.values():
            name = f"grad_{op.reads[group[0]]}@{kernel}"
            size = sum(self.t[op.reads[i]].elems for i in group)
            self._views(name + ".slice", 1, op.part)
            grad = self._slice(name, size)
            if copied & set(group):  # copied into the layout the op that reads it needs
                grad = self._op(name + ".copy", "copy", "other", (grad,), size, None, fn="copy")
            for i in group:
                self.grads.setdefault(op.reads[i], []).append(grad)

    def _gather_blocks(self, op: Op, i: int, gout: str) -> None:
        """A gather from a tensor listed in blocks: its gradient, zeros of the whole tensor's size
        with the gradient scattered into them, flows to the whole (once, for the first block read)."""
        x = op.reads[i]
        kernel = self.block_of[x]
        if any(self.block_of.get(r) == kernel for r in op.reads[:i]):
            return
        whole = self._whole(kernel)
        size = self.t[whole].elems
        index = tuple(r for r in op.reads if self.t[r].role == "index")
        name = f"grad_{kernel}@{op.name}"
        zeros = self._op(name + ".zeros", "fill", op.part, (gout,), size, None, fn="copy")
        grad = self._op(name, "gather", op.part, (zeros, gout) + index, size, None, fn="gather",
                        flops=BACKWARD_ELEMENT_FLOPS["gather"] * op.elems, elems=op.elems)
        self.grads.setdefault(whole, []).append(grad)

    def _slice(self, gname: str, elems: float) -> str:
        """A slice of a gradient (``elems`` of its elements): a view, read by the ops after it, with no
        memory of its own (role ``view``: not an activation)."""
        return self.g._add(gname + ".part", elems, "view")

    def _negated(self, gname: str, gout: str, part: str, alpha: bool, role: str) -> str:
        """-grad (``neg``) of a difference's second input; torch.sub(a, b, alpha) multiplies it by alpha
        too (a second kernel)."""
        size = self.t[gout].elems
        neg = self._op(gname + ".neg", "elementwise", part, (gout,), size, None, fn="scale",
                       flops=BACKWARD_ELEMENT_FLOPS["scale"] * size, role=role)
        if not alpha:
            return neg
        return self._op(gname + ".alpha", "elementwise", part, (neg,), size, None, fn="scale",
                        flops=BACKWARD_ELEMENT_FLOPS["scale"] * size, role=role)

    def _max_gradient(self, op: Op, gname: str, gout: str, role: str) -> str:
        """amax's gradient, shared evenly by the entries equal to the max (derivatives.yaml:
        ``scale_grad_by_count(grad, result == self)``, the max kept as a dimension): the saved max
        (two detaches), the mask x == max (booleans), its count per output (int64), the gradient
        divided by the count, times the mask."""
        t, x = self.t, op.reads[0]
        size, out = t[x].elems, t[op.out].elems
        part = op.part
        self._views(gname + ".saved", SAVED_OUTPUT_VIEWS, part)
        mask = self._op(gname + ".eq", "elementwise", part, (x, op.out), size, None, fn="mask", itemsize=MASK_BYTES)
        count = self._op(gname + ".count", "reduction", part, (mask,), out, None, fn="mean", elems=size,
                         itemsize=INDEX_BYTES)
        share = self._op(gname + ".share", "elementwise", part, (gout, count), out, None, fn="div")
        return self._op(gname, "elementwise", part, (share, mask), size, None, fn="mul",
                        flops=BACKWARD_ELEMENT_FLOPS["max"] * op.elems, role=role)

    def _divisor_gradient(self, op: Op, gname: str, gout: str, role: str) -> str:
        """The gradient of b in a / b, -grad * ((a / b) / b) (``div_tensor_other_backward``): two
        divisions, a negation, a product; summed where b was broadcast."""
        t = self.t
        a, b = (self.recomputed.get(r, r) for r in op.reads)
        size, part = t[op.out].elems, op.part
        q = self._op(gname + ".ratio", "elementwise", part, (a, b), size, None, fn="div")
        q = self._op(gname + ".ratio2", "elementwise", part, (q, b), size, None, fn="div")
        neg = self._op(gname + ".neg", "elementwise", part, (gout,), size, None, fn="scale")
        last = t[b].elems == size
        grad = self._op(gname if last else gname + ".full", "elementwise", part, (neg, q), size, None, fn="mul",
                        flops=BACKWARD_ELEMENT_FLOPS["div"] * op.elems, role=role)
        if last:
            return grad
        return self._op(gname, "reduction", part, (grad,), t[b].elems, None, fn="mean", elems=size, role=role)

    def _copy_gradient(self, op: Op, i: int, gout: str) -> str:
        """A copy's backward: the gradient itself (clone, contiguous), a slice of it (cat: a view, summed
        where the input was broadcast into a larger slice, the smallest input), the padded gradient
        cut back (``constant_pad_nd``: a copy), or, where the copy read a slice of its input, the
        gradient written into a tensor of the input's size (``slice_backward``: a copy).
        A cat of slices of one tensor (every read the same): each slice's gradient is written into a
        tensor of the input's size (``slice_backward``: a copy), the slices' reads, together the whole
        gradient, counted on the first."""
        t, x = self.t, op.reads[i]
        elems, out = t[x].elems, t[op.out].elems
        gname = f"grad_{x}@{op.name}" + (f"#{i}" if op.reads.count(x) > 1 else "")
        role = _grad_role(t[x])
        if len(op.reads) > 1:
            self._views(gname + ".slice", 1, op.part)
            if op.reads.count(x) == len(op.reads):
                return self._op(gname, "copy", op.part, (gout,) if i == 0 else (), elems, None, fn="copy", role=role)
            total = sum(t[r].elems for r in op.reads)
            if total == out or any(t[r].elems < elems for r in op.reads):  # not the broadcast one
                return self._slice(gname, elems)
            share = out - (total - elems)
            return self._op(gname, "reduction", op.part, (self._slice(gname, share),), elems, None, fn="mean",
                            elems=share, role=role)
        if elems != out:  # cut back from a padded gradient, or a slice's written into its input's size
            return self._op(gname, "copy", op.part, (gout,), elems, None, fn="copy", role=role)
        return gout


def _blocks(ops: list) -> dict:
    """kernel -> its ops, where a kernel writes one tensor in blocks: several copies of the same
    inputs (a cat whose output is listed by the rows, or the channels, that later kernels read)."""
    by_kernel: dict = {}
    for op in ops:
        if op.kind == "copy":
            by_kernel.setdefault(op.kernel, []).append(op)
    return {k: b for k, b in by_kernel.items() if len(b) > 1 and all(o.reads == b[0].reads for o in b)}


def _grad_role(tensor) -> str:
    """A weight's gradient is reported apart from activations (``wgrad``)."""
    return "wgrad" if tensor.role == "weight" else "act"


def _recompute(g: Graph, f: Op, kernel: str, recomputed: dict) -> str:
    name = f.out + ".recomputed"
    g._add(name, g.tensors[f.out].elems, "act")
    reads = tuple(recomputed.get(r, r) for r in f.reads)
    g.ops.append(Op(name, f.kind, f.part, f.flops, f.macs, reads, name, kernel, f.out_elems, f.mm,
                    f.fn, False, f.fraction, f.elems, group=f.group))
    return name
