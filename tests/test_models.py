"""Whole models: presets against published parameter counts, the gpt2 worked example by hand,
decode against the bandwidth roofline, what fits, swapping the attention variant."""

import json

import pytest

from attncost.costmodel.estimate import estimate
from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.model_cost import predict_model
from attncost.costmodel.model_memory import max_batch_fitting, max_T_fitting, memory_bytes
from attncost.costmodel.model_params import count_params, touched_experts
from attncost.costmodel.model_pass import COMPONENTS
from attncost.costmodel.model_presets import PRESETS, get_model
from attncost.costmodel.model_spec import ModelConfig, ModelError
from attncost.costmodel.shape import Shape

H100 = get_hardware("h100")

# Published totals (model cards / papers) and the exact counts of the checkpoints
# (sum of the tensors in each HF checkpoint, tied tensors once):
PUBLISHED = {
    "gpt2": (124.4e6, 124_439_808),  # HF card "124M"; the checkpoint holds 124,439,808
    "gpt2-medium": (354.8e6, 354_823_168),  # "355M"
    "gpt2-xl": (1.558e9, 1_557_611_200),  # "1.5B"
    "llama-3-8b": (8.03e9, 8_030_261_248),  # "8B"; HF lists 8.03B
    "mistral-7b": (7.24e9, 7_241_732_096),  # "7.3B" in the paper's blog, HF lists 7.24B
    "deepseek-v2-lite": (15.7e9, 15_706_484_224),  # DeepSeek-V2 paper, Appendix B: 15.7B total, 2.4B activated
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_parameter_counts_match_published_within_1_percent(name):
    published, exact = PUBLISHED[name]
    pc = count_params(get_model(name))
    assert pc.total == pytest.approx(published, rel=0.01)
    if exact is not None:
        assert pc.total == exact
    assert PRESETS[name].published_params == pytest.approx(published, rel=0.01)
    assert PRESETS[name].source  # every preset cites its config


def test_deepseek_v2_lite_active_parameters():
    """Published "2.4B activated": the count without the input-embedding table (a lookup) is
    2.451B, 2.1% above the rounded figure; with the table it would be 2.661B (11% above)."""
    cfg = get_model("deepseek-v2-lite")
    pc = count_params(cfg)
    assert pc.active == pytest.approx(2.4e9, rel=0.03)
    # by hand: attention 27 x (2048*3072 + 2048*576 + 512*4096 + 2048*2048) = 371,589,120;
    # dense MLP 3*2048*10944 = 67,239,936; 26 MoE layers x (router 64*2048 + 6 experts x
    # 3*2048*1408 + shared 3*2048*2816) = 26 x 69,337,088; norms (2*27+1)*2048 and the RMSNorm of each
    # layer's K/V latent (kv_a_layernorm, 512); LM head 102400*2048
    active = 371_589_120 + 67_239_936 + 26 * 69_337_088 + 55 * 2048 + 27 * 512 + 102_400 * 2048
    assert pc.active == active
    total = active + 102_400 * 2048 + 26 * (64 - 6) * 3 * 2048 * 1408
    assert pc.total == total == pytest.approx(15.7e9, rel=0.01)


def test_gpt2_worked_example_by_hand():
    """gpt2, T=1024, batch 1, mha (math path: causal scores counted dense). See model_cost.py."""
    e = predict_model("gpt2", T=1024)
    f = e.prefill.flops
    T, d, L, H, dh, V, h = 1024, 768, 12, 12, 64, 50257, 3072
    assert f["attention_proj"] == L * 4 * 2 * T * d * d == 57_982_058_496
    core = L * 2 * 2 * H * T * T * dh + L * (1 + 1 + 5) * H * T * T  # QK^T, AV; scale, mask, softmax
    assert f["attention_core"] == core == 39_711_670_272
    mlp = L * 2 * 2 * T * d * h + L * 9 * T * h  # fc, proj; GELU (tanh) 9 per element
    assert f["mlp"] == mlp == 116_303_855_616
    assert f["lm_head"] == 2 * T * d * V == 79_047_426_048
    norms = (2 * L + 1) * 7 * T * d + 2 * L * T * d  # LayerNorm 7 per element; residual adds
    assert f["norms"] == norms == 156_499_968
    assert f["embed"] == T * d  # position add; the lookups are 0 FLOPs
    assert e.prefill.flops_total == 293_202_296_832
    # the 2 x params x tokens rule: 254.85 GFLOP, 13% short of the exact count
    rule = 2 * e.param_count * T
    assert rule == 254_852_726_784
    assert e.prefill.flops_total / rule == pytest.approx(1.1505, abs=1e-4)
    # the matmuls with weights are within 1% of the rule's count (it adds lookup tables, biases, norms)
    assert (f["attention_proj"] + L * 2 * 2 * T * d * h + f["lm_head"]) / rule == pytest.approx(0.9927, abs=1e-4)


def test_gpt2_attention_share_is_small_and_the_mlp_dominates():
    """Seed #5: "at 124M, attention FLOPs are a small fraction of total compute; MLP dominates".
    Hand numbers (T=1024, see the worked example): core 39.71 / 293.20 = 13.5%; with the
    projections (57.98) 33.3%; MLP 39.7%; LM head 27.0%. Through a fused kernel (flash, causal
    half): core 19.86 / 273.35 = 7.3%, with the projections 28.5%."""
    sh = predict_model("gpt2", T=1024).as_dict()["shares"]["flops"]
    assert sh["attention_core"] == pytest.approx(0.1354, abs=5e-4)
    assert sh["attention_core"] + sh["attention_proj"] == pytest.approx(0.3332, abs=5e-4)
    assert sh["mlp"] == pytest.approx(0.3967, abs=5e-4)
    assert sh["lm_head"] == pytest.approx(0.2696, abs=5e-4)
    assert sh["mlp"] > sh["attention_core"] + sh["attention_proj"]
    fl = predict_model("gpt2", T=1024, variant="flash").as_dict()["shares"]["flops"]
    assert fl["attention_core"] < 0.08
    assert fl["attention_core"] + fl["attention_proj"] < 0.30


@pytest.mark.parametrize("name,variant,T,batch", [
    ("gpt2", None, 1024, 1), ("gpt2", "mla", 1024, 8), ("llama-3-8b", None, 1024, 1), ("llama-3-8b", None, 8192, 4),
    ("llama-3-8b", "mla", 8192, 1), ("mistral-7b", None, 4096, 1), ("deepseek-v2-lite", None, 4096, 1)])
def test_whole_model_flops_are_the_sum_of_components_and_reuse_the_attention_model(name, variant, T, batch):
    cfg = get_model(name)
    e = predict_model(cfg, T=T, batch=batch, variant=variant, hardware=H100, search=False)
    for pc in (e.prefill, e.decode):
        assert pc.flops_total == pytest.approx(sum(pc.flops.values()), rel=1e-12)
        assert set(pc.flops) == set(COMPONENTS)
        assert sum(pc.time.values()) == pytest.approx(pc.time_s, rel=1e-9)
        # the attention core is the attention cost model's, times the layers
        s = Shape(batch=batch, T=T, d=cfg.d, heads=cfg.heads, kv_heads=cfg.kv_heads, phase=pc.phase)
        a = estimate(e.variant, s, e.params)
        assert pc.flops["attention_core"] == pytest.approx(cfg.layers * a.flops_core, rel=1e-12)
        assert pc.flops["attention_proj"] >= cfg.layers * (a.flops_proj + a.flops_other)
        # the layers (per kind x count), the final norm, the embedding and the LM head make the whole
        layer_flops = sum(k["count"] * sum(k["flops"].values()) for k in pc.per_layer)
        final_norm = (7 if cfg.norm == "layernorm" else 4) * batch * s.tokens * cfg.d
        assert layer_flops + final_norm + pc.flops["embed"] + pc.flops["lm_head"] == pytest.approx(
            pc.flops_total, rel=1e-12)
    sh = e.as_dict()["shares"]
    assert sum(sh["flops"].values()) == pytest.approx(1.0)
    assert sum(sh["time"].values()) == pytest.approx(1.0)
    assert e.kv_cache_bytes == pytest.approx(cfg.layers * estimate(e.variant, Shape(
        batch=batch, T=T, d=cfg.d, heads=cfg.heads, kv_heads=cfg.kv_heads), e.params).kv_cache_bytes)


def test_llama_3_8b_by_hand():
    """Llama-3-8B, T=1024, batch 1: matmuls per layer q, o 2*T*4096^2, k, v 2*T*4096*1024,
    gate/up/down 3 x 2*T*4096*14336; LM head 2*T*4096*128256; KV cache 32 layers x 2 x 1024 x 2 bytes
    = 128 KiB per token."""
    e = predict_model("llama-3-8b", T=1024)
    T = 1024
    assert e.prefill.flops["mlp"] == 32 * (3 * 2 * T * 4096 * 14336 + T * 14336 * (3 + 1))  # SiLU 3, mul 1
    assert e.prefill.flops["lm_head"] == 2 * T * 4096 * 128256
    assert e.kv_cache_bytes_per_token == 32 * 2 * 1024 * 2
    assert e.kv_cache_bytes == 128 * 2**20
    assert e.weights_bytes == 2 * 8_030_261_248


@pytest.mark.parametrize("name,variant,T,batch", [
    ("llama-3-8b", None, 1024, 1), ("llama-3-8b", None, 8192, 1), ("llama-3-8b", None, 8192, 16),
    ("mistral-7b", None, 2048, 1), ("gpt2", None, 1024, 1), ("gpt2-xl", "flash", 1024, 4),
    ("deepseek-v2-lite", None, 2048, 1), ("deepseek-v2-lite", None, 2048, 32)])
def test_decode_is_bounded_by_bandwidth_over_bytes_read(name, variant, T, batch):
    """tokens/s <= batch x bandwidth / (weights read + KV cache), the bytes computed here by hand."""
    cfg = get_model(name)
    e = predict_model(cfg, T=T, batch=batch, variant=variant, hardware=H100, search=False)
    pc = count_params(cfg, e.variant)
    lookup = (cfg.context * cfg.d if cfg.positions == "learned" else 0) + (0 if cfg.tied_embeddings else cfg.vocab * cfg.d)
    weights = pc.total - lookup
    if cfg.moe:
        m = cfg.moe
        touched = m.routed_experts * (1 - (1 - m.active_experts / m.routed_experts) ** batch)
        weights -= (cfg.layers - m.first_dense_layers) * (m.routed_experts - touched) * 3 * cfg.d * m.expert_hidden
    bytes_read = 2 * weights + e.kv_cache_bytes
    assert e.decode_bytes_min == pytest.approx(bytes_read, rel=1e-12)
    bound = batch * H100.mem_bandwidth / bytes_read
    assert e.decode_tokens_per_s_roofline == pytest.approx(bound)
    assert e.decode_tokens_per_s <= bound
    assert e.decode.bytes >= bytes_read * (1 - 1e-3)  # the kernels read at least that (biases aside)


def test_llama_decode_at_batch_1_is_memory_bound_near_the_roofline():
    e = predict_model("llama-3-8b", T=1024, hardware=H100, search=False)
    assert e.decode.bound == "memory"
    assert 0.3 < e.decode_tokens_per_s / e.decode_tokens_per_s_roofline < 1.0
    # 8B params in bf16: 15 GiB a token; 3.35 TB/s at most 223 tokens/s
    assert e.decode_tokens_per_s_roofline < 3.35e12 / (2 * 7.5e9)


def test_moe_reads_only_the_experts_its_tokens_pick():
    cfg = get_model("deepseek-v2-lite")
    assert touched_experts(cfg.moe, 1) == pytest.approx(6)
    assert touched_experts(cfg.moe, 4096) == pytest.approx(64)
    pc = count_params(cfg)
    assert pc.weights_read(1, cfg) == pytest.approx(pc.active)
    e1 = predict_model(cfg, T=1024, batch=1, hardware=H100, search=False)
    e64 = predict_model(cfg, T=1024, batch=64, hardware=H100, search=False)
    assert e1.decode_weights_bytes_read == pytest.approx(2 * pc.active)
    assert e64.decode_weights_bytes_read > 4 * e1.decode_weights_bytes_read
    # prefill MLP FLOPs: 2 x the MLP's active parameters x tokens (+ SiLU, router softmax, combine)
    active_mlp = pc.mlp - 26 * (64 - 6) * pc.expert
    assert e1.prefill.flops["mlp"] == pytest.approx(2 * 1024 * active_mlp, rel=0.01)
    assert e1.prefill.flops["mlp"] > 2 * 1024 * active_mlp


def test_max_T_and_batch_are_the_largest_that_fit():
    cfg = get_model("llama-3-8b")
    mem = H100.mem_bytes
    t = max_T_fitting(cfg, "gqa", {}, 1, "bf16", mem)
    assert memory_bytes(cfg, "gqa", {}, t, 1, "bf16") <= mem < memory_bytes(cfg, "gqa", {}, t + 1, 1, "bf16")
    b = max_batch_fitting(cfg, "gqa", {}, 8192, "bf16", mem)
    assert memory_bytes(cfg, "gqa", {}, 8192, b, "bf16") <= mem < memory_bytes(cfg, "gqa", {}, 8192, b + 1, "bf16")
    # the KV cache is most of it: (80 GiB - 15 GiB weights) / 128 KiB per token is about 520k tokens,
    # less the prefill activations (logits T x vocab dominate)
    assert 100_000 < t < 530_000
    e = predict_model(cfg, T=8192, hardware=H100)
    assert (e.max_T_fitting, e.max_batch_fitting) == (t, b)
    assert e.fits


def test_nothing_fits_when_the_weights_alone_do_not():
    l4 = get_hardware("l4")  # 24 GiB; llama-3-8b in fp32 is 30 GiB of weights
    e = predict_model("llama-3-8b", T=1024, dtype="fp32", hardware=l4)
    assert e.fits is False and e.max_T_fitting == 0 and e.max_batch_fitting == 0


def test_swapping_attention_in_gpt2_mla_shrinks_the_kv_cache_not_the_compute():
    """Seed #5: MLA at GPT-2 scale. Defaults scaled to dh=64: d_c 256, d_r 32: the cache holds
    288 elements per token per layer instead of 2 x 768."""
    mha = predict_model("gpt2", T=1024, variant="mha", hardware=H100, search=False)
    mla = predict_model("gpt2", T=1024, variant="mla", hardware=H100, search=False)
    assert mha.kv_cache_bytes_per_token == 12 * 2 * 768 * 2
    assert mla.kv_cache_bytes_per_token == 12 * (256 + 32) * 2
    assert mla.kv_cache_bytes < mha.kv_cache_bytes / 5
    # the rest of the model does not change
    for c in ("mlp", "lm_head", "norms", "embed"):
        assert mla.prefill.flops[c] == mha.prefill.flops[c]
    assert abs(mla.prefill.flops_total / mha.prefill.flops_total - 1) < 0.1


def test_variants_without_a_decode_path_or_out_of_range_are_na():
    e = predict_model("gpt2", T=1024, variant="linformer", hardware=H100, search=False)
    assert e.status == "ok" and e.decode is None and "no decode path" in e.decode_reason
    assert e.as_dict()["decode_tokens_per_s"] is None
    e = predict_model("gpt2", T=128, variant="linformer", hardware=H100)  # k=256 > T
    assert e.status == "n/a" and "at most T" in e.reason
    assert e.as_dict()["flops_total"] is None


def test_notes_say_what_is_approximated():
    e = predict_model("mistral-7b", T=8192)
    assert any("sliding window" in n for n in e.notes)
    e = predict_model("gpt2", T=2048)
    assert any("exceeds" in n and "context" in n for n in e.notes)
    e = predict_model("deepseek-v2-lite", T=1024)
    assert any("uniform routing" in n for n in e.notes)


def test_batch_scales_prefill_flops_linearly():
    a = predict_model("gpt2", T=512, batch=1)
    b = predict_model("gpt2", T=512, batch=3)
    assert b.prefill.flops_total == 3 * a.prefill.flops_total
    assert b.kv_cache_bytes == 3 * a.kv_cache_bytes


def test_custom_model_file(tmp_path):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps({"name": "tiny", "layers": 2, "d": 64, "heads": 4, "vocab": 100, "mlp_hidden": 256,
                             "context": 128}))
    cfg = get_model(str(p))
    assert isinstance(cfg, ModelConfig) and cfg.attention == "mha"
    # by hand: wte 6400 + wpe 8192; per layer attention 4*64*64 + 4*64 bias, MLP 2*64*256 + 256 + 64,
    # two LayerNorms 2*128; final LayerNorm 128; tied LM head
    per_layer = 4 * 64 * 64 + 256 + 2 * 64 * 256 + 320 + 256
    assert count_params(cfg).total == 6400 + 8192 + 2 * per_layer + 128
    e = predict_model(cfg, T=64, hardware=H100)
    assert e.status == "ok" and e.ttft_s > 0


@pytest.mark.parametrize("content,match", [
    ("{", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "x", "layers": 2, "d": 64, "heads": 4, "vocab": 10}', "field mlp_hidden is missing"),
    ('{"name": "x", "layers": 2, "d": 64, "heads": 5, "vocab": 10, "mlp_hidden": 8}', "heads must divide d"),
    ('{"name": "x", "layers": 2, "d": 64, "heads": 4, "vocab": 10, "mlp_hidden": 8, "attention": "foo"}',
     "unknown attention variant"),
    ('{"name": "x", "layers": 2, "d": 64, "heads": 4, "vocab": 10, "mlp_hidden": 8, "colour": 1}',
     "unknown field colour"),
    ('{"name": "x", "layers": 2, "d": 64, "heads": 4, "vocab": 10, "mlp_hidden": 8, '
     '"attention_params": {"mla": {"kv_lora_rank": 0}}}', "attention_params.mla: kv_lora_rank: input should be"),
])
def test_malformed_model_files_fail_with_one_sentence(tmp_path, content, match):
    p = tmp_path / "m.json"
    p.write_text(content)
    with pytest.raises(ModelError, match=match) as info:
        get_model(str(p))
    assert "\n" not in str(info.value)


def test_layer_kinds_list_the_layers_in_order():
    cfg = get_model("deepseek-v2-lite")
    assert cfg.layer_kinds() == [("dense", 1), ("moe", 26)]
    kinds = [cfg.layer_kind(i) for i in range(cfg.layers)]
    assert kinds == [k for k, n in cfg.layer_kinds() for _ in range(n)]
    assert {get_model("gpt2").layer_kind(i) for i in range(12)} == {"dense"}


def test_unknown_model_names_the_presets():
    with pytest.raises(ModelError, match="gpt2, gpt2-medium"):
        get_model("gpt5")


def test_last_token_logits_shrink_the_lm_head_and_let_longer_prompts_fit():
    """Generation keeps only the last token's logits: the LM head costs 2 x batch x d x vocab, and
    the T x vocab logits (45 GB for llama-3-8b at 176k tokens) no longer bound the prompt."""
    all_ = predict_model("llama-3-8b", T=8192, batch=2, hardware=H100)
    last = predict_model("llama-3-8b", T=8192, batch=2, hardware=H100, logits="last")
    assert last.prefill.flops["lm_head"] == 2 * 2 * 4096 * 128256
    assert all_.prefill.flops["lm_head"] == 8192 * last.prefill.flops["lm_head"]
    assert last.ttft_s < all_.ttft_s
    assert last.max_T_fitting > 1.5 * all_.max_T_fitting
    assert last.decode.flops == all_.decode.flops  # a decode step has one token per sequence anyway
    assert last.as_dict()["logits"] == "last"
    with pytest.raises(ValueError, match="logits"):
        predict_model("gpt2", T=64, logits="first")


@pytest.mark.parametrize("variant", ["mla", "dsa"])
def test_latent_attention_keeps_its_own_rope(variant):
    """MLA and DSA rotate their decoupled rope channels themselves: a RoPE model adds no second
    rotation around them (DeepSeek-V2-Lite has no q low-rank projection, so nothing else tells)."""
    from attncost.costmodel.estimate import graph, resolve_params
    from attncost.costmodel.model_attention import applies_rope
    from attncost.costmodel.model_spec import attention_shape

    cfg = get_model("deepseek-v2-lite")
    s = attention_shape(cfg, 1024, 1, "bf16", "prefill")
    g = graph(variant, s, resolve_params(variant, s, cfg.attention_params.get(variant)))
    assert cfg.positions == "rope" and not applies_rope(cfg, g)
    assert applies_rope(cfg, graph("flash", s, resolve_params("flash", s, None)))
