"""The export stage's merge check: equal logits pass, a deliberately broken merge fails."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from ftrecipes.errors import ExitCode
from ftrecipes.export.verify import MergeMismatch, check_logits, logits


@pytest.fixture
def adapter_model():
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, vocab_size=128))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    inputs = {"input_ids": torch.randint(0, 128, (3, 12)), "attention_mask": torch.ones(3, 12, dtype=torch.long)}
    inputs["attention_mask"][2, 8:] = 0
    return model, inputs


def test_a_correct_merge_passes(adapter_model):
    model, inputs = adapter_model
    before = logits(model, inputs)
    merged = model.merge_and_unload()
    result = check_logits(before, logits(merged, inputs), inputs["attention_mask"], "float32")
    assert result["max_abs_diff"] <= result["bound"] and result["positions"] == 32


def test_a_broken_merge_fails_with_exit_4(adapter_model):
    model, inputs = adapter_model
    before = logits(model, inputs)
    merged = model.merge_and_unload()
    with torch.no_grad():  # a merge that dropped the adapter's delta from one projection
        merged.model.layers[1].self_attn.v_proj.weight.add_(torch.randn_like(merged.model.layers[1].self_attn.v_proj.weight) * 0.05)
    with pytest.raises(MergeMismatch) as caught:
        check_logits(before, logits(merged, inputs), inputs["attention_mask"], "float32")
    assert caught.value.exit_code == ExitCode.DIVERGED and "held-out positions" in caught.value.message


def test_unmerged_base_is_caught(adapter_model):
    model, inputs = adapter_model
    before = logits(model, inputs)
    with model.disable_adapter():
        base_logits = logits(model, inputs)
    with pytest.raises(MergeMismatch):
        check_logits(before, base_logits, inputs["attention_mask"], "float32")
