"""The train stage for `objective=pretrain`: continued pretraining on raw text.

`run_train(recipe, run_dir)` reads the text rows of `run_dir/data/` (`{"text": str}`,
`data.format=text`) and trains the next-token loss on every token with TRL's SFTTrainer in its
language-modeling form (the `text` column; the tokenizer's EOS ends each document). Saving is as
for every objective (`run_dir/adapter/` or `run_dir/model/`).

Features and the keys that control them:

- packing: `objective.packing` (default true) concatenates the documents and cuts them into
  blocks of `data.max_seq_len` tokens (TRL's `wrapped` strategy, the usual way to pretrain: no
  padding, and no attention kernel with sequence boundaries needed); false trains one document
  per row, cut at `data.max_seq_len`.
- schedule, precision, gradient checkpointing, validation loss, logging, seed: see
  `ftrecipes.train.common.training_arguments`.

Raises `DataError` when the train split is empty or holds rows other than text, and
`TrainingError` when the loss stops being finite.
"""

from __future__ import annotations

import math
from pathlib import Path

from ftrecipes.train.callbacks import standard_callbacks
from ftrecipes.train.common import load_rows, run_and_save, setup_model, training_arguments


def pretrain_config(recipe, run_dir: Path, has_eval: bool):
    """An SFTConfig that trains the language-modeling loss on the whole text."""
    from trl import SFTConfig

    return SFTConfig(
        **training_arguments(recipe, run_dir, has_eval),
        dataset_text_field="text",
        max_length=recipe.data.max_seq_len,
        packing=recipe.objective.packing,
        packing_strategy="wrapped",
        completion_only_loss=False,
    )


def training_sequences(recipe, run_dir: Path, rows: list[dict]) -> int:
    """How many sequences one epoch holds: packed blocks (`objective.packing`, estimated from the
    prepared token counts and `data.max_seq_len`), else rows. Methods such as AdaLoRA size their
    schedule from it before the trainer exists."""
    tokenized = Path(run_dir) / "data" / "tokenized" / "train"
    if not recipe.objective.packing or not tokenized.is_dir():
        return len(rows)
    from datasets import load_from_disk

    tokens = sum(len(ids) for ids in load_from_disk(str(tokenized))["input_ids"])
    return max(1, math.ceil(tokens / recipe.data.max_seq_len))


def run_train(recipe, run_dir: Path) -> dict:
    """Trains the next-token loss on the prepared text and saves the result; returns the summary."""
    from datasets import Dataset
    from trl import SFTTrainer

    run_dir = Path(run_dir)
    train_rows, eval_rows = load_rows(recipe, run_dir)
    model, tokenizer, trainable, total = setup_model(recipe, training_sequences(recipe, run_dir, train_rows))
    callbacks, metrics = standard_callbacks(recipe, run_dir, model)
    trainer = SFTTrainer(
        model=model,
        args=pretrain_config(recipe, run_dir, has_eval=bool(eval_rows)),
        train_dataset=Dataset.from_list([{"text": r["text"]} for r in train_rows]),
        eval_dataset=Dataset.from_list([{"text": r["text"]} for r in eval_rows]) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return run_and_save(trainer, tokenizer, recipe, run_dir, metrics, (trainable, total))
