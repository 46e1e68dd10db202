"""The train stage for `objective=sft`: TRL's SFTTrainer on the prepared chat rows.

`run_train(recipe, run_dir)` reads `run_dir/data/{train,validation}.jsonl` (written by prepare),
turns each conversation into TRL's conversational prompt-completion form (prompt = every turn but
the last, completion = the last assistant turn), trains, and saves safetensors weights plus the
tokenizer to `run_dir/adapter/` (adapter methods) or `run_dir/model/` (full).

Features and the keys that control them:

- base model: `model.*` (see `ftrecipes.model.load`); method: `method.name` and its keys (see
  `ftrecipes.model.methods`); learning rate: `method.learning_rate`.
- loss on the completion only: `objective.completion_only_loss`; packing: `objective.packing`
  (TRL's best-fit packing; with sdpa or eager attention each packed row stays a batch row, see
  `ftrecipes.train.packed_rows`).
- length: `data.max_seq_len` (prepare already dropped longer rows).
- reuse of TRL's tokenized (and packed) rows by later runs over the same data and settings:
  `data.cache.enabled` (see `ftrecipes.train.tokenized_cache`).
- schedule, precision, gradient checkpointing, validation, logging, seed: the `train.*`,
  `hardware.*`, `logging.*` keys listed in `ftrecipes.train.common.training_arguments`.

Raises `DataError` when the train split is empty or holds rows other than conversations ending
with an answer, `TrainingError` when the loss stops being finite, and `EnvironmentProblem` for a
method that cannot train here (see `apply_method`).
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.errors import RecipeError
from ftrecipes.train import tokenized_cache
from ftrecipes.train.callbacks import standard_callbacks
from ftrecipes.train.common import load_rows, run_and_save, setup_model, training_arguments
from ftrecipes.train.packed_rows import PackedRowsCollator, wants_packed_rows


def to_prompt_completion(rows: list[dict]) -> list[dict]:
    """`{"messages": [..., assistant]}` -> `{"prompt": [...], "completion": [assistant]}`."""
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def sft_config(recipe, run_dir: Path, has_eval: bool):
    """The SFTConfig for a recipe; every TRL default that matters is set explicitly."""
    from trl import SFTConfig

    return SFTConfig(
        **training_arguments(recipe, run_dir, has_eval),
        max_length=recipe.data.max_seq_len,
        packing=recipe.objective.packing,
        completion_only_loss=recipe.objective.completion_only_loss,
    )


def run_train(recipe, run_dir: Path) -> dict:
    """Trains the recipe's method on the prepared data and saves the result; returns a summary."""
    from datasets import Dataset
    from trl import SFTTrainer

    run_dir = Path(run_dir)
    if recipe.objective.name != "sft":
        raise RecipeError(f"the sft trainer got objective '{recipe.objective.name}'",
                          hint="run the train stage through ftrecipes.train.stage.run_train")
    train_rows, eval_rows = load_rows(recipe, run_dir)
    model, tokenizer, trainable, total = setup_model(recipe, len(train_rows))
    callbacks, metrics = standard_callbacks(recipe, run_dir, model)
    args = sft_config(recipe, run_dir, has_eval=bool(eval_rows))
    key = tokenized_cache.cache_key(recipe, run_dir, args, tokenizer)
    cached = tokenized_cache.load(key, has_eval=bool(eval_rows))
    if cached is not None:
        train_data, eval_data = cached
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        print(f"train: tokenized rows from {tokenized_cache.entry_folder(key)} (data.cache.enabled)", flush=True)
    else:
        train_data = Dataset.from_list(to_prompt_completion(train_rows))
        eval_data = Dataset.from_list(to_prompt_completion(eval_rows)) if eval_rows else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                         processing_class=tokenizer, callbacks=callbacks)
    saved = None if cached is not None else tokenized_cache.save(key, trainer.train_dataset, trainer.eval_dataset)
    if saved is not None:
        print(f"train: tokenized rows saved to {saved} for later runs (data.cache.enabled)", flush=True)
    if wants_packed_rows(recipe):
        # TRL refuses a collator argument with packing (it forces its padding-free one), so ours
        # replaces it on the built trainer; the packed dataset's columns are the same
        trainer.data_collator = PackedRowsCollator(tokenizer.pad_token_id, trainer.args.pad_to_multiple_of)
    return run_and_save(trainer, tokenizer, recipe, run_dir, metrics, (trainable, total))
