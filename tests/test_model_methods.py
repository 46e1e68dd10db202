"""Model sources and methods: clear errors for what cannot load or train here."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftrecipes.config.resolve import resolve
from ftrecipes.errors import EnvironmentProblem, ExitCode, RecipeError
from ftrecipes.model.load import resolve_model_path
from ftrecipes.model.methods import METHODS, apply_method, count_parameters


def small_llama():
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def test_lora_trains_a_small_share_of_parameters():
    recipe = resolve(["recipe=quickstart"]).recipe
    model = apply_method(small_llama(), recipe)
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 2
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("q_proj" in n for n in names) and any("down_proj" in n for n in names)


def test_lora_options_reach_peft():
    recipe = resolve(["recipe=quickstart", "method.rslora=true", "method.target_modules=[q_proj,v_proj]", "method.r=4"]).recipe
    model = apply_method(small_llama(), recipe)
    config = model.peft_config["default"]
    assert config.use_rslora and config.r == 4
    assert set(config.target_modules) == {"q_proj", "v_proj"}


def test_full_trains_everything():
    recipe = resolve(["method=full"]).recipe
    model = small_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    model = apply_method(model, recipe)
    trainable, total = count_parameters(model)
    assert trainable == total
    assert set(METHODS) >= {"full", "lora", "qlora", "dora", "adalora", "ia3", "prompt_tuning", "p_tuning",
                            "p_tuning_v2"}


def test_qlora_needs_a_quantized_base():
    recipe = resolve(["recipe=qwen32b_qlora"]).recipe
    with pytest.raises(EnvironmentProblem, match="needs a base loaded through bitsandbytes") as caught:
        apply_method(small_llama(), recipe)
    assert caught.value.exit_code == ExitCode.ENVIRONMENT
    assert "load_model_and_tokenizer" in caught.value.hint


def test_unknown_method_name_is_a_recipe_error():
    class Fake:
        class method:
            name = "lorra"

    with pytest.raises(RecipeError, match="method 'lorra' is unknown"):
        apply_method(small_llama(), Fake)


def test_missing_local_model_folder(tmp_path):
    recipe = resolve([f"model.source=local", f"model.path={tmp_path / 'nowhere'}"]).recipe
    with pytest.raises(EnvironmentProblem, match="does not exist") as caught:
        resolve_model_path(recipe)
    assert "save_pretrained" in caught.value.hint


def test_uncached_hub_model_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    recipe = resolve(["model=qwen3_32b"]).recipe
    with pytest.raises(EnvironmentProblem, match="Qwen/Qwen3-32B") as caught:
        resolve_model_path(recipe)
    assert "hf download Qwen/Qwen3-32B" in caught.value.hint


def test_unknown_model_source_is_a_recipe_error():
    class Fake:
        class model:
            source = "ftp"

    with pytest.raises(RecipeError):
        resolve_model_path(Fake)
