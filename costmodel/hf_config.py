"""A Hugging Face config.json (or a folder holding one) as a ``ModelConfig``, offline, without
transformers.

``model_type`` picks the family (``model_families.FAMILIES``); the fields that family reads are
validated with pydantic (a bad value, or one missing without a default, is one sentence naming
the field). Every other field of the file is accounted for, never silently dropped:

- fields that change the cost but are not modelled are listed in one note ("not modelled: ...");
- fields known not to change the cost (RoPE bases and scaling, norm epsilons, score scalars,
  the router's grouping and scaling) are named in another note, with a count of the metadata
  and training-only fields (token ids, dtypes, dropout, auxiliary losses);
- fields the config omits take transformers' defaults for its model_type, said in a note where
  they change the cost.

``quantization_config`` sets the stored weights (``ModelConfig.weights_dtype``): fp8, AWQ / GPTQ
/ bitsandbytes at 4 or 8 bits; other methods are listed as not modelled. A transformers config
object (anything with ``model_type`` and ``to_dict``) is read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from .jsonfile import read_text, validation_reason
from .model_families import FAMILIES
from .model_spec import ModelConfig, ModelError

CONFIG_NAME = "config.json"

# Fields known not to change the cost, named under the result.
COST_NEUTRAL = frozenset((
    "rope_theta", "rope_scaling", "rope_local_base_freq", "rope_interleave", "original_max_position_embeddings",
    "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "query_pre_attn_scalar", "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "n_ctx", "routed_scaling_factor",
    "norm_topk_prob", "scoring_func", "n_group", "topk_group", "cache_implementation", "use_mrope",
    "final_logit_softcapping", "attn_logit_softcapping", "max_window_layers", "use_sliding_window",
    "sliding_window_size",
))
# Metadata and training-only fields: counted under the result, not named.
METADATA = frozenset((
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "name_or_path",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "auto_map",
    "initializer_range", "initializer_factor", "use_cache", "tokenizer_class", "task_specific_params",
    "output_attentions", "output_hidden_states", "output_router_logits", "return_dict", "use_return_dict",
    "attention_dropout", "attn_pdrop", "embd_pdrop", "resid_pdrop", "hidden_dropout", "summary_type",
    "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    "pretraining_tp", "aux_loss_alpha", "seq_aux", "router_aux_loss_coef", "router_jitter_noise", "id2label",
    "label2id", "problem_type", "is_decoder", "is_encoder_decoder", "ep_size", "n_special",
    "predict_special_tokens", "output_past", "torchscript", "gradient_checkpointing", "_attn_implementation",
    "attn_implementation", "mm_tokens_per_image", "boi_token_index", "eoi_token_index", "image_token_index",
    "image_token_id", "boi_token_id", "eoi_token_id", "max_length", "do_sample", "chunk_size_feed_forward",
    "tie_encoder_decoder", "pruned_heads", "finetuning_task", "prefix",
))
# Fields whose absence costs nothing to mention (their defaults are "off").
QUIET_DEFAULTS = frozenset((
    "quantization_config", "sliding_window", "layer_types", "attention_bias", "mlp_bias", "num_key_value_heads",
    "head_dim", "hidden_activation", "n_inner", "q_lora_rank", "n_routed_experts", "num_experts_per_tok",
    "n_shared_experts", "add_cross_attention", "num_nextn_predict_layers", "use_sliding_window", "topk_method",
    "moe_layer_freq", "first_k_dense_replace", "partial_rotary_factor", "max_window_layers",
))


def find_config(path) -> Path:
    """The config.json at ``path``, or in the folder ``path``; ModelError if there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        inside = p / CONFIG_NAME
        if not inside.is_file():
            raise ModelError(f"folder {p} holds no {CONFIG_NAME}")
        return inside
    return p


def is_hf_config(data) -> bool:
    """Whether parsed JSON is a Hugging Face config (it names a model_type) rather than attncost's."""
    return isinstance(data, dict) and "model_type" in data


def from_hf_config(data, name: str, source: str = "") -> ModelConfig:
    """The ModelConfig of a Hugging Face config (a dict, or a transformers config object)."""
    if hasattr(data, "to_dict") and hasattr(data, "model_type"):
        data = data.to_dict()
    mt = data.get("model_type")
    if mt not in FAMILIES:
        raise ModelError(f"model_type {mt!r} is not one attncost knows: it reads {', '.join(FAMILIES)}")
    outer: list = []
    if isinstance(data.get("text_config"), dict):  # a multimodal wrapper (Gemma 3): the language model
        outer = [k for k in data if k not in ("text_config", "model_type")]
        data = {**data["text_config"], "model_type": mt}
    fields_type, build = FAMILIES[mt]
    try:
        f = fields_type.model_validate(data)
        kwargs, remarks = build(f)
    except ValidationError as err:
        raise ModelError(f"{mt} config: {validation_reason(err)}") from None
    except ValueError as err:  # a family's own check (layer_types of the wrong length)
        raise ModelError(f"{mt} config: {err}") from None
    weights, quant_remark = _quantisation(f.quantization_config)
    read = set(fields_type.model_fields)
    others = [k for k in data if k not in read]
    neutral = [k for k in others if k in COST_NEUTRAL]
    meta = [k for k in others if k in METADATA]
    unmodelled = remarks + quant_remark + [k for k in others if k not in COST_NEUTRAL and k not in METADATA]
    unmodelled += [f"{k} (the vision tower and image tokens are not costed)" if k == "vision_config" else k
                   for k in outer if k not in METADATA and k not in COST_NEUTRAL]
    defaults = [f"{k}={getattr(f, k)}" for k in fields_type.model_fields
                if k not in f.model_fields_set and k not in QUIET_DEFAULTS and getattr(f, k) is not None]
    notes = list(kwargs.pop("notes", []))
    notes += _field_notes(mt, unmodelled, neutral, meta, defaults)
    try:
        return ModelConfig(name=name, source=source, weights_dtype=weights, unmodelled=unmodelled,
                           cost_neutral=neutral + meta, notes=notes, **kwargs)
    except ValidationError as err:
        raise ModelError(f"{mt} config: {validation_reason(err)}") from None


def _field_notes(mt: str, unmodelled: list, neutral: list, meta: list, defaults: list) -> list:
    """One sentence per kind of field the mapping did not read."""
    notes = []
    if unmodelled:
        notes.append(f"config fields that may change the cost and are not modelled: {', '.join(unmodelled)}")
    if neutral or meta:
        named = ", ".join(neutral)
        counted = f"{len(meta)} metadata or training-only field{'s' if len(meta) != 1 else ''}" if meta else ""
        notes.append("config fields that do not change the cost: " + " and ".join(x for x in (named, counted) if x))
    if defaults:
        notes.append(f"not in the config, transformers' {mt} defaults taken: {', '.join(defaults)}")
    return notes


def _quantisation(q: Optional[dict]) -> tuple:
    """(stored weights dtype or None, remarks) of a config's quantization_config."""
    if not q:
        return None, []
    method = str(q.get("quant_method", "")).lower()
    bits = q.get("bits") or q.get("w_bit")
    if method == "fp8":
        return "fp8", []
    if method in ("awq", "gptq") and bits in (4, 8):
        return f"int{bits}", []
    if method == "bitsandbytes" and (q.get("load_in_4bit") or q.get("load_in_8bit")):
        return ("int4" if q.get("load_in_4bit") else "int8"), []
    return None, [f"quantization_config (quant_method {method or '?'}: costed at --weights-dtype)"]


def load_hf_config(path, name: Optional[str] = None, source: str = "") -> ModelConfig:
    """A ModelConfig from a config.json (or a folder holding one); ModelError with one sentence."""
    p = find_config(path)
    data = read_config(p)
    if not is_hf_config(data):
        raise ModelError(f"{p} has no model_type: it is not a Hugging Face config.json")
    return from_hf_config(data, name or default_name(p), source or str(p))


def read_config(p: Path):
    """The parsed JSON of a model file; ModelError with one sentence if it cannot be read."""
    try:
        text = read_text(p)  # a regular file of at most MAX_FILE_BYTES: never a device or a pipe
    except FileNotFoundError:
        raise ModelError(f"model file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"model file {p} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelError(f"model file {p} is not a valid model: invalid JSON at line {err.lineno} column "
                         f"{err.colno} ({err.msg})") from None


def default_name(p: Path) -> str:
    """A model's name from its file: the folder's name for config.json, else the file's stem."""
    return p.parent.name if p.name == CONFIG_NAME and p.parent.name else p.stem
