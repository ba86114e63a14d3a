"""Pick the attention for a budget: sweep every variant's parameters at one shape, drop the points
that break a constraint (counting why), and keep the Pareto front of time, memory and fidelity.

The grid (``variant_grid``), at T tokens, heads H and head dim dh:
  gqa kv_heads over the divisors of H between 1 and H (mqa and flash are the two ends);
  sliding_window window = 128, 256, ... below T, then T (Longformer, Mistral 7B: 4096);
  linformer k (Wang 2020: 64 to 256), nystrom landmarks (Xiong 2021: 32, 64) and performer
  features (Choromanski 2021: 256) by powers of two, 16 up to T (k, landmarks) or 1024;
  mla kv_lora_rank = dh, 2dh, 4dh, 8dh around DeepSeek-V2's 4dh (512 at dh 128, as V2-Lite and V3),
  q_lora_rank = 0 (V2-Lite: no query latent) or 12dh (V2, V3: 1536), rope_dim = dh/2 (64);
  dsa k = 256 ... 8192 by powers of two below T around V3.2-Exp's 2048 (its MLA at the defaults);
  topk k 8 to 128, mlp_attention hidden 32 to 256, msla latents 32 to 512 by powers of two;
  mha, flash, mqa: one point each.

Memory is the layer's peak activations (fused kernels where the variant runs them) plus the KV
cache (or decode state) it keeps for batch x T tokens; with a model, the whole model's weights,
KV cache and peak activations (``model_memory.memory_bytes``). Time is one layer's predicted time.

Fidelity comes from a file of `attncost fidelity --json` (``FidelityTable``): per variant, the
worst over the file's input kinds of its measured output cosine and relative error, interpolated
linearly in log T and log parameter between measured points (gqa and mqa by group size
heads/kv_heads, so a file run with fewer heads still applies); outside the measured T the value is
held at the nearest measured T (an assumption, flagged on the point); outside the measured
parameter range it is unknown. Exact by construction: mha, flash, gqa with one head per group,
a window of at least T, linformer and dsa with k of at least T.
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .estimate import estimate_many
from .fidelity_doc import FidelityDoc
from .shape import Shape
from .variants import NAMES, REGISTRY

# constraint name (the flag without its dashes) -> (the point's field it limits, True for an upper limit)
CONSTRAINTS = {"max_time": ("time_s", True), "max_memory": ("memory_bytes", True), "max_kv": ("kv_bytes", True),
               "min_cosine": ("cosine", False), "max_rel_error": ("rel_error", True)}
SORT_KEYS = ("time", "memory", "fidelity")


# -- the grid ------------------------------------------------------------------------------

def powers_of_two(lo: int, hi: int) -> list:
    """[lo, 2 lo, ...] up to ``hi`` (``lo`` a power of two)."""
    out, x = [], lo
    while x <= hi:
        out.append(x)
        x *= 2
    return out


def _windows(T: int) -> list:
    return [w for w in powers_of_two(128, T) if w < T] + [T]


def _mla(dh: int) -> list:
    rope = max(1, dh // 2)
    return [{"kv_lora_rank": r * dh, "q_lora_rank": q, "rope_dim": rope} for r in (1, 2, 4, 8) for q in (0, 12 * dh)]


def variant_grid(name: str, s: Shape) -> list:
    """The parameter sets swept for ``name`` at ``s`` (the module docstring says which and why)."""
    T, H, dh = s.T, s.heads, s.head_dim
    grids: dict = {
        "gqa": [{"kv_heads": k} for k in range(2, H) if H % k == 0],
        "sliding_window": [{"window": w} for w in _windows(T)],
        "linformer": [{"k": k} for k in powers_of_two(16, T)] or [{"k": T}],
        "nystrom": [{"landmarks": m} for m in powers_of_two(16, min(T, 1024))] or [{"landmarks": T}],
        "performer": [{"features": m} for m in powers_of_two(16, 1024)],
        "mla": _mla(dh),
        "dsa": [{"k": k} for k in powers_of_two(256, 8192) if k < T] or [{"k": T}],
        "topk": [{"k": k} for k in powers_of_two(8, min(T, 128))] or [{"k": T}],
        "mlp_attention": [{"hidden": h} for h in powers_of_two(32, 256)],
        "msla": [{"latents": n} for n in powers_of_two(32, 512)],
    }
    return grids.get(name, [{}])


def sweep_grid(s: Shape, variants: Sequence[str] = NAMES) -> list:
    """[(variant, params)] of every variant's grid, in registry order."""
    return [(v, p) for v in variants for p in variant_grid(v, s)]


# -- pricing: the one place that calls the cost model --------------------------------------

def price(grid: Sequence[tuple], shape: Shape, hardware) -> list:
    """One Estimate per (variant, params) of ``grid`` at ``shape``: ``estimate_many`` per point,
    since each prices one parameter set at many shapes and the grid has one shape."""
    return [estimate_many(v, [shape], p, hardware)[0] for v, p in grid]


# -- fidelity ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fidelity:
    """A point's fidelity: ``method`` exact (by construction), measured, interpolated or unknown
    (``reason`` says why); ``held_T``: the measured T it was held at, outside the measured T."""

    cosine: Optional[float]
    rel_error: Optional[float]
    method: str
    held_T: Optional[int] = None
    reason: Optional[str] = None


EXACT = Fidelity(1.0, 0.0, "exact")
GROUPED = ("gqa", "mqa")  # one fidelity curve, by group size


def is_exact(variant: str, params: dict, s: Shape) -> bool:
    """Exact softmax attention by construction at this shape."""
    if variant in ("mha", "flash"):
        return True
    if variant == "gqa":
        return params.get("kv_heads") == s.heads and params.get("window") is None
    if variant == "sliding_window":
        return params["window"] >= s.T
    return variant in ("linformer", "dsa") and params["k"] >= s.T


AXES = {"sliding_window": "window", "linformer": "k", "nystrom": "landmarks", "performer": "features", "dsa": "k",
        "topk": "k", "mlp_attention": "hidden", "msla": "latents"}


def axis(variant: str, params: dict, heads: int) -> tuple:
    """(curve, parameter name, value) a point's fidelity is read along: gqa and mqa share the
    curve "grouped" by heads per K/V head; a variant with no such parameter reads along T alone."""
    if variant in GROUPED:
        kv = 1 if variant == "mqa" else params.get("kv_heads") or max(1, heads // 4)
        return "grouped", "group size", heads / kv
    name = AXES.get(variant)
    return variant, name, None if name is None else params.get(name)


def _lerp_log(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    if x1 == x0:
        return y0
    w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return y0 + w * (y1 - y0)


class FidelityTable:
    """The measured fidelity of a file: curve -> T -> [(parameter value, cosine, rel error)],
    the worst over input kinds (and repeats) at each (T, value)."""

    def __init__(self, doc: FidelityDoc, causal: bool):
        worst: dict = {}
        for p in doc.points:
            nature = REGISTRY[p.variant].causal if p.variant in REGISTRY else None
            wanted = causal if nature is None else nature
            if p.status != "ok" or p.causal != wanted or (p.variant == "gqa" and p.params.get("window")):
                continue
            curve, _, x = axis(p.variant, p.params, p.heads or p.shape.heads)
            key = (curve, p.T, x)
            rel = p.rel_error_output
            old = worst.get(key)
            if old is not None:
                rel = None if rel is None or old[1] is None else max(rel, old[1])
            worst[key] = (min(p.cosine_output, old[0]) if old else p.cosine_output, rel)
        self.curves: dict = {}
        for (curve, T, x), (cos, rel) in worst.items():
            self.curves.setdefault(curve, {}).setdefault(T, []).append((x, cos, rel))
        for by_T in self.curves.values():
            for rows in by_T.values():
                rows.sort(key=lambda r: -1 if r[0] is None else r[0])

    def lookup(self, variant: str, params: dict, s: Shape) -> Fidelity:
        """The fidelity of ``variant`` with (resolved) ``params`` at ``s``."""
        if is_exact(variant, params, s):
            return EXACT
        curve, name, x = axis(variant, params, s.heads)
        by_T = self.curves.get(curve)
        if not by_T:
            return Fidelity(None, None, "unknown", reason=f"the fidelity file has no measured point of {variant}")
        Ts = sorted(by_T)
        held = Ts[0] if s.T < Ts[0] else Ts[-1] if s.T > Ts[-1] else None
        lo = max(t for t in Ts if t <= s.T) if held is None else held
        hi = min(t for t in Ts if t >= s.T) if held is None else held
        at_lo, at_hi = self._along(by_T[lo], x), self._along(by_T[hi], x)
        for T, got in ((lo, at_lo), (hi, at_hi)):
            if got is None:
                return Fidelity(None, None, "unknown", reason=_outside(variant, name, x, by_T[T], T))
        (c0, r0, m0), (c1, r1, m1) = at_lo, at_hi
        cos = _lerp_log(s.T, lo, hi, c0, c1) if held is None else c0
        rel = None if r0 is None or r1 is None else (_lerp_log(s.T, lo, hi, r0, r1) if held is None else r0)
        measured = m0 and m1 and (s.T in by_T or held is not None)
        return Fidelity(cos, rel, "measured" if measured else "interpolated", held_T=held)

    @staticmethod
    def _along(rows: list, x: Optional[float]) -> Optional[tuple]:
        """(cosine, rel error, measured exactly) at parameter ``x`` over one T's rows; None outside them."""
        if x is None or rows[0][0] is None:
            first = rows[0]
            return (first[1], first[2], True) if (x is None) == (first[0] is None) else None
        for (x0, c0, r0), (x1, c1, r1) in zip(rows, rows[1:] + rows[-1:]):
            if x0 == x:
                return c0, r0, True
            if x0 < x < x1:
                rel = None if r0 is None or r1 is None else _lerp_log(x, x0, x1, r0, r1)
                return _lerp_log(x, x0, x1, c0, c1), rel, False
        return None


def _outside(variant: str, name: Optional[str], x: Optional[float], rows: list, T: int) -> str:
    """Why a point's fidelity cannot be read from one T's measured ``rows``."""
    xs = [r[0] for r in rows if r[0] is not None]
    if x is None or not xs:
        return f"{variant}: the fidelity file measured it along another parameter at T={T}"
    return f"{variant}: {name} {x:g} is outside the measured range at T={T} ({min(xs):g} to {max(xs):g})"


UNCONSTRAINED = Fidelity(None, None, "unknown", reason="no fidelity file given")


# -- points, constraints and the front -----------------------------------------------------

@dataclass(frozen=True)
class Constraints:
    """The limits a point must meet; None: no limit. Bytes, seconds, cosine, relative error."""

    max_time: Optional[float] = None
    max_memory: Optional[float] = None
    max_kv: Optional[float] = None
    min_cosine: Optional[float] = None
    max_rel_error: Optional[float] = None

    def active(self) -> dict:
        """{constraint name: limit} of those set, in ``CONSTRAINTS`` order."""
        return {n: getattr(self, n) for n in CONSTRAINTS if getattr(self, n) is not None}


@dataclass(slots=True)
class PickPoint:
    """One (variant, parameters) of the sweep. ``params``: the values swept; ``resolved``: every
    parameter as costed. ``broken``: the constraints it breaks (an unknown fidelity breaks a
    fidelity constraint). ``status`` n/a: the variant does not apply here (``reason``)."""

    variant: str
    params: dict
    resolved: dict
    status: str
    reason: Optional[str]
    time_s: float
    memory_bytes: float
    activation_bytes: float
    kv_bytes: float
    flops: float
    fidelity: Fidelity
    broken: list = field(default_factory=list)
    on_front: bool = False

    @property
    def cosine(self) -> Optional[float]:
        return self.fidelity.cosine

    @property
    def rel_error(self) -> Optional[float]:
        return self.fidelity.rel_error

    def as_dict(self) -> dict:
        """A JSON-ready dict (stable field names)."""
        f, ok = self.fidelity, self.status == "ok"  # an n/a point has no costs (inf here): null in JSON
        costs = {k: getattr(self, k) if ok else None
                 for k in ("time_s", "memory_bytes", "activation_bytes", "kv_bytes", "flops")}
        return {"variant": self.variant, "params": self.params, "resolved": self.resolved, "status": self.status,
                "reason": self.reason, **costs,
                "cosine": f.cosine, "rel_error": f.rel_error, "fidelity_method": f.method, "fidelity_held_T": f.held_T,
                "fidelity_reason": f.reason, "broken": list(self.broken), "on_front": self.on_front}


def breaks(p: PickPoint, name: str, limit: float) -> bool:
    """Whether ``p`` breaks constraint ``name`` at ``limit`` (an unknown value breaks it)."""
    attr, upper = CONSTRAINTS[name]
    value = getattr(p, attr)
    return value is None or (value > limit if upper else value < limit)


def dominates(a: tuple, b: tuple) -> bool:
    """``a`` no worse than ``b`` in every objective (all minimised) and better in one."""
    return all(x <= y for x, y in zip(a, b)) and a != b


def pareto_front(objectives: Sequence[tuple]) -> list:
    """Indices of the objective tuples (all minimised) no other dominates; equal tuples are all
    kept. Sorted lexicographically, a point's dominators all come before it, and checking it
    against the front alone suffices (dominance is transitive): O(n x front)."""
    front: list = []
    for i in sorted(range(len(objectives)), key=lambda i: objectives[i]):
        o = objectives[i]
        if not any(dominates(objectives[j], o) for j in front):
            front.append(i)
    return front


@dataclass
class Outcome:
    """Why a variant has no point on the front: ``na`` (every point n/a: the reason),
    ``excluded_by`` (a constraint every applicable point breaks; ``closest``: the point nearest
    to meeting it), ``mixed`` (each point breaks some constraint, none all: ``broken`` counts),
    or ``dominated_by`` (the index of a front point beating its ``best`` feasible point)."""

    variant: str
    points: int
    feasible: int
    on_front: int
    broken: dict
    na: Optional[str] = None
    excluded_by: Optional[str] = None
    closest: Optional[int] = None
    best: Optional[int] = None
    dominated_by: Optional[int] = None


@dataclass
class PickResult:
    """The sweep: every point, the front (indices into ``points``, best first by ``sort``), how
    many points each constraint excluded, and each variant's outcome. ``objective``: the fidelity
    objective ("cosine", "rel_error"), None without a fidelity file."""

    shape: Shape
    constraints: Constraints
    points: list
    front: list
    excluded: dict
    outcomes: list
    objective: Optional[str]
    sort: str
    whole_model: bool = False

    @property
    def feasible(self) -> list:
        return feasible(self.points)

    def front_rows(self) -> list:
        """The front as rows to show, best first: each a list of point indices, the points of one
        variant that tie in every objective (as msla's latents do where decode is all host time)
        sharing one row."""
        rows: list = []
        for i in self.front:
            p, last = self.points[i], rows[-1] if rows else None
            q = self.points[last[0]] if last else None
            if q is not None and q.variant == p.variant and \
                    objectives(q, self.objective) == objectives(p, self.objective):
                last.append(i)
            else:
                rows.append([i])
        return rows

    def nothing_meets(self) -> Optional[tuple]:
        """With no feasible point: (constraint, index of the applicable point nearest to meeting it)
        for a constraint every applicable point breaks, else (None, None); None when some point fits."""
        if self.feasible:
            return None
        ok = [i for i, p in enumerate(self.points) if p.status == "ok"]
        for name in self.constraints.active():
            if ok and all(name in self.points[i].broken for i in ok):
                return name, _closest(self.points, ok, name)
        return None, None


def feasible(points: list) -> list:
    """Indices of the applicable points that break no constraint."""
    return [i for i, p in enumerate(points) if p.status == "ok" and not p.broken]


def _closest(points: list, idx: list, name: str) -> Optional[int]:
    attr, upper = CONSTRAINTS[name]
    known = [i for i in idx if getattr(points[i], attr) is not None]
    if not known:
        return None
    return (min if upper else max)(known, key=lambda i: getattr(points[i], attr))


def objectives(p: PickPoint, objective: Optional[str]) -> tuple:
    """(time, memory[, fidelity]) to minimise: cosine negated; an unknown fidelity is the worst."""
    base = (p.time_s, p.memory_bytes)
    if objective == "cosine":
        return base + (-p.cosine if p.cosine is not None else math.inf,)
    if objective == "rel_error":
        return base + (p.rel_error if p.rel_error is not None else math.inf,)
    return base


def _sort_key(sort: str, objective: Optional[str]) -> Callable:
    order = {"time": (0, 1, 2), "memory": (1, 0, 2), "fidelity": (2, 0, 1)}[sort]
    return lambda p: tuple(objectives(p, objective)[k] for k in order if k < (3 if objective else 2))


def make_point(e, params: dict, fid: Fidelity, memory: Optional[float] = None) -> PickPoint:
    """A PickPoint from an Estimate (``memory``: a whole model's, replacing the layer's)."""
    if e.status != "ok":
        return PickPoint(e.variant, params, {}, e.status, e.reason, math.inf, math.inf, math.inf, math.inf, math.inf,
                         fid)
    act, kv = e.activation_bytes_fused, e.kv_cache_bytes
    return PickPoint(e.variant, params, dict(e.params), "ok", None, e.time_s, act + kv if memory is None else memory,
                     act, kv, e.flops, fid)


def not_causal(variant: str, params: dict) -> PickPoint:
    """A point of a variant that is not causal by nature, in a causal sweep: n/a, unpriced."""
    return PickPoint(variant, params, {}, "n/a", f"{variant} is not causal: it mixes future tokens (--no-causal "
                     f"sweeps it)", math.inf, math.inf, math.inf, math.inf, math.inf, UNCONSTRAINED)


def pick(shape: Shape, hardware, constraints: Constraints = Constraints(), *, variants: Sequence[str] = NAMES,
         fidelity: Optional[FidelityDoc] = None, grid: Optional[Sequence[tuple]] = None,
         model_memory: Optional[Callable[[str, dict], float]] = None, sort: str = "time") -> PickResult:
    """Sweep ``grid`` (default: ``sweep_grid(shape, variants)``) at ``shape`` on ``hardware``, apply
    ``constraints`` and return the front. A causal sweep leaves out the variants that are not causal
    by nature (linformer, nystrom: n/a). ``fidelity``: an `attncost fidelity` document (without
    one, fidelity is unknown, neither an objective nor usable as a constraint).
    ``model_memory(variant, params)``: a whole model's memory, which then replaces the layer's."""
    grid = list(sweep_grid(shape, variants) if grid is None else grid)
    objective = None if fidelity is None else (
        "rel_error" if constraints.max_rel_error is not None and constraints.min_cosine is None else "cosine")
    table = None if fidelity is None else FidelityTable(fidelity, shape.causal)
    skipped = [shape.causal and REGISTRY[v].causal is False for v, _ in grid]
    priced = iter(price([vp for vp, skip in zip(grid, skipped) if not skip], shape, hardware))
    points = []
    for (v, params), skip in zip(grid, skipped):
        if skip:
            points.append(not_causal(v, params))
            continue
        e = next(priced)
        fid = UNCONSTRAINED if table is None or e.status != "ok" else table.lookup(v, e.params, shape)
        mem = model_memory(v, params) if model_memory is not None and e.status == "ok" else None
        points.append(make_point(e, params, fid, mem))
    excluded = _apply(points, constraints)
    fits = feasible(points)
    front = [fits[k] for k in pareto_front([objectives(points[i], objective) for i in fits])]
    key = _sort_key(sort, objective)
    front.sort(key=lambda i: key(points[i]))
    for i in front:
        points[i].on_front = True
    outcomes = _outcomes(points, front, objective, key)
    return PickResult(shape, constraints, points, front, excluded, outcomes, objective, sort, model_memory is not None)


def _apply(points: list, constraints: Constraints) -> dict:
    """Mark each point's broken constraints; {constraint: points breaking it}."""
    limits = constraints.active()
    counts = dict.fromkeys(limits, 0)
    for p in points:
        if p.status != "ok":
            continue
        p.broken = [n for n, limit in limits.items() if breaks(p, n, limit)]
        for n in p.broken:
            counts[n] += 1
    return counts


def _outcomes(points: list, front: list, objective: Optional[str], key: Callable) -> list:
    """Each variant of the sweep: its counts and, where it has no point on the front, why."""
    by_variant: dict = {}
    for i, p in enumerate(points):
        by_variant.setdefault(p.variant, []).append(i)
    out = []
    for v, idx in by_variant.items():
        ok = [i for i in idx if points[i].status == "ok"]
        fits = [i for i in ok if not points[i].broken]
        broken = dict(Counter(n for i in ok for n in points[i].broken))
        o = Outcome(v, len(idx), len(fits), sum(points[i].on_front for i in idx), broken)
        if o.on_front:
            pass
        elif not ok:
            o.na = points[idx[0]].reason
        elif fits:
            o.best = min(fits, key=lambda i: key(points[i]))
            best = objectives(points[o.best], objective)
            o.dominated_by = next((j for j in front if dominates(objectives(points[j], objective), best)), None)
        else:
            o.excluded_by = next((n for n, c in broken.items() if c == len(ok)), None)
            if o.excluded_by is not None:
                o.closest = _closest(points, ok, o.excluded_by)
        out.append(o)
    return out
