"""Packed rows attend only within each sample (`objective.packing=true`).

TRL's padding-free collator and ftrecipes' `PackedRowsCollator` (sdpa and eager) give the
model `position_ids` that restart at 0 for every sample and no `attention_mask`; transformers' masking utilities then build a block-diagonal causal
mask from the restarts (`find_packed_sequence_indices`). These tests check that on a real,
randomly initialised Llama, not on a mock: the logits of a packed row equal those of each
sample run alone. A control packs with continuous positions and must differ, so the check
would catch attention leaking across samples.

The packed call passes `use_cache=False`, as TRL's `SFTTrainer.compute_loss` does for every
training batch: transformers (5.23) looks for packed position_ids only when there is no cache,
and a forward with the config's default `use_cache=True` creates one, so the same call without
it leaks attention across samples (measured: logits off by up to 0.46). Code that feeds packed
rows to a model outside TRL must do the same.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

LENGTHS = (5, 9, 3, 7)


def tiny_llama(attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=64,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).eval()


def samples() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 128, (n,), generator=generator) for n in LENGTHS]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_row_gives_each_sample_its_own_logits(attn):
    model, parts = tiny_llama(attn), samples()
    packed = torch.cat(parts)[None]
    positions = torch.cat([torch.arange(len(p)) for p in parts])[None]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0]
        alone = [model(input_ids=p[None]).logits[0] for p in parts]
    start = 0
    for part, logits in zip(parts, alone):
        torch.testing.assert_close(together[start:start + len(part)], logits, atol=1e-5, rtol=0)
        start += len(part)


def test_continuous_positions_would_leak_across_samples():
    model, parts = tiny_llama("sdpa"), samples()
    packed = torch.cat(parts)[None]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=torch.arange(packed.shape[1])[None],
                         use_cache=False).logits[0]
        second = model(input_ids=parts[1][None]).logits[0]
    start = len(parts[0])
    assert (together[start:start + len(parts[1])] - second).abs().max() > 1e-3


def test_trl_padding_free_batches_carry_restarting_positions_and_no_mask():
    """What SFTTrainer feeds the model with packing (bfd implies padding_free)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    rows = [{"input_ids": torch.cat(samples()[:2]).tolist(), "seq_lengths": list(LENGTHS[:2])},
            {"input_ids": torch.cat(samples()[2:]).tolist(), "seq_lengths": list(LENGTHS[2:])}]
    batch = collator(rows)
    assert "attention_mask" not in batch
    expected = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    assert torch.equal(batch["position_ids"], expected)


def test_packed_rows_as_batch_rows_give_the_padding_free_loss():
    """`ftrecipes.train.packed_rows` (sdpa/eager) trains on exactly what TRL's flat sequence does."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ftrecipes.train.packed_rows import PackedRowsCollator

    model, parts = tiny_llama("sdpa"), samples()
    rows = [{"input_ids": torch.cat(parts[:2]).tolist(), "seq_lengths": list(LENGTHS[:2])},
            {"input_ids": torch.cat(parts[2:]).tolist(), "seq_lengths": list(LENGTHS[2:])}]
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    batched = PackedRowsCollator(pad_token_id=0)(rows)
    assert "attention_mask" not in batched and batched["input_ids"].shape == (2, max(LENGTHS[0] + LENGTHS[1],
                                                                                      LENGTHS[2] + LENGTHS[3]))
    assert (flat["labels"] != -100).sum() == (batched["labels"] != -100).sum()
    with torch.no_grad():
        losses = [model(**{k: batch[k] for k in ("input_ids", "labels", "position_ids")}, use_cache=False).loss
                  for batch in (flat, batched)]
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)


def packed_batch():
    """Two packed rows of different lengths, so the shorter one ends in pad positions."""
    from ftrecipes.train.packed_rows import PackedRowsCollator

    parts = samples() + [torch.arange(1, 2)]  # a one-token sample too
    rows = [{"input_ids": torch.cat(parts[:2]).tolist(), "seq_lengths": list(LENGTHS[:2])},
            {"input_ids": torch.cat(parts[2:]).tolist(), "seq_lengths": [*LENGTHS[2:], 1]}]
    return PackedRowsCollator(pad_token_id=0)(rows)


def test_one_causal_call_per_sample_gives_the_masked_sdpa_logits_and_gradients():
    """`ftrecipes.train.packed_attention`: the same logits and gradients as transformers' masked sdpa."""
    from ftrecipes.train import packed_attention

    packed_attention.register()
    batch = packed_batch()
    assert (batch["position_ids"][1, -4:] == 0).all()  # a one-token sample, then 3 pads: each its own sample
    results = []
    for attn in ("sdpa", packed_attention.NAME):
        model = tiny_llama("sdpa").train()
        model.set_attn_implementation(attn)
        out = model(**batch, use_cache=False)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((out.logits.detach(), out.loss.detach(), grads))
    (logits, loss, grads), (logits2, loss2, grads2) = results
    real = batch["labels"] != -100
    torch.testing.assert_close(logits2[real], logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss2, loss, atol=1e-6, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads2[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_packed_attention_is_set_only_for_packed_sdpa_training_and_undone_after():
    from ftrecipes.config.resolve import resolve
    from ftrecipes.train.packed_attention import NAME, packed_attention, segments

    assert segments([0, 1, 2, 0, 1, 0, 0, 0]) == [(0, 3), (3, 5), (5, 6), (6, 7), (7, 8)]
    model = tiny_llama("sdpa")
    with packed_attention(resolve(["objective.packing=true"]).recipe, model) as active:
        assert active and model.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"
    for overrides in ([], ["objective.packing=true", "model.attn_implementation=eager"]):
        with packed_attention(resolve(overrides).recipe, model) as active:
            assert not active and model.config._attn_implementation == "sdpa"
