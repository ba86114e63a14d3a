"""The search over T finds every range where a variant is cheaper than the baseline, and agrees
with the estimates at every T of a sweep."""

import json
import math
import random

import pytest
from typer.testing import CliRunner

from attncost.cli.main import app
from attncost.costmodel.crossover import OCTAVE_SAMPLES, REL_EQUAL, REL_TOL, cheaper, cheaper_ranges, metric_values
from attncost.costmodel.estimate import estimate
from attncost.costmodel.evaluate import evaluate
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.shape import Shape
from attncost.costmodel.variants import NAMES

S = Shape(T=4096, d=1024, heads=16)
HW = get_hardware("h100")


def is_cheaper(variant, T, metric, base="flash", shape=S):
    s = shape.model_copy(update={"T": T})
    v, b = metric_values(estimate(variant, s, None, HW)), metric_values(estimate(base, s, None, HW))
    return cheaper(v[metric], b[metric])


def crossovers(variant, shape=S):
    """(first T where cheaper, first T after it where no longer) per metric, as `predict --json` has them."""
    (e,) = evaluate([variant], "flash", [shape], hardware=HW)
    return e.crossover_T, e.cheaper_until_T


def inside(T, ranges) -> bool:
    return any(a <= T and (b is None or T < b) for a, b in ranges)


def predict_json(*args):
    r = CliRunner().invoke(app, ["predict", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.mark.parametrize("variant", ["linformer", "nystrom", "performer", "sliding_window"])
@pytest.mark.parametrize("metric", ["flops", "time"])
def test_crossover_is_where_it_flips(variant, metric):
    start, end = crossovers(variant)
    T = start[metric]
    assert T is not None
    assert is_cheaper(variant, T, metric)
    below = int(T - max(1, T * REL_TOL)) - 1
    assert not is_cheaper(variant, below, metric), (variant, metric, T)


def test_never_means_never_at_any_power_of_two():
    """The math path never needs fewer FLOPs nor less time than the fused kernel. (Its memory is
    lower at tiny T only: the fused kernel writes a log-sum-exp per head and query.)"""
    start, end = crossovers("mha")
    assert start["flops"] is None and start["time"] is None
    assert not any(is_cheaper("mha", 2**k, "flops") for k in range(4, 23))
    assert not any(is_cheaper("mha", 2**k, "time") for k in range(4, 23))


def test_a_range_that_closes():
    """mlp_attention has fewer FLOPs than flash at small T (no Q/K projections) and more at large T."""
    start, end = crossovers("mlp_attention")
    assert start["flops"] == 16 and end["flops"] is not None
    assert is_cheaper("mlp_attention", int(end["flops"] - max(1, end["flops"] * REL_TOL)) - 1, "flops")
    assert not is_cheaper("mlp_attention", end["flops"], "flops")


def test_equal_within_rounding_is_not_cheaper():
    assert not cheaper(1.0, 1.0 + 1e-15) and not cheaper(1.0, 1.0)
    assert cheaper(1.0, 1.0 + 10 * REL_EQUAL) and not cheaper(None, 1.0)


def test_a_host_bound_tie_is_not_faster():
    """gqa and flash issue the same kernels at small T: host-bound, their times differ by float
    rounding only. The first range where gqa is faster must be the one its row shows at T 8192."""
    data = predict_json("--d", "1024", "--T", "8192", "--batch", "4", "--variants", "flash,gqa")
    flash, gqa = data["results"]
    assert gqa["time_s"] < flash["time_s"]
    start, end = gqa["crossover_T"]["time"], gqa["cheaper_until_T"]["time"]
    assert start is not None and start <= 8192 and (end is None or end > 8192), (start, end)
    assert start > 64  # host-bound below: a tie
    assert "crossover_d" not in gqa


def test_a_narrow_range_between_powers_of_two_is_found():
    """At d 4096, mlp_attention is faster than flash only from about T 589 to 800: between the
    powers of two 512 and 1024, where it is slower."""
    data = predict_json("--d", "4096", "--T", "700", "--variants", "flash,mlp_attention")
    flash, mlp = data["results"]
    assert mlp["time_s"] < flash["time_s"]
    start, end = mlp["crossover_T"]["time"], mlp["cheaper_until_T"]["time"]
    assert start is not None and start <= 700 < end, (start, end)
    assert not is_cheaper("mlp_attention", 512, "time", shape=Shape(T=512, d=4096))
    assert not is_cheaper("mlp_attention", 1024, "time", shape=Shape(T=1024, d=4096))


def test_the_search_goes_on_after_a_range_closes():
    """dsa's indexer makes it cost more FLOPs than flash at middle T; at small and at large T it
    costs fewer: two ranges."""
    shape = Shape(T=4096, d=4096, heads=32, phase="train")
    (e,) = evaluate(["dsa"], "flash", [shape], hardware=HW, metrics=("flops",))
    (first, second) = e.cheaper_ranges_T["flops"]
    assert first[0] == 16 and first[1] < second[0] and second[1] is None
    assert e.crossover_T["flops"] == 16 and e.cheaper_until_T["flops"] == first[1]
    assert is_cheaper("dsa", second[0], "flops", shape=shape)
    assert not is_cheaper("dsa", int(second[0] * (1 - REL_TOL)) - 1, "flops", shape=shape)
    assert not is_cheaper("dsa", first[1], "flops", shape=shape)


def test_every_range_wider_than_an_eighth_of_an_octave_is_found():
    """Synthetic costs: equal everywhere (a tie) but for one dip, placed off the powers of two."""
    base = lambda T: {"time": 1e-4 * (1 + T / 1e5)}  # noqa: E731
    for lo in (100, 3000, 45000, 700000):
        hi = math.ceil(lo * 2 ** (1.05 / OCTAVE_SAMPLES))
        dip = lambda T, lo=lo, hi=hi: {"time": base(T)["time"] * (0.99 if lo <= T < hi else 1.0)}  # noqa: E731
        ranges = cheaper_ranges(dip, base, ("time",))["time"]
        assert len(ranges) == 1, (lo, ranges)
        (a, b), = ranges
        assert abs(a - lo) <= max(1, lo * REL_TOL) and abs(b - hi) <= max(1, hi * REL_TOL), (lo, hi, a, b)


def test_a_T_of_the_sweep_is_always_a_sample():
    """A dip narrower than the sampling step is still found where the sweep asks for a T inside it."""
    base = lambda T: {"time": 1.0}  # noqa: E731
    dip = lambda T: {"time": 0.5 if 1000 <= T < 1004 else 1.0}  # noqa: E731
    assert cheaper_ranges(dip, base, ("time",), Ts=(1002,))["time"] == [(1000, 1004)]


@pytest.mark.parametrize("args", [
    ["--d", "1024", "--batch", "4", "--T", "60,64,100,1000,1012,4096,8192,70000"],
    ["--d", "4096", "--T", "256,514,700,1000,1011,1012,2048"],
    ["--d", "512", "--heads", "8", "--phase", "decode", "--T", "16,300,5000,65536"],
])
def test_ranges_agree_with_the_rows_at_every_T_of_the_sweep(args):
    data = predict_json(*args)
    base = {r["shape"]["T"]: r for r in data["results"] if r["variant"] == "flash"}
    checked = 0
    for r in data["results"]:
        if r["status"] != "ok" or r["variant"] == "flash":
            continue
        b = base[r["shape"]["T"]]
        for metric, key in (("time", "time_s"), ("flops", "flops")):
            said = inside(r["shape"]["T"], r["cheaper_ranges_T"][metric])
            assert said == cheaper(r[key], b[key]), (r["variant"], r["shape"]["T"], metric)
            checked += 1
    assert checked > 20


def test_ranges_agree_with_the_model_between_the_samples():
    """At random T (none of them a sample), the ranges say what the estimates say, except within
    the bisection's tolerance of a boundary."""
    rng = random.Random(9)
    shape = Shape(T=4096, d=2048, heads=32, batch=2)
    rows = evaluate(list(NAMES), "flash", [shape], hardware=HW, metrics=("time",))
    for T in sorted({int(2 ** rng.uniform(4, 22)) for _ in range(12)}):
        at = shape.model_copy(update={"T": T})
        b = estimate("flash", at, None, HW).time_s
        for e in rows:
            ranges = e.cheaper_ranges_T["time"] if e.cheaper_ranges_T else []
            near = any(x and abs(T - x) <= max(1, x * REL_TOL) + 1 for r in ranges for x in r)
            if not near:
                assert inside(T, ranges) == cheaper(estimate(e.variant, at, None, HW).time_s, b), (e.variant, T)


def test_crossovers_are_searched_once_per_shape_of_a_sweep(monkeypatch):
    import attncost.costmodel.evaluate as ev

    calls = []
    search = ev.search
    monkeypatch.setattr(ev, "search", lambda *a, **k: calls.append(1) or search(*a, **k))
    shapes = [Shape(T=T, d=d, heads=8) for d in (512, 1024) for T in (256, 1024, 4096)]
    rows = evaluate(["flash", "linformer", "gqa"], "flash", shapes, hardware=HW, metrics=("time",))
    assert len(rows) == 18 and len(calls) == 4  # (linformer, gqa) x two widths; flash against itself: never
    assert all(r.baseline == "flash" for r in rows if r.status == "ok")
    assert [r.cheaper_ranges_T for r in rows if r.variant == "flash"] == [{"time": []}] * 6


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="metrics"):
        evaluate(["gqa"], "flash", [S], hardware=None, metrics=("time",))


def test_evaluate_equals_the_search_point_by_point():
    """evaluate runs the searches of a sweep side by side and prices what they ask for in batches
    (estimate_many); the rows and ranges are those of each search run on estimate() one T at a time."""
    rests, Ts = [Shape(T=1, d=256, heads=4, batch=2), Shape(T=1, d=128, heads=4, phase="decode")], (100, 2048)
    names, params = ["flash", "performer", "linformer"], {"linformer": {"k": 128}}
    rows = evaluate(names, "flash", [r.model_copy(update={"T": T}) for r in rests for T in Ts], params, HW,
                    ("flops", "time"))

    def at(name, rest):
        return lambda T: metric_values(estimate(name, rest.model_copy(update={"T": T}), params.get(name), HW))

    for row in rows:
        e = estimate(row.variant, row.shape, params.get(row.variant), HW)
        if e.status != "ok":  # linformer's k above T, or in decode
            assert row == e
            continue
        rest = row.shape.model_copy(update={"T": 1})
        ranges = {m: [] for m in ("flops", "time")} if row.variant == "flash" else cheaper_ranges(
            at(row.variant, rest), at("flash", rest), ("flops", "time"), Ts)
        assert row.cheaper_ranges_T == {m: [list(r) for r in rs] for m, rs in ranges.items()}, row.variant
        assert [getattr(row, f) for f in e.__slots__ if not f.endswith("_T") and f != "baseline"] == [
            getattr(e, f) for f in e.__slots__ if not f.endswith("_T") and f != "baseline"]
