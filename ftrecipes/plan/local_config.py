"""Architecture numbers read straight from a local model's config.json, without torch.

`known_architecture(path)` returns the dict that `ftrecipes.plan.params.count` takes, for the
dense decoder families whose parameter arithmetic `params.count` covers exactly (Llama, Mistral,
Qwen2, Qwen3), and None for anything else: an unknown family, a missing number, or an option the
arithmetic does not model (MLP biases, MoE, sliding-window variants with extra weights). The
caller then counts on the meta device, which is exact for every architecture but imports torch
and transformers (seconds per process) - too slow for a dry run or a prepare-only run.
"""

from __future__ import annotations

import json
from pathlib import Path

# model_type -> (q/k/v biases, per-head q/k RMSNorm); the rest of the block is the same SwiGLU decoder.
_FAMILIES = {"llama": (None, False), "mistral": (False, False), "qwen2": (True, False), "qwen3": (None, True)}
# (None: the config's attention_bias decides, and only False is covered)
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def known_architecture(config_json: Path) -> dict | None:
    try:
        config = json.loads(Path(config_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    family = _FAMILIES.get(config.get("model_type"))
    if family is None or any(not isinstance(config.get(k), int) for k in _REQUIRED):
        return None
    bias, qk_norm = family
    # Llama's attention_bias also puts a bias on o_proj, which the arithmetic does not count
    if config.get("mlp_bias") or config.get("num_experts") or config.get("num_local_experts") or \
            (bias is None and config.get("attention_bias")):
        return None
    heads = config["num_attention_heads"]
    return {
        "hidden_size": config["hidden_size"],
        "num_hidden_layers": config["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or config["hidden_size"] // heads,
        "intermediate_size": config["intermediate_size"],
        "vocab_size": config["vocab_size"],
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "attention_bias": bool(bias),
        "qk_norm": qk_norm,
    }
