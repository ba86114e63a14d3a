"""estimate_many prices a variant at many shapes at once (traced, replayed on arrays) and gives
exactly the Estimates of estimate() point by point, field by field."""

import random

import pytest

from attncost.costmodel.estimate import estimate, estimate_many
from attncost.costmodel.hardware import TopkPaths, get_hardware
from attncost.costmodel.shape import Shape
from attncost.costmodel.tape import choose, trace
from attncost.costmodel.variants import REGISTRY, VariantError

PARAMS = {"gqa": [None, {"kv_heads": 2}, {"window": 64, "kernel": "masked"}], "sliding_window": [None, {"window": 40}],
          "linformer": [None, {"k": 32}], "nystrom": [None, {"landmarks": 16, "pinv_iters": 2}],
          "performer": [None, {"features": 32, "chunk": 24}], "topk": [None, {"k": 4, "hidden": 16}],
          "msla": [None, {"latents": 16, "k": 2, "c_proj": False}], "mla": [None, {"kv_lora_rank": 64, "rope_dim": 0}],
          "dsa": [{"index_heads": 2, "index_dim": 16, "k": 24}]}


def _rowwise_cpu():
    """A profile that takes every timing branch: row terms, a cache, fresh pages, a synchronous host, and a
    topk by the path of PyTorch's CPU kernel, fused attention calls of fewer items than threads."""
    return get_hardware("cpu").model_copy(update=dict(
        cache_bytes=2e6, dram_eff=0.5, fresh_bytes=2.0**20, fresh_s_per_byte=1e-11, topk_select_s=1e-9,
        vector_row_s={"softmax": 1e-9, "topk": 2e-9, "reduction": 5e-10}, host_sync=True,
        topk_paths=TopkPaths(latency_s=1.5e-5, scan_s=1e-9, heap_s=4e-9, select_s=5e-9, sort_s=3e-9),
        threads=4, attention_speedup=3.0))


def _groups(rng: random.Random, count: int) -> list:
    hardware = [None, get_hardware("h100"), get_hardware("a100"), _rowwise_cpu()]
    out = []
    for _ in range(count):
        name = rng.choice(list(REGISTRY))
        phases = ["prefill", "train"] + (["decode"] if REGISTRY[name].decode else [])
        out.append((name, rng.choice(phases), rng.choice(PARAMS.get(name, [None])), rng.choice(hardware),
                    rng.choice(["bf16", "fp32"]), rng.random() < 0.8))
    return out


def _shapes(rng: random.Random, phase: str, dtype: str, causal: bool, n: int) -> list:
    out = []
    for _ in range(n):
        heads = rng.choice([1, 2, 4, 8])
        d = heads * rng.choice([8, 16, 32, 64])
        kv = rng.choice([None, None, 1, heads])
        out.append(Shape(T=rng.choice([1, 2, 5, 16, 33, 64, 100, 128, 200, 256, 513, 1024]), d=d, heads=heads,
                         kv_heads=kv, batch=rng.choice([1, 1, 2, 3]), phase=phase, dtype=dtype, causal=causal))
    return out


def _assert_same(many: list, one: list) -> None:
    assert len(many) == len(one)
    for a, b in zip(many, one):
        for f in a.__slots__:
            assert getattr(a, f) == getattr(b, f), (a.variant, a.shape, f, getattr(a, f), getattr(b, f))
            assert type(getattr(a, f)) is type(getattr(b, f)) or f == "params", (a.variant, f)


def test_estimate_many_equals_estimate_at_1000_random_points():
    rng = random.Random(16)
    for name, phase, params, hw, dtype, causal in _groups(rng, 20):
        shapes = _shapes(rng, phase, dtype, causal, 50)
        one = [estimate(name, s, params, hw) for s in shapes]
        _assert_same(estimate_many(name, shapes, params, hw), one)


def test_a_sweep_over_T_reuses_its_programs_and_stays_exact():
    hw = get_hardware("h100")
    shapes = [Shape(T=T, d=512, heads=8, batch=b, phase=ph) for T in range(1, 600, 7) for b in (1, 4)
              for ph in ("prefill", "decode")]
    _assert_same(estimate_many("flash", shapes, None, hw), [estimate("flash", s, None, hw) for s in shapes])
    # a few points, priced by the programs kept from the call above
    few = shapes[:3]
    _assert_same(estimate_many("flash", few, None, hw), [estimate("flash", s, None, hw) for s in few])


def test_integers_beyond_float64_are_priced_exactly():
    shapes = [Shape(T=2**22, d=2**16, heads=64, batch=2**10)] * 30 + [Shape(T=4096, d=1024)] * 30
    _assert_same(estimate_many("mha", shapes), [estimate("mha", s) for s in shapes])


def test_n_a_points_and_errors_as_estimate():
    shapes = [Shape(T=T, d=256, heads=4) for T in (8, 16, 300, 1000)] * 10
    _assert_same(estimate_many("linformer", shapes, {"k": 256}), [estimate("linformer", s, {"k": 256}) for s in shapes])
    with pytest.raises(VariantError):
        estimate_many("nope", shapes)
    with pytest.raises(ValueError):
        estimate_many("gqa", shapes, {"kv_heads": 0})
    assert estimate_many("nope", []) == []


def test_a_trace_replays_the_same_values():
    def f(a, b):
        return [choose(a > b, a - b, b // 3) * 1.5, 7 if a % 2 else 8]

    tape, out = trace(f, {"a": 10, "b": 4})
    program = tape.program(out)
    assert program.scalar((10, 4)) == f(10, 4) == [9.0, 8]
    assert program.scalar((11, 4)) is None  # a % 2 decided the structure: another program
    assert program.scalar((4, 5)) == [1.5, 8]


def test_small_batches_replay_compiled_programs(monkeypatch):
    """Past the points a key prices one by one, batches too small for arrays replay the compiled
    program point by point: the same Estimates."""
    import attncost.costmodel.estimate as E

    monkeypatch.setattr(E, "ONE_BY_ONE", 0)
    rng, hw = random.Random(5), _rowwise_cpu()
    for name, phase, params in (("flash", "train", None), ("performer", "prefill", {"features": 32, "chunk": 24}),
                                ("linformer", "prefill", {"k": 32})):
        shapes = _shapes(rng, phase, "bf16", True, 12)
        for few in (shapes[:4], shapes[4:8], shapes[8:]):
            _assert_same(estimate_many(name, few, params, hw), [estimate(name, s, params, hw) for s in few])


def test_larger_smaller_and_plus_replay_as_plain_python():
    """larger/smaller are one step each, give the second argument where they tie (as
    ``a if a > b else b``), and replay on numbers and arrays as plain Python computes them; plus
    records no step for a plain zero (exact for a total that is never -0.0)."""
    import math

    import numpy as np

    from attncost.costmodel.tape import larger, plus, smaller

    def f(a, b):
        return [larger(a, b), smaller(a, b), plus(plus(abs(a), 0.0), b), larger(a * 0.0, -0.0 * b)]

    tape, out = trace(f, {"a": 3.0, "b": 5.0})
    program = tape.program(out)
    assert [tape.steps[i][0] for i in program.live].count("add") == 1  # plus(a, 0.0) is a itself
    points = [(3.0, 5.0), (5.0, 3.0), (4.0, 4.0), (0.0, -0.0), (-0.0, 0.0), (2.5, -1.0)]
    for a, b in points:
        want = f(a, b)
        got = program.scalar((a, b))
        assert got == want and [math.copysign(1, x) for x in got] == [math.copysign(1, x) for x in want]
    exact, vec = program.vector(tuple(np.array(c) for c in zip(*points)))
    for lane, (a, b) in enumerate(points):
        want = f(a, b)
        got = [float(v[lane]) for v in vec]
        assert got == want and [math.copysign(1, x) for x in got] == [math.copysign(1, x) for x in want]


def test_whole_dsa_blocks_share_their_row_count():
    """Every whole block of DSA's queries has the block size itself as its row count, so that a
    traced graph records the costs of like blocks once (the fast path's steps do not grow by a
    block's ops for each block)."""
    from attncost.costmodel.tape import Tape
    from attncost.costmodel.variants.latent import _split_blocks

    tape = Tape(("T", "chunk"))
    T, chunk = tape.input("T", 4096), tape.input("chunk", 256)
    blocks = _split_blocks(T, chunk, 600)
    assert len(blocks) == 16 and all(rows is chunk for rows, _, _ in blocks[:-1])
    assert [(rows.v, before if isinstance(before, int) else before.v, after if isinstance(after, int) else after.v)
            for rows, before, after in blocks[1:4]] == [(256, 256, 0), (256, 88, 168), (256, 0, 256)]
    assert blocks[3][2] is chunk


def test_a_replay_on_arrays_keeps_only_what_is_read_after_it():
    """A plan lets go of each intermediate array after its last use (a program of thousands of steps
    would otherwise hold them all, in fresh memory): after a run only the outputs and the integer
    steps (read for the exactness check) remain, and the values are those of the scalar run."""
    import numpy as np

    def f(a, b):
        c = a * b + 1
        d = (c - a) / 3.0
        return [d * d, c // 2]

    tape, out = trace(f, {"a": 7, "b": 5})
    program = tape.program(out)
    lanes = (np.array([7.0, 2.0, 9.0]), np.array([5.0, 3.0, 4.0]))
    values = program.plan.run(lanes)
    held = {i for i, v in enumerate(values[:len(tape.steps)]) if v is not None and tape.steps[i][0] != "in"}
    assert held == set(program.out_steps) | set(program.ints)
    assert held < {i for i in program.live if tape.steps[i][0] != "in"}  # (c - a) and d were let go
    exact, got = program.vector(lanes)
    want = [f(int(a), int(b)) for a, b in zip(*lanes)]
    assert exact.all() and [[float(x) for x in g] for g in got] == [list(col) for col in zip(*want)]


def test_the_cycle_collector_is_left_as_it_was():
    """A batch pauses Python's cycle collector and moves its young objects to the oldest generation:
    after it the collector runs again (or stays off, if it was), nothing is left frozen, and garbage
    made before the batch is still collected."""
    import gc
    import weakref

    class Cycle:
        pass

    shapes = [Shape(T=T, d=256, heads=4) for T in range(64, 64 + 40 * 8, 8)]
    junk = Cycle()
    junk.me = junk
    gone = weakref.ref(junk)
    del junk
    assert gc.isenabled()
    estimate_many("flash", shapes)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None
    gc.disable()
    try:
        estimate_many("flash", shapes)
        assert not gc.isenabled()
    finally:
        gc.enable()
