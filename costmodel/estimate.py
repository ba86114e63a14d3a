"""Evaluate a variant at a shape: the numbers `attncost predict` prints and `--json` dumps."""

import contextlib
import gc
import hashlib
import sys
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Optional

from .analysis import MATMUL_KINDS, add_backward, analyse
from .graph import Graph
from .shape import Shape
from . import program_store
from .tape import PLAIN_TYPE_NAMES, PLAIN_TYPES, Program, Sym, TraceError, is_zero, plus, trace
from .timing import predict
from .variants import REGISTRY, Params, VariantError

METRICS = ("flops", "memory", "time")


@dataclass(slots=True)
class Estimate:
    """One (variant, shape) point. Field names are a stable interface: scripts depend on them.

    flops: all FLOPs (matmuls as 2 x MACs plus the documented non-matmul counts); flops_matmul:
    matmuls and convolutions only; flops_core / flops_proj / flops_other: the attention core
    (token mixing), the projections (Q/K/V/O and any extra maps), the rest (cache writes, RoPE).
    Bytes are per layer; kv_cache_bytes is for batch x T tokens. The comparison with a baseline
    (``crossover.cheaper_ranges``: an end of None means still cheaper at the end of the search) is
    filled in by ``evaluate``; ``estimate`` leaves it None. A plain dataclass rather than a
    pydantic model: sweeps build thousands (pydantic's construction costs 70 us each).
    """

    variant: str
    params: dict
    shape: Shape
    status: str = "ok"  # ok | n/a
    reason: Optional[str] = None
    notes: list = field(default_factory=list)
    flops: float = 0.0
    flops_matmul: float = 0.0
    flops_core: float = 0.0
    flops_proj: float = 0.0
    flops_other: float = 0.0
    param_count: float = 0.0
    weights_bytes: float = 0.0
    bytes_unfused: float = 0.0
    bytes_fused: float = 0.0
    activation_bytes_unfused: float = 0.0
    activation_bytes_fused: float = 0.0
    kv_cache_bytes_per_token: float = 0.0
    kv_cache_bytes: float = 0.0
    arithmetic_intensity: float = 0.0
    kernels: int = 0
    time_s: Optional[float] = None
    bound: Optional[str] = None
    baseline: Optional[str] = None  # the variant the next three compare with (``evaluate``)
    crossover_T: Optional[dict] = None  # metric -> smallest T where cheaper than the baseline
    cheaper_until_T: Optional[dict] = None  # metric -> first larger T where it no longer is
    cheaper_ranges_T: Optional[dict] = None  # metric -> every [start, end) range of T where cheaper

    def model_dump(self) -> dict:
        """A JSON-ready dict (the shape as a dict too)."""
        out = {f: getattr(self, f) for f in self.__slots__}
        out["shape"] = self.shape.model_dump()
        return out


def resolve_params(name: str, shape: Shape, params: Optional[dict] = None) -> Params:
    """The variant's parameters: ``params`` over the defaults, shape-dependent ones filled in.
    Raises VariantError for an unknown variant or a count of tokens larger than T (``at_most_T``),
    and pydantic's ValidationError for bad values."""
    variant = REGISTRY.get(name)
    if variant is None:
        raise VariantError(f"unknown variant {name!r}: choose from {', '.join(REGISTRY)}")
    p = variant.params(**(params or {})).resolve(shape)
    key = _beyond_T(p, shape)
    if key is not None:
        raise VariantError(f"{name}.{key}={getattr(p, key)} must be at most T={shape.T}")
    return p


def _beyond_T(p: Params, shape: Shape) -> Optional[str]:
    """The first of ``p.at_most_T`` larger than T, or None."""
    for key in p.at_most_T:
        if getattr(p, key) > shape.T:
            return key
    return None


def graph(name: str, shape: Shape, params: Optional[Params] = None) -> Graph:
    """The variant's op graph at this shape and phase (train = forward + backward)."""
    variant = REGISTRY[name]
    p = params if params is not None else resolve_params(name, shape)
    if shape.phase == "decode" and not variant.decode:
        raise VariantError(f"{name} has no decode path: it is not causal")
    if shape.phase == "train":
        g = variant.build(shape.model_copy(update={"phase": "prefill"}), p)
        add_backward(g)
        return g
    return variant.build(shape, p)


def estimate(name: str, shape: Shape, params: Optional[dict] = None, hardware=None) -> Estimate:
    """Cost of one variant at one shape; a variant that does not apply gets status "n/a"."""
    try:
        p = resolve_params(name, shape, params)
        g = graph(name, shape, p)
    except VariantError as err:
        if name not in REGISTRY:
            raise
        return Estimate(variant=name, params=params or {}, shape=shape, status="n/a", reason=str(err))
    return Estimate(name, dict(p), shape, "ok", None, notes(name, shape), *costs(shape, g, hardware))


def notes(name: str, shape: Shape) -> list:
    """The variant's notes at this shape, as an Estimate lists them."""
    variant = REGISTRY[name]
    out = list(variant.notes)
    if variant.causal is False and shape.causal:
        out.insert(0, "not causal by nature: costed as non-causal")
    return out


def costs(shape: Shape, g: Graph, hardware) -> tuple:
    """The numbers of an Estimate of graph ``g`` at ``shape``, in field order from ``flops`` to
    ``bound`` (the fast path, ``estimate_many``, traces this same function)."""
    parts = {"core": 0.0, "proj": 0.0, "other": 0.0}
    flops_mm = 0.0
    for op in g.ops:
        if is_zero(op.flops):  # a view, a module call, a copy: nothing to add
            continue
        parts[op.part] += op.flops
        if op.kind in MATMUL_KINDS:
            flops_mm += op.flops
    flops = sum(parts.values())
    a = analyse(g)
    ks = a.kernels
    fused_bytes = 0.0
    for k in ks:
        fused_bytes = plus(fused_bytes, k.bytes)
    weights = sum(t.elems for t in g.tensors.values() if t.role in ("weight", "buffer"))
    per_token = g.kv_per_token * shape.itemsize
    kv_total = shape.batch * (g.kv_per_token * g.kv_tokens + g.kv_fixed) * shape.itemsize
    time_s = bound = None
    if hardware is not None:
        timed = predict(ks, hardware, shape.dtype)
        time_s, bound = timed.time_s, timed.bound
    param_count = sum(t.elems for t in g.tensors.values() if t.role == "weight")
    return (flops, flops_mm, parts["core"], parts["proj"], parts["other"], param_count, weights * shape.itemsize,
            a.bytes_unfused, fused_bytes, a.peak_unfused, a.peak_fused, per_token, kv_total,
            flops / fused_bytes if fused_bytes else 0.0, len(ks), time_s, bound)


def _groups(shapes: list) -> dict:
    """{(phase, dtype, causal, no kv_heads): indices of ``shapes``}, what a batch's programs depend on,
    in the order the groups first come."""
    fields = list(map(attrgetter("phase", "dtype", "causal", "kv_heads"), shapes))
    group = {f: (*f[:3], f[3] is None) for f in dict.fromkeys(fields)}
    keys = list(dict.fromkeys(group.values()))
    if len(keys) == 1:
        return {keys[0]: list(range(len(shapes)))}
    of = list(map(group.__getitem__, fields))
    return {key: [i for i, k in enumerate(of) if k == key] for key in keys}


def estimate_many(name: str, shapes: list, params: Optional[dict] = None, hardware=None) -> list:
    """[estimate(name, s, params, hardware) for s in shapes], the same Estimates exactly: the entry
    point for callers that price one variant at many shapes (sweeps, ``pick``).

    Fast: ``estimate``'s own code is traced (``tape``) once per structure of the graph, with the
    shape's sizes and the numeric parameters as inputs, and replayed on every shape that shares
    it: on numpy arrays for many shapes at once, else point by point. The programs are kept for
    later calls, and on disk for later processes (``program_store``)."""
    if not shapes:
        return []
    if name not in REGISTRY:
        resolve_params(name, shapes[0], params)  # raises VariantError, as estimate does
    REGISTRY[name].params(**(params or {}))  # raises pydantic's ValidationError, as estimate does
    out = [None] * len(shapes)
    numeric = {k: v for k, v in (params or {}).items() if type(v) in (int, float)}
    fixed = tuple(sorted((k, repr(v)) for k, v in (params or {}).items() if k not in numeric))
    with _collector_paused():
        for (phase, dtype, causal, no_kv), todo in _groups(shapes).items():
            key = ("estimate_many", name, phase, dtype, causal, no_kv, fixed, tuple(numeric))
            programs = _programs(key, hardware)
            _price(programs, _Point(name, params, numeric, hardware, phase, dtype, causal, no_kv), shapes, todo,
                   out)
            programs.keep()
    return out


@contextlib.contextmanager
def _collector_paused():
    """Python's cycle collector paused while a batch is priced: it would scan every object made so
    far, again and again, as thousands of Estimates are made (more than half the time of filling
    them in); what is made here holds no reference cycle. After, the young objects are moved to the
    oldest generation unscanned (``gc.freeze`` then ``gc.unfreeze``), where the Estimates kept would
    land after two collections anyway; the collector then runs as before. Without that move, its
    first pass scans the whole batch at once (about a tenth of pricing 100,000 points)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        gc.enable()


# A trace costs about 10 estimates, compiling its program for point-by-point replays about 80 more
# (then a replay costs a sixth of an estimate); a replay on numpy arrays costs a few estimates,
# whatever the number of points (measured on bench/predict_speed.py's points).
ONE_BY_ONE = 256  # points of a key priced one by one, where they come fewer than vector_at() at a time
STORED_ONE_BY_ONE = 16  # ... where the store keeps the programs for later processes: they pay off sooner
FEW = 4  # a trace that prices fewer points than this did not pay off ...
MAX_FEW = 4  # ... and after this many such, the key's points go one by one (DSA's blocks vary with T)
VECTOR_AT = 24  # points replayed on numpy arrays from this many, once numpy is loaded; before, importing
NUMPY_AT = 256  # it costs about 300 estimates: a batch of this many loads it, or any batch once the
NUMPY_AFTER = 1024  # process has priced (or ``expect``s to price) this many points one by one
_PROGRAMS: dict = {}  # (key, hardware fingerprint) -> _Programs
_PRICED = [0, 0]  # points priced one by one in estimate_many so far; the most announced by ``expect``


def vector_at() -> int:
    """The fewest points ``estimate_many`` replays on numpy arrays (a batch of fewer goes one by
    one until its key has priced ``ONE_BY_ONE`` points)."""
    return VECTOR_AT if "numpy" in sys.modules or max(_PRICED) >= NUMPY_AFTER else NUMPY_AT


def expect(points: int) -> None:
    """Tell ``estimate_many`` that this process is about to price about ``points`` points: from
    ``NUMPY_AFTER`` on, loading numpy for batches of ``VECTOR_AT`` pays off at once."""
    _PRICED[1] = max(_PRICED[1], points)


def _programs(key: tuple, hardware) -> "_Programs":
    """The programs of ``key`` on ``hardware``: one set per process for all profiles of the same
    numbers (programs depend on nothing else), loaded from the store on first use."""
    where = (key, _fingerprint(hardware))
    programs = _PROGRAMS.get(where)
    if programs is None:
        programs = _PROGRAMS[where] = _Programs(key, where[1])
    return programs


class _Programs:
    """The traced programs of one (variant, phase, dtype, causal, parameters) on one hardware
    profile, and what they cost; those kept on disk (``program_store``) are loaded first."""

    def __init__(self, key: tuple, fingerprint: str):
        self.file = program_store.file_for(key, fingerprint)
        self.key = key
        self.items: list = [_entry_from(data) for data in program_store.load(self.file, key)]
        self.saved = self.state()  # what the file holds
        # points priced one by one before tracing pays: with the store, sooner; and at once for a key
        # an earlier process traced (it will come again)
        self.one_by_one = ONE_BY_ONE if self.file is None else 0 if self.items else STORED_ONE_BY_ONE
        self.untraced = 0  # points priced one by one so far
        self.few = 0  # traces that priced fewer than FEW points
        self.failed = False  # the code did something a tape cannot record: always one by one

    def state(self) -> tuple:
        """What a saved file would hold: programs, those compiled, their plans for arrays (a plan
        built from a loaded program is saved too, so that later processes do not build it again)."""
        return (len(self.items), sum(entry[0].compiled for entry in self.items),
                sum(entry[0].planned for entry in self.items))

    def keep(self) -> None:
        """Have the store write these programs at exit, where they changed since loaded or written."""
        if self.file is None:
            return
        state = self.state()
        if state != self.saved:
            self.saved = state
            program_store.save_at_exit(self.file, self.key, self.data)

    def data(self) -> list:
        """The entries as plain data (those that plain data cannot hold are left out)."""
        out = []
        for program, keys, types in self.items:
            data = program.to_data()
            if data is not None and all(t is None or t in PLAIN_TYPE_NAMES for t in types or ()):
                out.append((data, keys, [PLAIN_TYPE_NAMES.get(t) for t in types] if types else types))
        return out


def _entry_from(data: tuple) -> tuple:
    """A (program, keys, types) entry from what ``_Programs.data`` saved."""
    program, keys, types = data
    return Program.from_data(program), keys, [PLAIN_TYPES.get(t) for t in types] if types else types


def _fingerprint(hardware) -> str:
    """What tells hardware profiles apart for the store: a hash of every number in the profile."""
    if hardware is None:
        return "none"
    return hardware.cached("program_store.fingerprint",
                           lambda: hashlib.sha256(hardware.model_dump_json().encode()).hexdigest())


class _Point:
    """``estimate`` at one point as a function of its sizes (and numeric parameters), for ``trace``."""

    def __init__(self, name, params, numeric, hardware, phase, dtype, causal, no_kv):
        self.name, self.params, self.numeric, self.hardware = name, params, numeric, hardware
        self.fields = dict(dtype=dtype, causal=causal, phase=phase)
        self.sizes = ("batch", "T", "d", "heads") + (() if no_kv else ("kv_heads",))
        self.names = self.sizes + tuple("p_" + k for k in numeric)

    def inputs(self, s: Shape) -> tuple:
        return (s.batch, s.T, s.d, s.heads) + (() if s.kv_heads is None else (s.kv_heads,)) + tuple(
            self.numeric.values())

    def one(self, s: Shape) -> Estimate:
        """``estimate`` at ``s``, untraced."""
        return estimate(self.name, s, self.params, self.hardware)

    def columns(self, shapes: list) -> tuple:
        """``inputs`` of each of ``shapes``: a numpy float64 array per input, a lane per shape."""
        import numpy as np

        n = len(shapes)
        sizes = [np.fromiter(map(attrgetter(k), shapes), dtype=float, count=n) for k in self.sizes]
        return tuple(sizes + [np.full(n, float(v)) for v in self.numeric.values()])

    def __call__(self, batch, T, d, heads, kv_heads=None, **numeric):
        shape = Shape.model_construct(batch=batch, T=T, d=d, heads=heads, kv_heads=kv_heads, **self.fields)
        try:
            given = REGISTRY[self.name].params(**(self.params or {}))
            traced = {k[2:]: v for k, v in numeric.items()}  # the numeric parameters, named p_<name>
            p = (given.model_copy(update=traced) if traced else given).resolve(shape)
            if _beyond_T(p, shape) is not None:  # n/a; its reason names T, so it is left to ``estimate``
                return None
            g = graph(self.name, shape, p)
        except VariantError:  # n/a: ``estimate`` gives the reason
            return None
        return list(dict(p).items()), costs(shape, g, self.hardware)


def _price(programs: _Programs, point: _Point, shapes: list, todo: list, out: list) -> None:
    """Fill ``out`` at ``todo`` (indices of ``shapes``): by the programs that hold there, by new
    traces while that pays off (sooner where the store keeps them for later runs), else one by one."""
    batch = len(todo) >= vector_at()
    stored = programs.file is not None
    lanes = _Lanes(point, shapes, todo) if batch else None
    if batch or stored or programs.untraced + len(todo) > ONE_BY_ONE:
        for entry in programs.items:
            if not todo:
                return
            todo = _replay(entry, point, shapes, todo, out, lanes)
    while todo:
        few = not batch and programs.untraced + len(todo) <= programs.one_by_one
        if programs.failed or few or programs.few >= MAX_FEW:
            programs.untraced += len(todo)
            _PRICED[0] += len(todo)
            for i in todo:
                out[i] = point.one(shapes[i])
            return
        try:
            tape, result = trace(point, dict(zip(point.names, point.inputs(shapes[todo[0]]))))
        except TraceError:
            programs.failed = True
            continue
        if result is None:  # the variant does not apply there: priced one by one (n/a and its reason)
            entry = (tape.program([]), None, None)
        else:
            items, numbers = result
            outputs = [v for _, v in items] + list(numbers)
            entry = (tape.program(outputs), [k for k, _ in items],
                     [type(o.v) if isinstance(o, Sym) else None for o in outputs])
        programs.items.append(entry)
        left = _replay(entry, point, shapes, todo, out, lanes)
        programs.few += len(todo) - len(left) < FEW
        todo = left


class _Lanes:
    """The inputs of a batch's points (``todo``) as numpy arrays, a lane per point: made once, and
    narrowed to the points left as each program takes those where it holds."""

    def __init__(self, point: _Point, shapes: list, todo: list):
        self.todo = todo
        self.cols = point.columns([shapes[i] for i in todo])

    def narrow(self, left: list, keep) -> None:
        """Keep the lanes of ``left``: those where the boolean array ``keep`` is true."""
        self.todo, self.cols = left, tuple(c[keep] for c in self.cols)


def _replay(entry: tuple, point: _Point, shapes: list, todo: list, out: list, lanes: Optional[_Lanes]) -> list:
    """Price the points of ``todo`` where ``entry``'s program holds (on numpy arrays where ``lanes``
    holds their inputs: its points are ``todo``); returns the others."""
    if lanes is not None:
        return _replay_vector(entry, point, shapes, out, lanes)
    program, keys, _ = entry
    left = []
    for i in todo:
        values = program.scalar(point.inputs(shapes[i]))
        if values is None:
            left.append(i)
        elif keys is None:
            out[i] = point.one(shapes[i])
        else:
            _fill(point, keys, shapes, [i], [[v] for v in values], out)
    return left


def _fill(point: _Point, keys: list, shapes: list, todo: list, columns: list, out: list) -> None:
    """``out`` at ``todo``: the Estimates of a program's outputs, ``columns`` (a list per output,
    an item per point: the parameters named ``keys``, then the numbers)."""
    n = len(keys)
    name = point.name
    noted = notes(name, shapes[todo[0]])
    if all(len(set(c)) == 1 for c in columns[:n]):  # the same parameters at every point: copies of one dict
        same = dict(zip(keys, (c[0] for c in columns[:n])))
        params = (same.copy() for _ in todo)
    else:
        params = (dict(zip(keys, row)) for row in zip(*columns[:n]))
    made = map(Estimate, repeat(name), params, map(shapes.__getitem__, todo), repeat("ok"), repeat(None),
               map(list, repeat(noted, len(todo))), *columns[n:])  # the positional fields, a column each
    for i, e in zip(todo, made):
        out[i] = e


def _replay_vector(entry: tuple, point: _Point, shapes: list, out: list, lanes: _Lanes) -> list:
    """``_replay`` on numpy arrays at the points of ``lanes``: one lane per point (the guards first,
    then the whole program on the lanes where they hold); a lane whose integers leave float64's exact
    range, or where a division by zero occurs, is priced one by one. ``lanes`` keeps those left."""
    import numpy as np

    program, keys, types = entry
    todo, cols = lanes.todo, lanes.cols
    hold = program.vector_hold(cols)
    flags = hold.tolist()
    left = [i for i, h in zip(todo, flags) if not h]
    held = [i for i, h in zip(todo, flags) if h]
    if left:
        lanes.narrow(left, ~hold)
    exact = None
    if held and keys is not None:
        try:
            exact, outputs = program.vector(cols if not left else tuple(c[hold] for c in cols))
        except FloatingPointError:
            exact = None
    if exact is None:
        for i in held:
            out[i] = point.one(shapes[i])
        return left
    good = exact.tolist()
    matched = [i for i, g in zip(held, good) if g]
    for i in (i for i, g in zip(held, good) if not g):
        out[i] = point.one(shapes[i])
    if matched:
        take = None if len(matched) == len(held) else np.flatnonzero(exact)
        columns = []
        for o, t in zip(outputs, types):
            if t is None:
                columns.append([o] * len(matched))
                continue
            values = np.broadcast_to(o, (len(held),))
            if take is not None:
                values = values[take]
            # integers below 2^53 (``exact``): int64 holds them, and tolist() gives Python ints
            columns.append((values.astype(np.int64) if t is int else values).tolist())
        _fill(point, keys, shapes, matched, columns, out)
    return left
