"""AdaLoRA really reallocates rank: the budget shrinks step by step from init_r to target_r.

A small Llama in memory and a plain loop that calls the real callback at the same points the HF
Trainer does (`on_pre_optimizer_step`, `on_optimizer_step`) with a real `TrainerState`. The
end-to-end run under TRL (tests/test_methods_train.py) checks the saved allocation too.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainerControl, TrainerState, TrainingArguments

from ftrecipes.config.resolve import resolve
from ftrecipes.errors import RecipeError
from ftrecipes.model.methods import apply_method, method_callbacks

ADALORA = ["method=adalora", "method.init_r=8", "method.target_r=2", "method.tinit=0.1", "method.tfinal=0.2",
           "method.deltaT=1"]


def small_llama():
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def train(model, callbacks, steps: int, call_callbacks: bool = True):
    args, control = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[]), TrainerControl()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        state = TrainerState(global_step=step)
        model(input_ids=ids, labels=ids).loss.backward()
        if call_callbacks:
            for cb in callbacks:
                cb.on_pre_optimizer_step(args, state, control)
        optimizer.step()
        if call_callbacks:
            for cb in callbacks:
                cb.on_optimizer_step(args, state, control)
        optimizer.zero_grad()
    for cb in callbacks:
        cb.on_train_end(args, TrainerState(global_step=steps), control)


def test_rank_budget_shrinks_from_init_r_to_target_r(capsys):
    recipe = resolve(ADALORA).recipe
    model = apply_method(small_llama(), recipe, total_steps=20)
    callbacks = method_callbacks(model, recipe)
    assert [type(cb).__name__ for cb in callbacks] == ["AdaLoraStep"]
    train(model, callbacks, 20)

    history = callbacks[0].history
    steps, means = [s for s, _ in history], [m for _, m in history]
    assert means[0] == 8.0 and means[-1] == 2.0
    assert all(a > b for a, b in zip(means, means[1:])), history  # it shrinks, one step at a time
    assert len(history) > 4 and steps[1] > 2  # nothing moves during tinit (2 steps)
    # The masks really zero the pruned singular values: each matrix keeps its allocated rank.
    pattern = model.peft_config["default"].rank_pattern
    for name, param in model.base_model.model.named_parameters():
        if "lora_E" in name:
            assert int((param != 0).sum()) == sum(pattern[name])
    assert "adalora mean rank 8.0 (step 0) -> 2.0" in capsys.readouterr().out


def test_without_the_callback_adalora_is_plain_lora():
    recipe = resolve(ADALORA).recipe
    model = apply_method(small_llama(), recipe, total_steps=20)
    train(model, [], 20, call_callbacks=False)
    assert model.peft_config["default"].rank_pattern is None  # never allocated: rank 8 everywhere


def test_orthogonality_penalty_reaches_p_and_q():
    recipe = resolve(ADALORA).recipe
    model = apply_method(small_llama(), recipe, total_steps=20)
    (callback,) = method_callbacks(model, recipe)
    callback.on_pre_optimizer_step(None, TrainerState(), TrainerControl())
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n or "lora_B" in n)
    assert all(g is None for n, g in grads.items() if "lora_E" in n)
    # peft's own copy is off (TRL never reads outputs.loss), and the real weight is restored at the end.
    assert model.peft_config["default"].orth_reg_weight == 0.0
    callback.on_train_end(None, TrainerState(), TrainerControl())
    assert model.peft_config["default"].orth_reg_weight == recipe.method.orth_reg_weight


def test_schedule_without_a_budgeting_phase_names_both_keys():
    recipe = resolve([*ADALORA, "method.tinit=3", "method.tfinal=2"]).recipe
    with pytest.raises(RecipeError, match=r"method.tinit \(3 steps\) \+ method.tfinal \(2 steps\)"):
        apply_method(small_llama(), recipe, total_steps=5)
    with pytest.raises(RecipeError, match="needs the run's optimizer-step count"):
        apply_method(small_llama(), recipe)
