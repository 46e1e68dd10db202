"""A local model's config.json is counted without torch, and the count equals the meta-device one."""

from __future__ import annotations

import json

import pytest

from ftrecipes.plan import params
from ftrecipes.plan.local_config import known_architecture

LORA = {"name": "lora", "r": 8, "target_modules": "all-linear", "modules_to_save": []}
FULL = {"name": "full"}

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 96, "vocab_size": 300}


@pytest.mark.parametrize("model_type,extra", [
    ("llama", {}), ("llama", {"tie_word_embeddings": True}),
    ("mistral", {"head_dim": 32}), ("qwen2", {"tie_word_embeddings": False}), ("qwen3", {"head_dim": 8}),
])
@pytest.mark.parametrize("method", [FULL, LORA], ids=["full", "lora"])
def test_config_json_count_equals_meta_device_count(tmp_path, model_type, extra, method):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, **SMALL, **extra).save_pretrained(tmp_path)
    arch = known_architecture(tmp_path / "config.json")
    assert arch is not None
    fast, meta = params.count(arch, method), params.count_from_config(tmp_path, method)
    assert (fast.total, fast.embedding, fast.trainable, fast.linear) == (meta.total, meta.embedding, meta.trainable, meta.linear)


@pytest.mark.parametrize("config", [
    {"model_type": "llama"},  # numbers missing: transformers' defaults would apply, so count on meta
    {"model_type": "gpt2", **SMALL},
    {"model_type": "llama", "mlp_bias": True, **SMALL},
    {"model_type": "llama", "attention_bias": True, **SMALL},  # o_proj gets a bias too
    {"model_type": "qwen2_moe", "num_experts": 4, **SMALL},
])
def test_unknown_or_partial_configs_fall_back_to_the_meta_device(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert known_architecture(tmp_path / "config.json") is None


def test_plan_of_a_local_model_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", **SMALL}))
    code = ("import sys; from ftrecipes.config.resolve import resolve; from ftrecipes.plan.summary import build_plan; "
            f"plan = build_plan(resolve(['model.source=local', 'model.path={tmp_path}']).recipe); "
            "print(plan['parameters']['total'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and int(out[0]) > 0
