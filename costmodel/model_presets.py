"""The shipped model presets and ``get_model``: a preset by name, a Hugging Face config.json (or a
folder holding one), or a model in attncost's own JSON.

Each preset is its model's published config.json, shipped in ``data/models/`` and read by
``hf_config`` like any user's file; this module adds what a config.json does not say: the
published parameter counts and where the config comes from.
"""

from pathlib import Path
from typing import NamedTuple, Optional

from .hf_config import default_name, find_config, from_hf_config, is_hf_config, read_config
from .jsonfile import validate_json
from .model_spec import ModelConfig, ModelError

MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"

_HF = "https://huggingface.co/{repo}/blob/main/config.json"
_GPT2 = ("Radford et al. 2019, Language Models are Unsupervised Multitask Learners; " + _HF +
         " (n_inner absent: 4*n_embd; activation gelu_new; tied lm_head)")


class Preset(NamedTuple):
    repo: str  # the Hugging Face repository whose config.json is shipped
    source: str
    published: float
    published_active: Optional[float] = None
    notes: tuple = ()


PRESET_INFO: dict = {
    "gpt2": Preset("openai-community/gpt2", _GPT2, 124.44e6),
    "gpt2-medium": Preset("openai-community/gpt2-medium", _GPT2, 354.8e6),
    "gpt2-xl": Preset("openai-community/gpt2-xl", _GPT2, 1.558e9),
    "llama-3-8b": Preset("meta-llama/Meta-Llama-3-8B", "Meta 2024, Llama 3; " + _HF, 8.03e9),
    "mistral-7b": Preset("mistralai/Mistral-7B-v0.1", "Jiang et al. 2023, Mistral 7B (arXiv:2310.06825); " + _HF,
                         7.24e9),
    "deepseek-v2-lite": Preset(
        "deepseek-ai/DeepSeek-V2-Lite", "DeepSeek-AI 2024, DeepSeek-V2 (arXiv:2405.04434), Appendix B "
        "(DeepSeek-V2-Lite); " + _HF, 15.7e9, 2.4e9,
        ("published 2.4B active parameters: attncost counts 2.45B excluding the input-embedding table (a "
         "lookup), 2.66B including it",)),
}


def _preset(name: str, info: Preset) -> ModelConfig:
    data = read_config(MODELS_DIR / f"{name}.json")
    cfg = from_hf_config(data, name, info.source.format(repo=info.repo))
    return cfg.model_copy(update={"published_params": info.published,
                                  "published_active_params": info.published_active,
                                  "notes": cfg.notes + list(info.notes)})


PRESETS: dict[str, ModelConfig] = {name: _preset(name, info) for name, info in PRESET_INFO.items()}


def load_model_file(path) -> ModelConfig:
    """A model from a file (or a folder holding config.json): a Hugging Face config.json (it has a
    model_type) or attncost's own JSON; ModelError with one sentence if it is neither."""
    p = find_config(path)
    data = read_config(p)
    if is_hf_config(data):
        return from_hf_config(data, default_name(p), str(p))
    return validate_json(data, ModelConfig, lambda why: ModelError(f"model file {p} is not a valid model: {why}"))


def get_model(name_or_path) -> ModelConfig:
    """A preset by name (case-insensitive), a model file or folder, a ModelConfig, or a transformers
    config object; ModelError otherwise."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    if hasattr(name_or_path, "to_dict") and hasattr(name_or_path, "model_type"):
        return from_hf_config(name_or_path, getattr(name_or_path, "name_or_path", "") or name_or_path.model_type)
    key = str(name_or_path).strip()
    if key.lower() in PRESETS:
        return PRESETS[key.lower()]
    p = Path(key).expanduser()
    if p.suffix.lower() == ".json" or "/" in key or "\\" in key or p.exists():
        return load_model_file(p)
    raise ModelError(f"unknown model {key!r}: choose one of {', '.join(PRESETS)}, or give a config.json, a folder "
                     f"holding one, or a model JSON file")
