"""Parameter counts from architecture numbers must match the published model sizes."""

from __future__ import annotations

import pytest

from ftrecipes.config.resolve import resolve
from ftrecipes.plan.params import count


@pytest.mark.parametrize("model,published", [
    ("llama3_1_8b", 8.03e9), ("llama3_1_70b", 70.6e9), ("qwen2_5_7b", 7.62e9), ("qwen3_32b", 32.8e9),
])
def test_total_parameters_match_published_counts(model, published):
    recipe = resolve([f"model={model}"]).recipe
    total = count(recipe.model.architecture, recipe.method).total
    assert total == pytest.approx(published, rel=0.005)


def test_lora_trainable_parameters_from_rank_and_targets():
    recipe = resolve(["model=llama3_1_8b", "method.r=16"]).recipe
    counts = count(recipe.model.architecture, recipe.method)
    # per layer: r * sum(in + out) over q,k,v,o,gate,up,down = 16 * 81920 * ... see the formula
    h, kv, inter, layers = 4096, 1024, 14336, 32
    per_layer = 16 * ((h + h) + (h + kv) * 2 + (h + h) + 3 * (h + inter))
    assert counts.trainable == layers * per_layer
    subset = resolve(["model=llama3_1_8b", "method.r=8", "method.target_modules=[q_proj,v_proj]"]).recipe
    assert count(subset.model.architecture, subset.method).trainable == 32 * 8 * ((h + h) + (h + kv))


def test_full_fine_tuning_trains_everything():
    recipe = resolve(["model=qwen2_5_7b", "method=full"]).recipe
    counts = count(recipe.model.architecture, recipe.method)
    assert counts.trainable == counts.total


def test_tiny_model_count_matches_the_built_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    recipe = resolve([]).recipe
    arch = recipe.model.architecture
    config = transformers.LlamaConfig(
        hidden_size=arch.hidden_size, num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim, intermediate_size=arch.intermediate_size, vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings)
    model = transformers.LlamaForCausalLM(config)
    assert count(arch, recipe.method).total == sum(p.numel() for p in model.parameters())
