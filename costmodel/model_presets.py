"""The shipped model presets (published hyperparameters, each citing its config) and ``get_model``:
a preset by name or a model from a JSON file."""

from pathlib import Path

from .model_spec import ModelConfig, ModelError, MoE, load_model

_GPT2_SOURCE = ("Radford et al. 2019, Language Models are Unsupervised Multitask Learners; "
                "https://huggingface.co/openai-community/{name}/blob/main/config.json "
                "(n_layer {layers}, n_embd {d}, n_head {heads}, n_positions 1024, vocab_size 50257, "
                "n_inner 4*n_embd, activation gelu_new, tied lm_head)")


def _gpt2(name: str, layers: int, d: int, heads: int, published: float) -> ModelConfig:
    return ModelConfig(
        name=name, layers=layers, d=d, heads=heads, vocab=50257, context=1024, positions="learned",
        tied_embeddings=True, norm="layernorm", bias=True, mlp="gelu", mlp_hidden=4 * d, attention="mha",
        published_params=published,
        source=_GPT2_SOURCE.format(name=name, layers=layers, d=d, heads=heads))


PRESETS: dict[str, ModelConfig] = {
    "gpt2": _gpt2("gpt2", 12, 768, 12, 124.44e6),
    "gpt2-medium": _gpt2("gpt2-medium", 24, 1024, 16, 354.8e6),
    "gpt2-xl": _gpt2("gpt2-xl", 48, 1600, 25, 1.558e9),
    "llama-3-8b": ModelConfig(
        name="llama-3-8b", layers=32, d=4096, heads=32, kv_heads=8, vocab=128256, context=8192,
        positions="rope", tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu",
        mlp_hidden=14336, attention="gqa", published_params=8.03e9,
        source="Meta 2024, https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json "
               "(num_hidden_layers 32, hidden_size 4096, num_attention_heads 32, num_key_value_heads 8, "
               "intermediate_size 14336, vocab_size 128256, max_position_embeddings 8192, rope_theta "
               "500000, tie_word_embeddings false, RMSNorm, SiLU)"),
    "mistral-7b": ModelConfig(
        name="mistral-7b", layers=32, d=4096, heads=32, kv_heads=8, vocab=32000, context=32768,
        positions="rope", tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu",
        mlp_hidden=14336, attention="gqa", window=4096, published_params=7.24e9,
        attention_params={"gqa": {"window": 4096}, "sliding_window": {"window": 4096}},
        source="Jiang et al. 2023, Mistral 7B (arXiv:2310.06825); "
               "https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json (num_hidden_layers "
               "32, hidden_size 4096, num_attention_heads 32, num_key_value_heads 8, intermediate_size "
               "14336, vocab_size 32000, max_position_embeddings 32768, sliding_window 4096, untied)",
        notes=["v0.1 attends within a sliding window of 4096 tokens with 8 K/V heads: costed as gqa "
               "with window 4096 (a rolling KV cache of at most 4096 tokens)"]),
    "deepseek-v2-lite": ModelConfig(
        name="deepseek-v2-lite", layers=27, d=2048, heads=16, vocab=102400, context=32768,
        positions="rope", tied_embeddings=False, norm="rmsnorm", bias=False, mlp="swiglu",
        mlp_hidden=10944, attention="mla",
        moe=MoE(routed_experts=64, active_experts=6, shared_experts=2, expert_hidden=1408, first_dense_layers=1),
        attention_params={"mla": {"kv_lora_rank": 512, "q_lora_rank": 0, "rope_dim": 64},
                          "dsa": {"kv_lora_rank": 512, "q_lora_rank": 0, "rope_dim": 64}},
        published_params=15.7e9, published_active_params=2.4e9,
        source="DeepSeek-AI 2024, DeepSeek-V2 (arXiv:2405.04434), Appendix B (DeepSeek-V2-Lite); "
               "https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/config.json "
               "(num_hidden_layers 27, hidden_size 2048, num_attention_heads 16, kv_lora_rank 512, "
               "q_lora_rank null, qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128, "
               "intermediate_size 10944, first_k_dense_replace 1, n_routed_experts 64, n_shared_experts 2, "
               "num_experts_per_tok 6, moe_intermediate_size 1408, vocab_size 102400, untied; context 32k)",
        notes=["MLA's RMSNorm on the KV latent (512 weights per layer) is not counted",
               "published 2.4B active parameters: attncost counts 2.45B excluding the input-embedding "
               "table (a lookup), 2.66B including it"]),
}


def get_model(name_or_path) -> ModelConfig:
    """A preset by name (case-insensitive) or a model from a JSON file; ModelError otherwise."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    key = str(name_or_path).strip()
    if key.lower() in PRESETS:
        return PRESETS[key.lower()]
    p = Path(key).expanduser()
    if p.suffix.lower() == ".json" or "/" in key or "\\" in key or p.exists():
        return load_model(p)
    raise ModelError(f"unknown model {key!r}: choose one of {', '.join(PRESETS)} or give a JSON file")
