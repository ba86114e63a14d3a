"""Real models from their Hugging Face config.json: parameter counts against the published totals,
the architectures' own attention (Gemma's local and global layers, Qwen3's head dim, DeepSeek's
MLA and MoE), what each config field means for the cost, bad configs, and precisions.

The config files in tests/data/configs/ are the published config.json of each model (the
repository is named beside each count below). The exact totals are those of the checkpoints
(the sum of their safetensors tensors, tied tensors once, as the Hugging Face model pages list
them), which the papers and model cards round (8B, 7.6B, 9B, ...)."""

import json
from pathlib import Path

import pytest

from attncost.costmodel.hardware import get_hardware
from attncost.costmodel.hf_config import from_hf_config, load_hf_config
from attncost.costmodel.model_cost import predict_model
from attncost.costmodel.model_params import count_params
from attncost.costmodel.model_precision import Precision, PrecisionError, check
from attncost.costmodel.model_presets import PRESETS, get_model
from attncost.costmodel.model_spec import ModelError

CONFIGS = Path(__file__).parent / "data" / "configs"
H100 = get_hardware("h100")

# file -> (exact total, source repository of its config.json)
TOTALS = {
    "Meta-Llama-3-8B": (8_030_261_248, "meta-llama/Meta-Llama-3-8B"),  # a folder holding config.json
    "qwen2.5-7b.json": (7_615_616_512, "Qwen/Qwen2.5-7B"),
    "mistral-7b-v0.1.json": (7_241_732_096, "mistralai/Mistral-7B-v0.1"),
    "mixtral-8x7b.json": (46_702_792_704, "mistralai/Mixtral-8x7B-v0.1"),
    "gemma-2-9b.json": (9_241_705_984, "google/gemma-2-9b"),
    "gpt2.json": (124_439_808, "openai-community/gpt2"),
    "deepseek-v2-lite.json": (15_706_484_224, "deepseek-ai/DeepSeek-V2-Lite"),
    "qwen3-8b.json": (8_190_735_360, "Qwen/Qwen3-8B"),
    "qwen3-0.6b.json": (596_049_920, "Qwen/Qwen3-0.6B"),
    "gemma-3-1b.json": (999_885_952, "google/gemma-3-1b-it"),
    "phi-3-mini-4k.json": (3_821_079_552, "microsoft/Phi-3-mini-4k-instruct"),
    "deepseek-v3.json": (671_026_419_200, "deepseek-ai/DeepSeek-V3 (671B without its 14B multi-token module)"),
}


def model(name: str):
    return get_model(str(CONFIGS / name))


@pytest.mark.parametrize("name", list(TOTALS))
def test_parameter_counts_match_the_published_totals_exactly(name):
    assert count_params(model(name)).total == TOTALS[name][0]


def test_mixtral_active_parameters():
    """Mistral's "12.9B active" for Mixtral 8x7B counts all but the 6 routed experts a token
    does not pick: 46,702,792,704 - 32 x 6 x 3 x 4096 x 14336 = 12,879,925,248 (the final norm's
    4,096 weights included). attncost's own ``active`` also leaves out the input-embedding table
    (a lookup, 131,072,000)."""
    pc = count_params(model("mixtral-8x7b.json"))
    assert pc.active_with_tables == 46_702_792_704 - 32 * 6 * 3 * 4096 * 14336 == 12_879_925_248
    assert pc.active == 12_879_925_248 - 32_000 * 4096


def test_presets_are_the_shipped_configs_with_unchanged_numbers():
    for name, cfg in PRESETS.items():
        assert cfg.source.startswith(("Radford", "Meta", "Jiang", "DeepSeek")) and "config.json" in cfg.source
    assert count_params(PRESETS["llama-3-8b"]).total == TOTALS["Meta-Llama-3-8B"][0]
    assert count_params(PRESETS["mistral-7b"]).total == TOTALS["mistral-7b-v0.1.json"][0]
    assert count_params(PRESETS["deepseek-v2-lite"]).total == TOTALS["deepseek-v2-lite.json"][0]
    assert PRESETS["mistral-7b"].attention_params == {"gqa": {"window": 4096}, "sliding_window": {"window": 4096}}


def test_llama_3_8b_kv_cache_per_token_in_bf16_and_fp8():
    f = CONFIGS / "Meta-Llama-3-8B"
    bf16 = predict_model(str(f), T=1024, hardware=H100, search=False)
    fp8 = predict_model(str(f), T=1024, hardware=H100, search=False, kv_dtype="fp8")
    assert bf16.param_count == 8_030_261_248
    assert bf16.kv_cache_bytes_per_token == 131_072  # 32 layers x 2 (K, V) x 8 heads x 128 x 2 bytes
    assert fp8.kv_cache_bytes_per_token == 65_536
    assert fp8.kv_cache_bytes == bf16.kv_cache_bytes / 2
    assert fp8.weights_bytes == bf16.weights_bytes  # only the cache changed


@pytest.mark.parametrize("weights", ["fp8", "int8"])
def test_8bit_weights_about_double_a_bandwidth_bound_decode(weights):
    """Batch 1 decode reads every weight once a token: at 8 bits the linear layers' bytes halve
    (the LM head stays bf16: 1.05 GB of 16.1), so the bandwidth-bound tokens/s goes 1.86x. The
    predicted step halves its memory time the same way; its fixed kernel latencies do not."""
    f = str(CONFIGS / "Meta-Llama-3-8B")
    bf16 = predict_model(f, T=1024, hardware=H100, search=False, mode="graph")
    q = predict_model(f, T=1024, hardware=H100, search=False, mode="graph", weights_dtype=weights)
    assert 1.8 < q.decode_tokens_per_s_roofline / bf16.decode_tokens_per_s_roofline < 2.0
    assert 1.8 < bf16.decode.memory_s / q.decode.memory_s < 2.0
    assert q.decode_tokens_per_s > 1.3 * bf16.decode_tokens_per_s
    # linear layers (6.98B) at 1 byte, the rest (embeddings, LM head, norms: 1.05B) at 2
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    assert q.weights_bytes == linear + 2 * (8_030_261_248 - linear)


def test_fp8_matmuls_run_at_twice_the_bf16_peak_and_weight_only_dequantises():
    f = str(CONFIGS / "Meta-Llama-3-8B")
    kw = dict(T=4096, hardware=H100, search=False, mode="graph")
    bf16, fp8, int4 = (predict_model(f, **kw, weights_dtype=w) for w in (None, "fp8", "int4"))
    assert bf16.prefill.bound == "compute"
    assert fp8.prefill.compute_s < 0.6 * bf16.prefill.compute_s  # the matmuls with weights at 2x
    assert fp8.prefill.flops_total == bf16.prefill.flops_total  # FLOPs reported as they are
    # weight-only int4: bf16 matmuls plus 3 ops per weight per 128-row tile (4096 rows: 32 tiles)
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    assert int4.prefill.flops_total - bf16.prefill.flops_total == pytest.approx(linear * 32 * 3)
    assert bf16.ttft_s < int4.ttft_s < 1.2 * bf16.ttft_s
    assert int4.decode_tokens_per_s_roofline > 3 * bf16.decode_tokens_per_s_roofline


def test_a_quantised_cache_is_what_decode_attention_reads():
    f = str(CONFIGS / "Meta-Llama-3-8B")
    kw = dict(T=32768, batch=8, hardware=H100, search=False, mode="graph")
    bf16, int8 = predict_model(f, **kw), predict_model(f, **kw, kv_dtype="int8")
    cache = 8 * 32768 * 131_072
    assert bf16.decode.bytes - int8.decode.bytes == pytest.approx(cache / 2, rel=0.01)
    assert int8.decode.time["attention_core"] < 0.6 * bf16.decode.time["attention_core"]
    assert bf16.memory_bytes - int8.memory_bytes == pytest.approx(cache / 2)


def test_qwen2_5_has_qkv_biases_and_untied_embeddings():
    cfg = model("qwen2.5-7b.json")
    assert cfg.attention_bias == "qkv" and not cfg.tied_embeddings and cfg.kv_heads == 4
    pc = count_params(cfg)
    assert pc.attention == 28 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3584 + 512 + 512)
    assert pc.lm_head == pc.embed == 152_064 * 3584


def test_qwen3_head_dim_differs_from_width_over_heads():
    """Qwen3-0.6B: 16 heads of 128 on a width of 1024: q_proj is 1024 -> 2048, o_proj 2048 -> 1024,
    plus an RMSNorm over each head's q and k (128 weights each)."""
    cfg = model("qwen3-0.6b.json")
    assert cfg.head_dim == 128 and cfg.attention_width == 2048 and cfg.qk_norm
    pc = count_params(cfg)
    assert pc.attention == 28 * (1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024)
    e = predict_model(cfg, T=1024, search=False)
    q_k_v_o = 2 * 1024 * (1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024)
    rope = 3 * 1024 * (2048 + 1024)
    assert e.prefill.flops["attention_proj"] == 28 * (q_k_v_o + rope)
    # per layer: two RMSNorms and two residual adds of T x 1024, and the q/k RMSNorm of T x (2048 + 1024)
    norms = 1024 * (2 * 4 * 1024 + 2 * 1024 + 4 * (2048 + 1024))
    assert e.prefill.per_layer[0]["flops"]["norms"] == pytest.approx(norms)
    assert e.kv_cache_bytes_per_token == 28 * 2 * 8 * 128 * 2


def test_gemma2_costs_local_and_global_layers_apart():
    cfg = model("gemma-2-9b.json")
    assert [la.kind for la in cfg.layer_attention] == ["sliding_attention", "full_attention"]
    e = predict_model(cfg, T=8192, hardware=H100, search=False)
    local, full = e.prefill.per_layer
    assert (local["attention"], local["window"], local["count"]) == ("sliding_attention", 4096, 21)
    assert (full["attention"], full["window"], full["count"]) == ("full_attention", None, 21)
    assert local["kv_cache_bytes"] == 4096 * 2 * 8 * 256 * 2 == full["kv_cache_bytes"] / 2
    assert local["flops"]["attention_core"] < full["flops"]["attention_core"]
    assert sum(local["time_s"].values()) < sum(full["time_s"].values())
    assert e.kv_cache_bytes == 21 * (local["kv_cache_bytes"] + full["kv_cache_bytes"])
    d_local, d_full = e.decode.per_layer
    assert d_local["kv_cache_bytes"] == local["kv_cache_bytes"]
    assert sum(d_local["time_s"].values()) < sum(d_full["time_s"].values())


def test_gemma2_soft_capping_and_embedding_scale_cost_what_they_do():
    cfg = model("gemma-2-9b.json")
    plain = cfg.model_copy(update={"attention_softcap": None, "logit_softcap": None, "embed_scale": False})
    T = 1024
    capped, bare = predict_model(cfg, T=T, search=False), predict_model(plain, T=T, search=False)
    assert capped.prefill.flops["lm_head"] - bare.prefill.flops["lm_head"] == 3 * T * 256_000
    assert capped.prefill.flops["embed"] - bare.prefill.flops["embed"] == T * 3584
    # 3 per score computed: causal fused kernels compute T^2/2 per head (windows >= T here)
    scores = 16 * T * T / 2
    assert capped.prefill.flops["attention_core"] - bare.prefill.flops["attention_core"] == pytest.approx(
        42 * 3 * scores, rel=0.01)
    assert any("soft-capped" in n for n in capped.notes)


def test_gemma3_has_five_local_layers_per_global_one():
    cfg = model("gemma-3-1b.json")
    groups = cfg.layer_groups()
    assert [(g.kind, g.count, g.params.get("gqa", g.params).get("window")) for g in groups] == [
        ("sliding_attention", 22, 512), ("full_attention", 4, None)]
    assert cfg.qk_norm and cfg.post_norms and cfg.tied_embeddings and cfg.logit_softcap is None


def test_a_multimodal_gemma3_config_costs_its_text_model():
    data = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                            "num_attention_heads": 8, "num_hidden_layers": 34, "num_key_value_heads": 4,
                            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
            "vision_config": {"hidden_size": 1152}, "mm_tokens_per_image": 256}
    cfg = from_hf_config(data, "gemma-3-4b")
    assert cfg.vocab == 262_208 and cfg.head_dim == 256  # transformers' Gemma3TextConfig defaults
    assert any("vision_config" in u for u in cfg.unmodelled)
    assert "rope_scaling" in cfg.cost_neutral
    assert any("defaults taken" in n and "vocab_size=262208" in n for n in cfg.notes)


def test_deepseek_v3_mla_moe_and_its_fp8_checkpoint():
    cfg = model("deepseek-v3.json")
    assert cfg.attention == "mla" and cfg.head_dim == 128 and cfg.attention_width == 128 * 128 != cfg.d
    assert cfg.attention_params["mla"] == {"kv_lora_rank": 512, "q_lora_rank": 1536, "rope_dim": 64}
    assert cfg.moe.first_dense_layers == 3 and cfg.moe.router_bias and cfg.moe.shared_experts == 1
    assert cfg.weights_dtype == "fp8"
    assert any("num_nextn_predict_layers" in u for u in cfg.unmodelled)
    e = predict_model(cfg, T=1024, hardware=H100, search=False)
    assert e.weights_dtype == "fp8" and [lay["kind"] for lay in e.prefill.per_layer] == ["dense", "moe"]
    assert e.kv_cache_bytes_per_token == 61 * (512 + 64) * 2  # MLA: the latent and the RoPE key
    on_a100 = predict_model(cfg, T=1024, hardware=get_hardware("a100"), search=False)
    assert on_a100.weights_dtype == "bf16" and any("fp8" in n and "a100" in n for n in on_a100.notes)


def test_phi3_window_and_mixtral_router():
    phi = model("phi-3-mini-4k.json")
    assert phi.attention_params["gqa"] == {"window": 2047} and phi.kv_heads == 32
    mix = model("mixtral-8x7b.json")
    assert (mix.moe.routed_experts, mix.moe.active_experts, mix.moe.shared_experts) == (8, 2, 0)
    assert mix.window is None and not mix.layer_attention


def test_every_config_field_is_read_named_or_listed():
    data = json.loads((CONFIGS / "Meta-Llama-3-8B" / "config.json").read_text())
    data.update({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}, "colour": "blue"})
    cfg = from_hf_config(data, "x")
    assert "colour" in cfg.unmodelled and "rope_scaling" in cfg.cost_neutral and "rope_theta" in cfg.cost_neutral
    not_modelled = [n for n in cfg.notes if "not modelled" in n]
    neutral = [n for n in cfg.notes if "do not change the cost" in n]
    assert len(not_modelled) == 1 and "colour" in not_modelled[0]
    assert len(neutral) == 1 and "rope_scaling" in neutral[0] and "metadata" in neutral[0]
    assert set(data) <= set(type(cfg).model_fields) | set(cfg.unmodelled) | set(cfg.cost_neutral) | {
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
        "vocab_size", "max_position_embeddings", "tie_word_embeddings", "hidden_act", "attention_bias"}


@pytest.mark.parametrize("q, weights", [
    ({"quant_method": "fp8", "fmt": "e4m3"}, "fp8"), ({"quant_method": "awq", "bits": 4}, "int4"),
    ({"quant_method": "gptq", "bits": 8}, "int8"), ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "int4"),
    ({"quant_method": "mxfp4"}, None)])
def test_quantization_config_sets_the_stored_weights(q, weights):
    data = json.loads((CONFIGS / "mistral-7b-v0.1.json").read_text())
    cfg = from_hf_config({**data, "quantization_config": q}, "m")
    assert cfg.weights_dtype == weights
    assert (weights is None) == any("quantization_config" in u for u in cfg.unmodelled)


def test_a_transformers_config_object_is_read_like_its_json():
    class FakeConfig:  # what transformers' PretrainedConfig offers
        model_type = "qwen2"
        name_or_path = "Qwen/Qwen2.5-7B"

        def to_dict(self):
            return json.loads((CONFIGS / "qwen2.5-7b.json").read_text())

    cfg = get_model(FakeConfig())
    assert cfg.name == "Qwen/Qwen2.5-7B" and count_params(cfg).total == 7_615_616_512


@pytest.mark.parametrize("content, match", [
    ({"model_type": "bert", "hidden_size": 768}, "model_type 'bert' is not one attncost knows: it reads llama"),
    ({"model_type": "llama", "hidden_size": 4096}, "llama config: field num_hidden_layers is missing"),
    ({"model_type": "llama", "hidden_size": -1, "num_hidden_layers": 2, "num_attention_heads": 2,
      "intermediate_size": 8, "vocab_size": 10}, "hidden_size: input should be greater than or equal to 1"),
    ({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 5,
      "intermediate_size": 8, "vocab_size": 10}, "num_attention_heads=5 does not divide hidden_size=64"),
    ({"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": 3, "intermediate_size": 8, "vocab_size": 10}, "num_key_value_heads=3 does not divide"),
    ({"model_type": "gemma2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
      "intermediate_size": 8, "vocab_size": 10, "layer_types": ["full_attention"]}, "layer_types lists 1 layers"),
    ({"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 8, "vocab_size": 10, "use_sliding_window": "maybe"}, "use_sliding_window: input should be"),
    ({"model_type": "deepseek_v2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "intermediate_size": 8, "vocab_size": 10}, "field kv_lora_rank is missing"),
])
def test_bad_configs_fail_with_one_sentence(tmp_path, content, match):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(content))
    with pytest.raises(ModelError, match=match) as info:
        get_model(str(p))
    assert "\n" not in str(info.value)


def test_a_folder_without_config_json_and_a_file_without_model_type(tmp_path):
    with pytest.raises(ModelError, match="holds no config.json"):
        get_model(str(tmp_path))
    p = tmp_path / "m.json"
    p.write_text("{}")
    with pytest.raises(ModelError, match="has no model_type"):
        load_hf_config(p)


def test_fp8_needs_fp8_tensor_cores():
    for hw in ("h100", "h200", "l4"):
        check(Precision.of("bf16", "fp8", "fp8"), get_hardware(hw))
    with pytest.raises(PrecisionError, match="fp8 weights cannot run on a100"):
        check(Precision.of("bf16", "fp8"), get_hardware("a100"))
    with pytest.raises(PrecisionError, match="an fp8 KV cache cannot run on a100"):
        predict_model("llama-3-8b", T=64, hardware=get_hardware("a100"), kv_dtype="fp8")
    check(Precision.of("bf16", "int8", "int8"), get_hardware("a100"))
    with pytest.raises(PrecisionError, match="weights dtype must be one of"):
        Precision.of("bf16", "fp4")
