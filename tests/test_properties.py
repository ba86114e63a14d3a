"""Properties of the cost model that must hold at every shape (hypothesis)."""


from hypothesis import given, settings
from hypothesis import strategies as st

from attncost.costmodel.estimate import estimate
from attncost.costmodel.shape import Shape
from attncost.costmodel.variants import NAMES

heads_st = st.sampled_from([1, 2, 4, 8])
dh_st = st.sampled_from([8, 16, 32, 64])
T_st = st.integers(min_value=64, max_value=4096)
phase_st = st.sampled_from(["prefill", "decode", "train"])


def shape(T, heads, dh, **kw):
    return Shape(T=T, d=heads * dh, heads=heads, **kw)


@settings(max_examples=40, deadline=None)
@given(T=T_st, heads=heads_st, dh=dh_st, causal=st.booleans())
def test_exact_attention_core_grows_as_T_squared(T, heads, dh, causal):
    for name in ("mha", "flash"):
        a = estimate(name, shape(T, heads, dh, causal=causal)).flops_core
        b = estimate(name, shape(2 * T, heads, dh, causal=causal)).flops_core
        assert b == 4 * a


@settings(max_examples=40, deadline=None)
@given(T=st.integers(min_value=256, max_value=4096), heads=heads_st, dh=dh_st, causal=st.booleans())
def test_linformer_and_performer_cores_grow_as_T(T, heads, dh, causal):
    T -= T % 64  # whole chunks for the causal Performer
    a = estimate("linformer", shape(T, heads, dh)).flops_core
    assert estimate("linformer", shape(2 * T, heads, dh)).flops_core == 2 * a
    a = estimate("performer", shape(T, heads, dh, causal=causal)).flops_core
    assert estimate("performer", shape(2 * T, heads, dh, causal=causal)).flops_core == 2 * a


@settings(max_examples=25, deadline=None)
@given(T=T_st, heads=heads_st, dh=dh_st, phase=phase_st, batch=st.integers(1, 4))
def test_doubling_batch_doubles_flops_and_activations(T, heads, dh, phase, batch):
    for name in NAMES:
        a = estimate(name, shape(T, heads, dh, phase=phase, batch=batch))
        if a.status != "ok":
            continue
        b = estimate(name, shape(T, heads, dh, phase=phase, batch=2 * batch))
        assert b.flops == 2 * a.flops, name
        if batch > 1:  # one sequence folds views that two copy in the backward, as autograd does (test_op_match)
            assert b.activation_bytes_unfused == 2 * a.activation_bytes_unfused, name
            assert b.activation_bytes_fused == 2 * a.activation_bytes_fused, name
        assert b.kv_cache_bytes == 2 * a.kv_cache_bytes, name
        assert b.weights_bytes == a.weights_bytes, name


@settings(max_examples=40, deadline=None)
@given(T=T_st, heads=heads_st, dh=dh_st)
def test_causal_fused_is_half_the_dense_core(T, heads, dh):
    causal = estimate("flash", shape(T, heads, dh)).flops_core
    dense = estimate("flash", shape(T, heads, dh, causal=False)).flops_core
    assert causal == dense / 2


@settings(max_examples=40, deadline=None)
@given(T=T_st, heads=st.sampled_from([4, 8, 16]), dh=dh_st, group=st.sampled_from([1, 2, 4]))
def test_kv_cache_ratios(T, heads, dh, group):
    s = shape(T, heads, dh)
    mha = estimate("mha", s).kv_cache_bytes
    assert estimate("gqa", s, {"kv_heads": heads // group}).kv_cache_bytes * group == mha
    assert estimate("mqa", s).kv_cache_bytes * heads == mha
    # MLA: d_c + d_r elements per token, against 2 * heads * dh for K and V
    mla = estimate("mla", s)
    dc, dr = mla.params["kv_lora_rank"], mla.params["rope_dim"]
    assert mla.kv_cache_bytes * 2 * heads * dh == mha * (dc + dr)


@settings(max_examples=30, deadline=None)
@given(T=T_st, heads=heads_st, dh=dh_st, phase=phase_st, causal=st.booleans())
def test_no_count_is_ever_negative(T, heads, dh, phase, causal):
    for name in NAMES:
        e = estimate(name, shape(T, heads, dh, phase=phase, causal=causal))
        for field, value in e.model_dump().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert value >= 0, (name, field)


def test_topk_selector_is_superlinear_in_T():
    """Seed #2 claims O(k): its selector emits T logits per query, so FLOPs grow ~T^2."""
    f = [estimate("topk", Shape(T=T, d=1024, heads=16)).flops_core for T in (1024, 2048, 4096)]
    assert f[1] / f[0] > 1.9 and f[2] / f[1] > 1.9


def test_seed2_table_undercounts_the_selector():
    """Seed #2's 'sparse' column is below what its own KeySelector's logits layer costs once T >= 256
    (2*T*hidden*T per head); attncost's whole topk layer is never below its claim."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("seed2", Path(__file__).parents[1] / "bench" / "seed2_topk.py")
    seed2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed2)
    for d, T, full, sparse, mha, flash, topk, logits in seed2.rows():
        assert topk.flops / 1e6 > sparse
        if T >= 256:
            assert logits / 1e6 > sparse
