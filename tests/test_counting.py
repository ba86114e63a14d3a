"""The analytic FLOP counts agree with fvcore (attncost's handles) and FlopCounterMode on the real
modules: matmul FLOPs exactly for every variant, totals exactly, FlopCounterMode exactly on the
matmuls it counts (dense, its own SDPA convention)."""

import pytest
import torch

from attncost.costmodel.estimate import estimate, graph, resolve_params
from attncost.costmodel.results import Counts
from attncost.costmodel.shape import Shape
from attncost.costmodel.units import ELEMENT_FLOPS
from attncost.costmodel.variants import REGISTRY
from attncost.profiler import counting
from attncost.profiler.counting import (analytic_counts, classify_mask, count, count_detailed, crosscheck,
                                        fn_categories)
from attncost.profiler.modules import build_module

# (batch, T, d, heads, phase, causal): vary every field; T not a multiple of chunks / landmarks
SHAPES = [
    (1, 64, 64, 4, "prefill", True),
    (2, 37, 48, 3, "prefill", True),
    (1, 50, 64, 2, "prefill", False),
    (2, 33, 64, 4, "decode", True),
    (3, 16, 32, 8, "decode", True),
]
PARAMS = {
    "sliding_window": {"window": 8},
    "dsa": {"k": 16, "index_heads": 4, "index_dim": 8},
    "linformer": {"k": 16},
    "nystrom": {"landmarks": 8, "conv_kernel": 5},
    "performer": {"features": 32, "chunk": 16},
    "topk": {"k": 4},
    "msla": {"latents": 16, "k": 4},
}
# parameter corners: no Q latent / no RoPE, odd RoPE, every key kept (DSA = MLA), a window wider
# than T, an even convolution, uneven landmarks, one chunk, no c_proj, explicit kv_heads
EXTRA = [
    ("mla", {"q_lora_rank": 0, "rope_dim": 0}),
    ("mla", {"rope_dim": 3, "kv_lora_rank": 24}),
    ("dsa", {"k": 64, "index_heads": 2, "index_dim": 4}),
    ("sliding_window", {"window": 100}),
    ("nystrom", {"landmarks": 5, "conv_kernel": 4, "pinv_iters": 2}),
    ("nystrom", {"landmarks": 8, "conv_kernel": 0}),
    ("performer", {"features": 16, "chunk": 64}),
    ("msla", {"latents": 8, "k": 8, "c_proj": False}),
    ("gqa", {"kv_heads": 2}),
    ("topk", {"k": 1, "hidden": 3}),
]
CASES = [(v, PARAMS.get(v), s) for v in REGISTRY for s in SHAPES]
CASES += [(v, p, s) for v, p in EXTRA for s in SHAPES]


def _shape(b, T, d, H, phase, causal):
    return Shape(batch=b, T=T, d=d, heads=H, phase=phase, causal=causal, dtype="fp32")


def _id(case):
    v, p, s = case
    ps = "-".join(f"{k}{x}" for k, x in (p or {}).items())
    return f"{v}-{ps}-B{s[0]}T{s[1]}d{s[2]}H{s[3]}-{s[4]}{'' if s[5] else '-nc'}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_analytic_equals_fvcore_and_flop_counter(case):
    variant, params, fields = case
    s = _shape(*fields)
    r = crosscheck(variant, s, params)
    e = estimate(variant, s, params)
    if e.status == "n/a":  # no decode path, or parameters that do not fit (kv_heads=2, heads=3)
        assert r.status == "n/a" and r.reason == e.reason
        assert REGISTRY[variant].decode or "no decode path" in r.reason
        return
    assert r.status == "ok", r.reason
    # matmul FLOPs: exactly (fvcore's MACs x 2)
    assert r.fvcore_matmul == pytest.approx(r.analytic_matmul, rel=1e-12), r.differences
    assert r.matmul_match
    # every op has a handle: nothing skipped, and the totals agree too, category by category
    assert r.fvcore_skipped == {}
    assert r.fvcore == pytest.approx(r.analytic, rel=1e-12), r.differences
    assert r.differences == []
    # FlopCounterMode: the same matmuls, with fused attention counted dense (its convention)
    assert r.flop_counter == pytest.approx(r.analytic_matmul_dense, rel=1e-12)
    fused_causal = any(op.fraction != 1.0 for op in graph(variant, s, resolve_params(variant, s, params)).ops)
    if not fused_causal:
        assert r.flop_counter == pytest.approx(r.analytic_matmul, rel=1e-12)
    # and the cost model's own estimate is what the check compared with
    assert e.flops == pytest.approx(r.analytic, rel=1e-12)
    assert e.flops_matmul == pytest.approx(r.analytic_matmul, rel=1e-12)


@pytest.mark.parametrize("backend", ["math", "auto"])
@pytest.mark.parametrize("variant", ["flash", "gqa", "sliding_window", "mla", "linformer"])
def test_sdpa_backend_does_not_change_counts(variant, backend):
    """fvcore sees one aten::scaled_dot_product_attention whatever the backend; FlopCounterMode sees
    the math path's bmm ops or the fused kernel (with attncost's formula on CPU): both dense."""
    s = _shape(2, 24, 32, 4, "prefill", True)
    r = crosscheck(variant, s, PARAMS.get(variant) if variant != "linformer" else {"k": 8}, backend=backend)
    assert r.status == "ok" and r.matmul_match and r.total_match, r.differences
    assert r.flop_counter == pytest.approx(r.analytic_matmul_dense, rel=1e-12)


def test_causal_fused_is_half_the_dense_core():
    s = _shape(1, 64, 64, 4, "prefill", True)
    mha, flash = crosscheck("mha", s), crosscheck("flash", s)
    core = 2 * 2 * 4 * 64 * 64 * 16  # QK^T and AV, dense
    assert mha.fvcore_matmul - flash.fvcore_matmul == pytest.approx(core / 2)
    assert flash.flop_counter == pytest.approx(mha.flop_counter)  # FlopCounterMode: dense both
    assert any("dense" in n for n in flash.notes)


def test_sliding_window_band_pairs():
    """A band of width w over T queries: T*w - w^2/2 pairs per head (the cost model's convention)."""
    T, w, H, dh = 40, 8, 4, 16
    s = _shape(1, T, H * dh, H, "prefill", True)
    r = crosscheck("sliding_window", s, {"window": w})
    proj = 4 * 2 * T * (H * dh) ** 2
    assert r.fvcore_matmul - proj == pytest.approx(2 * 2 * H * (T * w - w * w / 2) * dh)


def test_count_fills_analytic_from_the_module():
    s = _shape(2, 24, 32, 4, "prefill", True)
    module, inputs = build_module("performer", s, {"features": 8, "chunk": 8}, "cpu", torch.float32)
    c = count(module, inputs)
    assert isinstance(c, Counts)
    a = analytic_counts(module.graph)
    assert c.analytic == pytest.approx(a.flops) and c.analytic_matmul == pytest.approx(a.matmul)
    assert c.fvcore == pytest.approx(c.analytic, rel=1e-12)
    assert c.fvcore_skipped == {}
    assert "aten.exp" in c.flop_counter_skipped  # FlopCounterMode counts no element-wise op


def test_train_counts_backward_with_flop_counter():
    s = _shape(1, 16, 32, 4, "train", True)
    module, inputs = build_module("mha", s, None, "cpu", torch.float32)
    c = count(module, inputs)
    fwd = estimate("mha", s.with_(phase="prefill")).flops_matmul
    assert c.flop_counter == pytest.approx(3 * fwd)  # each matmul: forward + two gradients
    assert c.analytic_matmul == pytest.approx(3 * fwd)
    assert c.fvcore is None and c.fvcore_skipped  # fvcore traces the forward only: said, not hidden
    assert all(p.grad is None for p in module.parameters())  # counting leaves no gradients behind


def test_without_handles_fvcore_skips_and_miscounts():
    """What attncost's handles fix: fvcore alone skips SDPA and softmax, and counts masked_fill 0."""
    s = _shape(1, 32, 32, 4, "prefill", True)
    FlopCountAnalysis = counting._import_fvcore()
    for variant, op in (("flash", "aten::scaled_dot_product_attention"), ("mha", "aten::softmax")):
        module, inputs = build_module(variant, s, None, "cpu", torch.float32)
        fa = FlopCountAnalysis(module, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            by_op = fa.by_operator()
        assert op in fa.unsupported_ops()
        assert "masked_fill" not in by_op and "softmax" not in by_op


def test_every_element_function_has_a_category_that_sums_to_it():
    for fn in ELEMENT_FLOPS:
        cats = fn_categories(fn)
        assert "other" not in cats, fn
        assert sum(cats.values()) == pytest.approx(1.0)


def test_matmul_handle_broadcasts_exactly():
    # (k, T) @ (B, T, d): fvcore's own handle counts k*T*d, missing the batch
    assert counting._mm_macs([8, 16], [3, 16, 32]) == 3 * 8 * 16 * 32
    assert counting._mm_macs([2, 4, 5, 6], [6, 7]) == 2 * 4 * 5 * 6 * 7
    assert counting._mm_macs([6], [6, 7]) == 6 * 7
    assert counting._mm_macs([2, 1, 5, 6], [1, 3, 6, 7]) == 2 * 3 * 5 * 6 * 7


def test_einsum_handle_is_exact():
    """fvcore rounds einsum through numpy's einsum_path (2,097,000 for 2,097,152); ours does not."""

    class E(torch.nn.Module):
        def forward(self, a, b):
            return torch.einsum("bhtd,bhsd->bhts", a, b)

    a, b = torch.randn(2, 4, 64, 64), torch.randn(2, 4, 64, 64)
    d = count_detailed(E(), (a, b))
    assert d.fvcore_by_op["einsum"] == 2 * 2 * 4 * 64 * 64 * 64


def test_classify_mask():
    i = torch.arange(10)
    band = (i[None] <= i[:, None]) & (i[None] > i[:, None] - 3)
    assert classify_mask(band) == ("band", 3)
    assert classify_mask(torch.ones(10, 10, dtype=torch.bool).tril()) == ("band", 10)
    assert classify_mask(torch.ones(4, 6, dtype=torch.bool)) == ("pairs", 24.0)
    odd = band.clone()
    odd[0, 5] = True
    assert classify_mask(odd) == ("pairs", float(band.sum() + 1))


def test_unsupported_ops_are_reported_not_hidden():
    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(x) @ x

    d = count_detailed(Odd(), (torch.randn(4, 4),))
    assert d.fvcore_skipped == {"aten::sigmoid": 1}
    assert "aten.sigmoid" in d.flop_counter_skipped
