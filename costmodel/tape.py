"""A computation on numbers, recorded once and replayed on other numbers: the model's fast path.

``trace(fn, inputs)`` runs ``fn`` on ``Sym`` numbers: each carries its value at the inputs given
and the step that made it, recorded on a ``Tape``. ``fn`` runs exactly as on plain numbers (its
values are those of plain Python arithmetic); what it decides from them (a comparison used as a
bool, a number used as an index or formatted into a name) is recorded as a guard, so the tape
holds for every input at which each decision comes out the same. Where a value is chosen by a
comparison and the choice is data, not structure (the larger of compute and memory time), the
code says so with ``choose``, ``larger``, ``smaller`` (and ``log2``), which are plain Python on plain
numbers.

``Tape.program(outputs)`` keeps the steps the outputs and guards need (common steps merged,
constants folded while tracing). ``Program.scalar`` runs them, compiled into one straight-line
Python function, on Python numbers, with Python's exact integers: the same operations in the same
order as the traced code, so the same values. ``Program.vector_hold`` and ``Program.vector``
interpret them on numpy arrays of float64, one lane per input point (the guards first, then the
whole program where they hold): IEEE arithmetic gives the same values wherever every integer step
stays below 2^53 (checked lane by lane); a lane beyond it must be priced by the scalar run.
"""

from __future__ import annotations

import marshal
import math
import operator
import types
from typing import Callable, Optional

EXACT_INT = 2.0**53  # integers below it are exact in float64

_BINARY = {"add": ("+", operator.add), "sub": ("-", operator.sub), "mul": ("*", operator.mul),
           "truediv": ("/", operator.truediv), "floordiv": ("//", operator.floordiv), "mod": ("%", operator.mod),
           "lt": ("<", operator.lt), "le": ("<=", operator.le), "gt": (">", operator.gt), "ge": (">=", operator.ge),
           "eq": ("==", operator.eq), "ne": ("!=", operator.ne)}
_COMPARE = frozenset(("lt", "le", "gt", "ge", "eq", "ne"))
_EXTREME = {"max": ">", "min": "<"}  # larger, smaller: the comparison that picks the first argument
_NUMBER = (int, float)
PLAIN_TYPES = {"int": int, "float": float, "bool": bool, "str": str}  # the values plain data (marshal) holds
PLAIN_TYPE_NAMES = {v: k for k, v in PLAIN_TYPES.items()}


class TraceError(TypeError):
    """The traced code did something with a ``Sym`` that a tape cannot record."""


class Tape:
    """The steps of one traced run: ``steps[i]`` = (op, args), an arg an int (a step) or a
    constant (``_const``); ``values[i]`` its value in the traced run; ``guards``: (step, value it must keep)."""

    def __init__(self, names: tuple):
        self.names = names
        self.steps: list = []
        self.values: list = []
        self.guards: list = []
        self._seen: dict = {}  # (op, args) -> step, for merging repeated steps
        self._guarded: set = set()

    def input(self, name: str, value) -> "Sym":
        return self._new(("in", (name,)), value)

    def _new(self, key: tuple, value) -> "Sym":
        n = len(self.steps)
        i = self._seen.setdefault(key, n)  # one hash of the (nested) key, a new step or not
        if i == n:
            self.steps.append(key)
            self.values.append(value)
        return Sym(value, i, self)

    def op(self, op: str, args: tuple, value) -> "Sym":
        return self._new((op, tuple(a.i if a.__class__ is Sym else _const(a) for a in args)), value)

    def guard(self, x: "Sym", value) -> None:
        """Record that ``x`` must keep ``value`` (a bool, or the number a decision read)."""
        if x.i not in self._guarded:
            self._guarded.add(x.i)
            if type(value) is not bool:
                x = self.op("eq", (x, value), True)
                value = True
            self.guards.append((x.i, value))

    def program(self, outputs: list) -> "Program":
        """The steps ``outputs`` (Syms or plain values) and the guards need, compiled."""
        return Program(self, outputs)


def _const(value) -> tuple:
    """A plain value among a step's arguments: (type, value, sign), the sign telling 0.0 from -0.0."""
    return value.__class__, value, value.__class__ is float and math.copysign(1.0, value)


def _binary(op: str):
    fn = _BINARY[op][1]

    def forward(self, other):  # the steps of ``Tape.op`` inlined: tracing runs this for most steps
        tape = self.tape
        if other.__class__ is Sym:
            return tape._new((op, (self.i, other.i)), fn(self.v, other.v))
        kind = type(other)
        if kind is int or kind is float or kind is bool:
            return tape._new((op, (self.i, (kind, other, kind is float and math.copysign(1.0, other)))),
                             fn(self.v, other))
        return NotImplemented

    def backward(self, other):
        if type(other) not in (int, float, bool):
            return NotImplemented
        return self.tape.op(op, (other, self), fn(other, self.v))

    return forward, backward


class Sym:
    """A number whose steps are recorded on ``tape``; ``v`` is its value in the traced run."""

    __slots__ = ("v", "i", "tape")

    def __init__(self, v, i: int, tape: Tape):
        self.v, self.i, self.tape = v, i, tape

    __add__, __radd__ = _binary("add")
    __sub__, __rsub__ = _binary("sub")
    __mul__, __rmul__ = _binary("mul")
    __truediv__, __rtruediv__ = _binary("truediv")
    __floordiv__, __rfloordiv__ = _binary("floordiv")
    __mod__, __rmod__ = _binary("mod")
    __lt__, __gt__ = _binary("lt")[0], _binary("gt")[0]
    __le__, __ge__ = _binary("le")[0], _binary("ge")[0]
    __eq__, __ne__ = _binary("eq")[0], _binary("ne")[0]
    __hash__ = None

    def __neg__(self):
        return self.tape.op("neg", (self,), -self.v)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.tape.op("abs", (self,), abs(self.v))

    def __ceil__(self):
        return self.tape.op("ceil", (self,), math.ceil(self.v))

    def __floor__(self):
        return self.tape.op("floor", (self,), math.floor(self.v))

    def __bool__(self):
        if type(self.v) is bool:
            self.tape.guard(self, self.v)
        else:
            self.tape.guard(self.tape.op("ne", (self, 0), self.v != 0), self.v != 0)
        return bool(self.v)

    # a value read as a plain number (an index, a name, a float): it must stay what it is
    def _plain(self):
        self.tape.guard(self, self.v)
        return self.v

    def __index__(self):
        if type(self.v) is not int:
            raise TraceError(f"{self.v!r} used as an index")
        return self._plain()

    def __int__(self):
        return int(self._plain())

    def __float__(self):
        return float(self._plain())

    def __format__(self, spec):
        return format(self._plain(), spec)

    def __repr__(self):
        return repr(self._plain())

    __str__ = __repr__


def choose(cond, a, b):
    """``a if cond else b``, recorded as data where ``cond`` is a traced comparison."""
    if isinstance(cond, Sym):
        pick = a if cond.v else b
        return cond.tape.op("where", (cond, a, b), pick.v if isinstance(pick, Sym) else pick)
    return a if cond else b


def is_zero(x) -> bool:
    """Whether ``x`` is a plain zero (never a traced number: its value elsewhere may not be): where
    adding it changes nothing, code that skips it records no step."""
    return x.__class__ is not Sym and x == 0


def plus(total, x):
    """``total + x``, or ``total`` itself where ``x`` is a plain zero (no step recorded). Exact for a
    running total that is never -0.0 (a sum of sizes or times: ``x + (-x)`` is 0.0)."""
    return total if is_zero(x) else total + x


def larger(a, b):
    """``a if a > b else b`` (max(a, b) that gives ``b`` where they tie), one step where traced."""
    return _extreme("max", operator.gt, a, b)


def smaller(a, b):
    """``a if a < b else b`` (min(a, b) that gives ``b`` where they tie), one step where traced."""
    return _extreme("min", operator.lt, a, b)


def _extreme(op: str, first, a, b):
    """``a if first(a, b) else b``, compared on the values (a traced comparison would record a step of
    its own that nothing reads)."""
    av = a.v if a.__class__ is Sym else a
    bv = b.v if b.__class__ is Sym else b
    pick_a = first(av, bv)
    traced = a if a.__class__ is Sym else b if b.__class__ is Sym else None
    if traced is None:
        return a if pick_a else b
    return traced.tape.op(op, (a, b), av if pick_a else bv)


def log2(x):
    """math.log2, recorded where ``x`` is traced."""
    if isinstance(x, Sym):
        return x.tape.op("log2", (x,), math.log2(x.v))
    return math.log2(x)


def trace(fn: Callable, inputs: dict):
    """(tape, fn(**inputs as Syms)): ``fn`` run once with its steps recorded."""
    tape = Tape(tuple(inputs))
    return tape, fn(**{name: tape.input(name, v) for name, v in inputs.items()})


class Program:
    """A tape's needed steps as Python functions of its inputs (``Tape.names``).

    ``full(*inputs, where, log2, ceil, floor)`` returns (guard values, output values, integer values):
    ``scalar`` runs it. ``vector`` interprets the steps on numpy arrays (``_Plan``): compiling costs
    hundreds of replays, interpreting a few. ``expected``: the value each guard must take."""

    def __init__(self, tape: Tape, outputs: list):
        self.tape = tape
        self.outputs = outputs
        self.expected = tuple(v for _, v in tape.guards)
        self.guard_steps = [i for i, _ in tape.guards]
        self.out_steps = [o.i for o in outputs if isinstance(o, Sym)]
        self.live = _needed(tape, self.guard_steps + self.out_steps)
        self.ints = [i for i in self.live if type(tape.values[i]) is int and tape.steps[i][0] != "in"]
        self._full = None
        self._plan = self._guard_plan = None

    @property
    def full(self) -> Callable:
        """The compiled program (compiled on first use)."""
        if self._full is None:
            self._full = _compile(self.tape, self.live, self.guard_steps, self.expected, self.out_steps)
        return self._full

    @property
    def compiled(self) -> bool:
        return self._full is not None

    @property
    def planned(self) -> int:
        """How many of its two plans for arrays (the guards', the whole program's) are built."""
        return (self._plan is not None) + (self._guard_plan is not None)

    def to_data(self) -> Optional[tuple]:
        """The program as plain data that ``marshal`` writes and ``from_data`` reads back: its live
        steps (renumbered, in a blob of their own, read only where a vector run needs them), guards,
        outputs and compiled code (if compiled); None where a constant is of a kind plain data cannot
        hold."""
        where = {old: new for new, old in enumerate(self.live)}
        try:
            steps = [_plain_step(self.tape.steps[i], where) for i in self.live]
        except KeyError:
            return None
        outputs = [("s", where[o.i]) if isinstance(o, (Sym, _Slot)) else ("v", o) for o in self.outputs]
        code = None
        if self._full is not None:
            scope = {k: v for k, v in self._full.__globals__.items() if k[0] == "c" and k[1:].isdigit()}
            code = (self._full.__code__, scope)
        plans = [None if plan is None else marshal.dumps(_renumbered(plan, where, len(self.tape.steps), len(steps)))
                 for plan in (self._plan, self._guard_plan)]
        return (self.tape.names, [where[i] for i in self.guard_steps], self.expected, outputs,
                [where[i] for i in self.ints], code, marshal.dumps(steps), len(steps), plans)

    @classmethod
    def from_data(cls, data: tuple) -> "Program":
        """The program ``to_data`` gave (its steps unpacked on first use)."""
        names, guard_steps, expected, outputs, ints, code, steps, size, plans = data
        program = cls.__new__(cls)
        program.tape, program.live = _LazyTape(tuple(names), steps), list(range(size))
        program.outputs = [_Slot(x) if kind == "s" else x for kind, x in outputs]
        program.expected, program.guard_steps, program.ints = tuple(expected), list(guard_steps), list(ints)
        program.out_steps = [o.i for o in program.outputs if isinstance(o, _Slot)]
        program._plan, program._guard_plan = (None if p is None else _Plan.from_data(marshal.loads(p)) for p in plans)
        program._full = None if code is None else types.FunctionType(code[0], dict(code[1], inf=math.inf))
        return program

    @property
    def plan(self) -> "_Plan":
        if self._plan is None:
            self._plan = _Plan(self.tape, self.live, self.out_steps + self.ints)
        return self._plan

    def scalar(self, inputs: tuple) -> Optional[list]:
        """The outputs at one point (Python numbers), or None where a guard fails there."""
        try:
            outs = self.full(*inputs, math.log2, math.ceil, math.floor)
        except (ArithmeticError, ValueError):  # a step undefined there (a size of 0, log2(0)): another structure
            return None
        return None if outs is None else self._assemble(outs)

    def _assemble(self, outs) -> list:
        values = iter(outs)
        return [next(values) if isinstance(o, (Sym, _Slot)) else o for o in self.outputs]

    def vector(self, inputs: tuple) -> tuple:
        """(exact, outputs) at every lane of ``inputs`` (numpy float64 arrays, lanes where
        ``vector_hold``): ``exact`` the lanes whose integer steps all stay below 2^53; an output is
        an array or, where it is the same everywhere, a plain value. FloatingPointError where a lane
        divides by zero."""
        import numpy as np

        with np.errstate(divide="raise", invalid="raise"):
            values = self.plan.run(inputs)
        exact = np.ones(len(inputs[0]), dtype=bool)
        if self.ints:  # every step depends on an input: an array of a lane each
            exact &= np.abs(np.vstack([values[i] for i in self.ints])).max(axis=0) < EXACT_INT
        return exact, self._assemble([values[i] for i in self.out_steps])

    def vector_hold(self, inputs: tuple):
        """Boolean array: the lanes (numpy arrays ``inputs``) where every guard holds."""
        import numpy as np

        if self._guard_plan is None:
            self._guard_plan = _Plan(self.tape, _needed(self.tape, self.guard_steps), self.guard_steps)
        with np.errstate(all="ignore"):
            values = self._guard_plan.run(inputs)
        ok = np.ones(len(inputs[0]), dtype=bool)
        for g, want in zip((values[i] for i in self.guard_steps), self.expected):
            ok &= g if want else ~np.asarray(g, dtype=bool)
        return ok


def _plain_step(step: tuple, where: dict) -> tuple:
    """A step with its arguments renumbered by ``where`` and its constants' types named."""
    op, args = step
    if op == "in":
        return step
    return op, tuple(where[a] if a.__class__ is int else (_type_name(a[0]), *a[1:]) for a in args)


def _type_name(kind) -> str:
    """The name of a constant's type (already a name in a loaded program)."""
    return kind if kind.__class__ is str else PLAIN_TYPE_NAMES[kind]


class _LazyTape:
    """A loaded program's steps (``Program.from_data``): unpacked from their blob on first use.
    A constant's type is its name there; only its value (``[1]``) is ever read."""

    def __init__(self, names: tuple, blob: bytes):
        self.names, self._blob, self._steps = names, blob, None

    @property
    def steps(self) -> list:
        if self._steps is None:
            self._steps = marshal.loads(self._blob)
        return self._steps


class _Slot:
    """An output of a loaded program: the number of the step that gives it."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


class _Plan:
    """Steps to interpret on numpy arrays: ``run`` fills a list of values, a slot per step and per
    constant, and lets go of a step's array after its last use, except the steps of ``keep`` (read
    after the run): the arrays then come back to the allocator warm, instead of a program of thousands
    of steps faulting in fresh memory for each (three times faster at a few thousand lanes)."""

    def __init__(self, tape: Tape, steps: list, keep: list):
        every = tape.steps
        self.inputs = [(i, tape.names.index(every[i][1][0])) for i in steps if every[i][0] == "in"]
        slots: dict = {}  # constant -> its slot
        self.size = len(every)
        ops = []
        for i in steps:
            op, args = every[i]
            if op == "in":
                continue
            refs = [a if a.__class__ is int else slots.setdefault(a, self.size + len(slots)) for a in args]
            ops.append((i, op, len(refs), *refs, *(0,) * (3 - len(refs))))
        self.ops = _with_releases(ops, set(keep), self.size)  # (step, op, arity, 3 argument slots, released)
        self.consts = [(slot, const[1]) for const, slot in slots.items()]  # (slot, value)
        self._consts = None  # the same, as ``run`` passes them to numpy
        self.size += len(slots)

    @classmethod
    def from_data(cls, data: tuple) -> "_Plan":
        """A plan from its fields as ``_renumbered`` gives them (inputs, ops, consts, size)."""
        plan = cls.__new__(cls)
        plan.inputs, plan.ops, plan.consts, plan.size = data
        plan._consts = None
        return plan

    def run(self, inputs: tuple) -> list:
        fns = _vector_fns()
        values = [None] * self.size
        for i, k in self.inputs:
            values[i] = inputs[k]
        if self._consts is None:
            self._consts = [(slot, _vector_const(value)) for slot, value in self.consts]
        for slot, value in self._consts:
            values[slot] = value
        for i, op, arity, a, b, c, released in self.ops:
            fn = fns[op]
            if arity == 2:
                values[i] = fn(values[a], values[b])
            elif arity == 1:
                values[i] = fn(values[a])
            else:
                values[i] = fn(values[a], values[b], values[c])
            for r in released:
                values[r] = None
        return values


def _vector_const(value):
    """A constant as a step reads it on arrays: a number as a 0-d float64 array (numpy converts a
    Python number anew at every call, half the cost of an operation on a thousand lanes); the
    value a float64 lane holds, as numpy converts it (a bool or a name stays as it is)."""
    if value.__class__ is int or value.__class__ is float:
        import numpy as np

        return np.array(float(value))
    return value


def _with_releases(ops: list, keep: set, steps: int) -> list:
    """``ops`` (step, op, arity, three argument slots), each with the step slots (below ``steps``;
    constants stay) whose last use it is, less ``keep``."""
    last: dict = {}
    for n, (_, _, arity, *refs) in enumerate(ops):
        for r in refs[:arity]:
            last[r] = n
    released: list = [[] for _ in ops]
    for r, n in last.items():
        if r < steps and r not in keep:
            released[n].append(r)
    return [(*o, tuple(d)) for o, d in zip(ops, released)]


def _renumbered(plan: _Plan, where: dict, old_size: int, new_size: int) -> tuple:
    """``plan``'s data with its steps numbered by ``where`` (the live steps of a saved program)."""
    def slot(k: int) -> int:
        return where[k] if k < old_size else k - old_size + new_size

    ops = [(slot(i), op, arity, *(slot(r) if n < arity else 0 for n, r in enumerate(refs)), tuple(map(slot, released)))
           for i, op, arity, *refs, released in plan.ops]
    return ([(slot(i), k) for i, k in plan.inputs], ops, [(slot(k), v) for k, v in plan.consts],
            plan.size - old_size + new_size)


_VECTOR_FNS: dict = {}  # op -> numpy function, filled on first use


def _vector_fns() -> dict:
    """The steps' numpy functions (numpy imported on first use: a process that prices no batch never loads it)."""
    if not _VECTOR_FNS:
        import numpy as np

        _VECTOR_FNS.update({
            "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
            "floordiv": np.floor_divide, "mod": np.remainder, "lt": np.less, "le": np.less_equal, "gt": np.greater,
            "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal, "neg": np.negative, "abs": np.abs,
            "ceil": np.ceil, "floor": np.floor, "where": np.where, "log2": _vector_log2,
            # numpy's maximum and minimum give the second argument where they tie (0.0 and -0.0), as
            # larger and smaller do; they differ only where the first is NaN, which a vector run refuses
            "max": np.maximum, "min": np.minimum})
    return _VECTOR_FNS


def _vector_log2(x):
    """math.log2 lane by lane (numpy's log2 may differ from the C library's in the last bit)."""
    import numpy as np

    logs = (math.log2(v) if v > 0.0 else math.nan for v in np.ravel(x).tolist())  # nan: a lane of another structure
    return np.fromiter(logs, dtype=float, count=np.size(x)).reshape(np.shape(x))


def _needed(tape: Tape, roots: list) -> list:
    """The steps ``roots`` depend on, in order (a step's arguments come before it)."""
    need = bytearray(len(tape.steps))
    for i in roots:
        need[i] = 1
    steps = tape.steps
    for i in range(max(roots, default=-1), -1, -1):
        if need[i]:
            for a in steps[i][1]:
                if a.__class__ is int:  # an input's argument is its name, a str
                    need[a] = 1
    return [i for i, n in enumerate(need) if n]


def _compile(tape: Tape, live: list, guards: list, expected: tuple, outs: list) -> Callable:
    """``run(*inputs, log2, ceil, floor)``: the live steps as one straight-line Python function that
    returns the outputs' values, or None as soon as a guard does not take its expected value (a
    guard is a comparison: True or False)."""
    consts: dict = {}

    def ref(a) -> str:
        if type(a) is int:
            return f"v{a}"
        value = a[1]
        if type(value) in _NUMBER and math.isfinite(value) or type(value) in (bool, str):
            return repr(value)
        name = f"c{len(consts)}"
        consts[name] = value
        return name

    wants = dict(zip(guards, expected))
    lines = []
    for i in live:
        op, args = tape.steps[i]
        if op == "in":
            continue
        a = [ref(x) for x in args]
        if op in _BINARY:
            expr = f"{a[0]} {_BINARY[op][0]} {a[1]}"
        elif op == "neg":
            expr = f"-{a[0]}"
        elif op == "abs":
            expr = f"abs({a[0]})"
        elif op == "where":
            expr = f"{a[1]} if {a[0]} else {a[2]}"
        elif op in _EXTREME:
            expr = f"{a[0]} if {a[0]} {_EXTREME[op]} {a[1]} else {a[1]}"
        else:  # log2, ceil, floor: the functions given to the call
            expr = f"{op}({a[0]})"
        lines.append(f"    v{i} = {expr}")
        if i in wants:
            lines.append(f"    if {'not ' if wants[i] else ''}v{i}: return None")
    given = {tape.steps[i][1][0]: i for i in live if tape.steps[i][0] == "in"}
    names = ", ".join(f"v{given[n]}" if n in given else f"_{n}" for n in tape.names)
    body = "\n".join(lines)
    src = (f"def run({names}, log2, ceil, floor):\n{body}\n"
           f"    return ({''.join(f'v{i}, ' for i in outs)})\n")
    scope = dict(consts, inf=math.inf)
    exec(compile(src, "<attncost tape>", "exec"), scope)
    return scope["run"]


__all__ = ["Sym", "Tape", "Program", "TraceError", "choose", "is_zero", "larger", "plus", "smaller", "log2", "trace",
           "EXACT_INT", "PLAIN_TYPES", "PLAIN_TYPE_NAMES"]
