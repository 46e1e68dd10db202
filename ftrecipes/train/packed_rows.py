"""Packed rows kept as batch rows, for `objective.packing=true` with sdpa or eager attention.

TRL's padding-free collator concatenates the whole micro-batch into one sequence (batch of 1,
micro_batch_size x max_seq_len tokens). FlashAttention's varlen kernel skips the masked blocks
of such a sequence, but sdpa and eager apply the block-diagonal mask to the full square score
matrix, so the attention work per token grows with the micro-batch size (measured on CPU, hidden
64, 2,048 tokens: 327 ms for one sequence against 133 ms for 4 rows of 512, forward + backward).

`PackedRowsCollator` keeps each packed row as its own batch row, padded to the longest one, with
`position_ids` that restart at 0 for every sample and no `attention_mask`: transformers then
builds the block-diagonal causal mask per row from the restarts
(`masking_utils.find_packed_sequence_indices`; TRL's `compute_loss` passes `use_cache=False`,
which that needs). Pad positions are 0 as well, so each pad token is its own one-token sample.
Labels of every sample's first token are -100, as in TRL's padding-free collator (they would be
predicted from the previous sample's last token).

Recipe keys: `objective.packing`, `model.attn_implementation` (flash attention keeps TRL's
padding-free batches, which its varlen kernel needs).
"""

from __future__ import annotations


class PackedRowsCollator:
    """TRL's collator with `return_position_ids`, minus the attention mask (see the module docstring)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=False,
                                                     return_position_ids=True, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.inner(examples)
        batch.pop("attention_mask")
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def wants_packed_rows(recipe) -> bool:
    """Rows as batch rows for packed SFT, unless a flash-attention kernel wants the flat sequence."""
    return bool(recipe.objective.packing) and not recipe.model.attn_implementation.startswith("flash_attention")
