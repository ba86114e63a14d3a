"""The profiler modules: every variant runs in every phase it has, with the right output, and the
decode paths (KV cache, latent cache, recurrent state) agree with the full causal forward."""

import math

import pytest
import torch

from attncost.costmodel.shape import Shape
from attncost.costmodel.variants import REGISTRY, VariantError
from attncost.profiler.modules import MODULES, build_module

# small parameters that fit every shape below
PARAMS = {
    "sliding_window": {"window": 6},
    "dsa": {"k": 8, "index_heads": 4, "index_dim": 8},
    "linformer": {"k": 8},
    "nystrom": {"landmarks": 4, "pinv_iters": 3, "conv_kernel": 5},
    "performer": {"features": 16, "chunk": 8},
    "topk": {"k": 4, "hidden": 8},
    "mlp_attention": {"hidden": 8},
    "msla": {"latents": 8, "k": 3},
}
DECODING = [v for v in REGISTRY if REGISTRY[v].decode]


def shape(phase="prefill", T=21, B=2, d=48, H=4, causal=True):
    return Shape(batch=B, T=T, d=d, heads=H, phase=phase, dtype="fp32", causal=causal)


def test_every_variant_has_a_module():
    assert set(MODULES) == set(REGISTRY)


@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
@pytest.mark.parametrize("variant", list(REGISTRY))
def test_output_shape_finite(variant, phase):
    s = shape(phase)
    if phase == "decode" and not REGISTRY[variant].decode:
        with pytest.raises(VariantError, match="no decode path"):
            build_module(variant, s, PARAMS.get(variant), "cpu", torch.float32)
        return
    module, inputs = build_module(variant, s, PARAMS.get(variant), "cpu", torch.float32)
    assert module.variant == variant and module.backend == "auto" and module.phase == phase
    if phase == "train":
        assert inputs[0].requires_grad and all(p.requires_grad for p in module.parameters())
        out = module(*inputs)
        out.sum().backward()
        assert inputs[0].grad is not None and torch.isfinite(inputs[0].grad).all()
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    else:
        assert not any(p.requires_grad for p in module.parameters())
        with torch.no_grad():
            out = module(*inputs)
    assert out.shape == (s.batch, s.tokens, s.d)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("variant", DECODING)
@pytest.mark.parametrize("T", [1, 5, 21])
def test_decode_equals_last_token_of_causal_prefill(variant, T):
    """The cache built from T-1 tokens plus one decode step == the causal forward's last token
    (same weights): K/V caches, MLA's absorbed latent cache, DSA's caches, Performer's state."""
    s = shape("decode", T=T)
    params = PARAMS.get(variant)
    if variant == "topk":  # its selector picks at most T keys
        params = {**params, "k": min(params["k"], T)}
    module, _ = build_module(variant, s, params, "cpu", torch.float32)
    x = torch.randn(s.batch, T, s.d)
    with torch.no_grad():
        full = module.prefill(x)[:, -1:]
        step = module.decode(x[:, -1:], *module.cache_from(x[:, :-1]))
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)


def test_decode_inputs_are_the_cache_of_T_tokens():
    s = shape("decode", T=9)
    _, (x, k, v) = build_module("gqa", s, {"kv_heads": 2}, "cpu", torch.float32)
    assert x.shape == (2, 1, 48) and k.shape == v.shape == (2, 2, 9, 12)
    _, (x, cache) = build_module("mla", s, {"kv_lora_rank": 16, "rope_dim": 4}, "cpu", torch.float32)
    assert cache.shape == (2, 9, 16 + 4)  # d_c + d_r per token, no factor 2
    _, (x, k, v) = build_module("sliding_window", s, {"window": 4}, "cpu", torch.float32)
    assert k.shape == (2, 4, 4, 12)  # a rolling buffer of the window
    _, (x, S, z, c) = build_module("performer", s, {"features": 16}, "cpu", torch.float32)
    assert S.shape == (2, 4, 16, 12) and z.shape == (2, 4, 16) and c.shape == (2, 4, 1, 1)
    _, inputs = build_module("msla", s, {"latents": 8}, "cpu", torch.float32)
    assert len(inputs) == 1  # no cache


def test_same_seed_same_weights_across_phases():
    a, _ = build_module("mla", shape("prefill"), None, "cpu", torch.float32)
    b, _ = build_module("mla", shape("decode"), None, "cpu", torch.float32)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def _performer(T=19, chunk=4, B=2, H=2, d=16, m=8):
    s = Shape(batch=B, T=T, d=d, heads=H, dtype="fp32")
    module, (x,) = build_module("performer", s, {"features": m, "chunk": chunk}, "cpu", torch.float32)
    q, k, v = module._qkv(x)
    return module, x, module.phi_query(q), module.phi_key(k)[0], v


def test_performer_chunked_equals_naive_prefix_sums():
    module, _, qf, kf, v = _performer()
    with torch.no_grad():
        chunked = module._causal(qf, kf, v)
        # naive reference: S_t = sum_{s<=t} phi(k_s) v_s^T, materialised as B x H x T x m x dh
        S = torch.cumsum(kf[..., :, None] * v[..., None, :], dim=2)
        z = torch.cumsum(kf, dim=2)
        num = (qf[..., None, :] @ S)[..., 0, :]
        den = (qf * z).sum(-1, keepdim=True)
        torch.testing.assert_close(chunked, num / den, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T,chunk", [(16, 4), (19, 4), (7, 64), (1, 3)])
def test_performer_chunked_never_materialises_the_naive_tensor(T, chunk):
    module, x, *_ = _performer(T=T, chunk=chunk, m=8)
    with torch.no_grad():
        biggest = [n for _, _, n in _made_during(lambda: module(x))]
    B, H, dh, m = 2, 2, 8, 8
    if T > 1:
        assert max(biggest) < B * H * T * m * dh


def test_performer_decode_state_equals_chunked_prefill():
    module, x, *_ = _performer(T=19, chunk=4)
    with torch.no_grad():
        full = module.prefill(x)[:, -1:]
        step = module.decode(x[:, -1:], *module.cache_from(x[:, :-1]))
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_noncausal_variants():
    for v in ("linformer", "nystrom", "performer", "mha", "flash", "topk", "mlp_attention"):
        s = shape(causal=False)
        module, inputs = build_module(v, s, PARAMS.get(v), "cpu", torch.float32)
        with torch.no_grad():
            out = module(*inputs)
        assert out.shape == (2, 21, 48) and torch.isfinite(out).all()


def test_mha_equals_flash():
    """The explicit math path and the fused kernel compute the same attention (same weights)."""
    s = shape()
    a, (x,) = build_module("mha", s, None, "cpu", torch.float32)
    b, _ = build_module("flash", s, None, "cpu", torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


def test_sliding_window_equals_masked_math():
    s = shape(T=15)
    module, (x,) = build_module("sliding_window", s, {"window": 4}, "cpu", torch.float32)
    with torch.no_grad():
        q = module.split_heads(module.q_proj(x), 4)
        k = module.split_heads(module.k_proj(x), 4)
        v = module.split_heads(module.v_proj(x), 4)
        sc = q @ k.transpose(-1, -2) / math.sqrt(12)
        i = torch.arange(15)
        sc = sc.masked_fill(~((i[None] <= i[:, None]) & (i[None] > i[:, None] - 4)), float("-inf"))
        ref = module.o_proj(module.merge_heads(torch.softmax(sc, -1) @ v))
        torch.testing.assert_close(module(x), ref, atol=1e-5, rtol=1e-5)


def test_backend_choice_is_recorded_and_used():
    s = shape()
    auto, (x,) = build_module("flash", s, None, "cpu", torch.float32)
    math_, _ = build_module("flash", s, None, "cpu", torch.float32, backend="math")
    assert math_.backend == "math"
    with torch.no_grad():
        torch.testing.assert_close(auto(x), math_(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(VariantError, match="backend"):
        build_module("flash", s, None, "cpu", torch.float32, backend="tpu")


def test_bad_inputs_raise_the_cost_models_errors():
    with pytest.raises(VariantError, match="unknown variant"):
        build_module("nope", shape(), None, "cpu", torch.float32)
    with pytest.raises(VariantError, match="must be at most T"):
        build_module("linformer", shape(T=8), {"k": 16}, "cpu", torch.float32)


def _made_during(fn) -> list:
    """(dtype, device, elements) of every tensor an op makes while ``fn`` runs."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    made = []

    class Made(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            made.extend((t.dtype, t.device.type, t.numel()) for t in tree_flatten(out)[0]
                        if isinstance(t, torch.Tensor))
            return out

    with Made():
        fn()
    return made


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_modules_are_built_in_the_requested_dtype(phase):
    """bf16 asked: weights, buffers, masks and inputs are made in bf16, never in fp32 first."""
    for variant in REGISTRY:
        if phase == "decode" and not REGISTRY[variant].decode:
            continue
        s = shape(phase).with_(dtype="bf16")
        built = []
        made = _made_during(lambda: built.extend(build_module(variant, s, PARAMS.get(variant), "cpu")))
        assert made and torch.float32 not in {m[0] for m in made}, variant  # (RoPE's tables start in float64)
        module, inputs = built
        tensors = list(module.parameters()) + list(module.buffers()) + list(inputs)
        assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.bfloat16}, variant


def test_modules_are_built_on_the_target_device():
    """Every variant's weights and tables are made where they will run (here torch's "meta"
    device, which allocates nothing), in the requested dtype."""
    from attncost.costmodel.estimate import resolve_params
    from attncost.profiler.modules import building_on

    before = torch.get_default_dtype()
    for variant, cls in MODULES.items():
        s = shape().with_(dtype="fp16")
        with building_on("meta", torch.float16):
            module = cls(s, resolve_params(variant, s, PARAMS.get(variant)))
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            assert t.device.type == "meta", (variant, name)
            assert not t.is_floating_point() or t.dtype == torch.float16, (variant, name)
    assert torch.get_default_dtype() == before
    assert torch.empty(1).device.type == "cpu"


# -- DSA: queries in blocks ---------------------------------------------------------------------
DSA_SMALL = {"k": 8, "index_heads": 16, "index_dim": 8}


@pytest.mark.parametrize("causal", [True, False])
def test_dsa_blocks_give_the_same_output(causal):
    """Blocks of 5 queries (some before k, one across it, some after) = one block of all T."""
    s = shape(T=21, causal=causal)
    whole, (x,) = build_module("dsa", s, {**DSA_SMALL, "chunk": 21}, "cpu", torch.float32)
    blocks, _ = build_module("dsa", s, {**DSA_SMALL, "chunk": 5}, "cpu", torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(blocks(x), whole(x), atol=1e-5, rtol=1e-5)


def test_dsa_decode_equals_last_token_of_a_prefill_in_blocks():
    s = shape("decode", T=21)
    module, _ = build_module("dsa", s, {**DSA_SMALL, "chunk": 4}, "cpu", torch.float32)
    x = torch.randn(s.batch, 21, s.d)
    with torch.no_grad():
        full = module.prefill(x)[:, -1:]
        step = module.decode(x[:, -1:], *module.cache_from(x[:, :-1]))
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)


def test_dsa_blocks_count_exactly():
    """fvcore (attncost's handles) counts the cost model's FLOPs exactly, block by block."""
    from attncost.profiler.counting import crosscheck

    s = Shape(batch=2, T=37, d=48, heads=4, dtype="fp32")
    r = crosscheck("dsa", s, {**DSA_SMALL, "chunk": 10})
    assert r.status == "ok" and r.fvcore_skipped == {} and r.differences == []
    assert r.fvcore == pytest.approx(r.analytic, rel=1e-12)


@pytest.mark.parametrize("fields, params", [
    ((1, 256, True), {}),  # one block
    ((2, 128, True), {}),
    ((1, 256, True), {"chunk": 64}),  # four blocks
    ((2, 192, False), {"chunk": 50}),  # uneven blocks, not causal
])
def test_dsa_peak_memory_is_the_cost_models(fields, params):
    """The module's measured peak (bytes of live tensors, harness.peak_memory) is the cost
    model's peak activation memory within 10%, and no tensor holds the per-head index scores of
    more than one block (B x chunk*index_heads x T)."""
    from attncost.costmodel.estimate import estimate, resolve_params
    from attncost.costmodel.variants.latent import block_rows
    from attncost.profiler.harness import peak_memory

    B, T, causal = fields
    s = Shape(batch=B, T=T, d=64, heads=2, dtype="fp32", causal=causal)
    p = {**DSA_SMALL, **params}
    module, (x,) = build_module("dsa", s, p, "cpu")
    e = estimate("dsa", s, p)
    with torch.no_grad():
        measured = peak_memory(lambda: module(x), "cpu")
        sizes = [n for _, _, n in _made_during(lambda: module(x))]
    assert measured == pytest.approx(e.activation_bytes_fused, rel=0.10)
    chunk = block_rows(s, resolve_params("dsa", s, p))
    assert max(sizes) == B * min(chunk, T) * 16 * T  # one block's scores, never all T*16 rows
    if chunk < T:
        assert max(sizes) < B * T * 16 * T

