"""The train stage for `objective=sft`: TRL's SFTTrainer on the prepared chat rows.

`run_train(recipe, run_dir)` reads `run_dir/data/{train,validation}.jsonl` (written by prepare),
turns each conversation into TRL's conversational prompt-completion form (prompt = every turn but
the last, completion = the last assistant turn), trains, and saves safetensors weights plus the
tokenizer to `run_dir/adapter/` (LoRA-family methods) or `run_dir/model/` (full).

Features and the keys that control them:

- base model: `model.*` (see `ftrecipes.model.load`); method: `method.name` and its keys (see
  `ftrecipes.model.methods`); learning rate: `method.learning_rate`.
- loss on the completion only: `objective.completion_only_loss`; packing: `objective.packing`.
- length: `data.max_seq_len` (prepare already dropped longer rows).
- schedule: `train.epochs`, `train.max_steps` (overrides epochs when set),
  `train.micro_batch_size`, `train.gradient_accumulation_steps`, `train.lr_scheduler`,
  `train.warmup_ratio`, `train.weight_decay`, `train.max_grad_norm`, `train.optimizer`.
- memory: `train.gradient_checkpointing`.
- validation loss: every `train.eval_interval` steps, or once per epoch when null; skipped when
  the validation split is empty.
- precision and device: `hardware.accelerator` (`cpu` forces the CPU), `hardware.mixed_precision`
  (`bf16`, `fp16` or `no`; always fp32 on the CPU).
- logging: `logging.log_interval` (steps between rows of `run_dir/metrics.jsonl`),
  `logging.progress_bars`. No experiment tracker is contacted.
- reproducibility: `seed` (data order, adapter initialisation).

Raises `RecipeError` for an objective other than sft, `DataError` when the train split is empty,
`TrainingError` when the loss stops being finite, and `EnvironmentProblem` for a method that
cannot train here (see `apply_method`).
"""

from __future__ import annotations

import time
from pathlib import Path

from ftrecipes.data.splits import read_split
from ftrecipes.errors import DataError, RecipeError
from ftrecipes.model.load import load_model_and_tokenizer
from ftrecipes.model.methods import ADAPTER_METHODS, apply_method, count_parameters
from ftrecipes.train.callbacks import standard_callbacks
from ftrecipes.train.schedule import total_optimizer_steps


def to_prompt_completion(rows: list[dict]) -> list[dict]:
    """`{"messages": [..., assistant]}` -> `{"prompt": [...], "completion": [assistant]}`."""
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def sft_config(recipe, run_dir: Path, has_eval: bool):
    """The SFTConfig for a recipe; every TRL default that matters is set explicitly."""
    from trl import SFTConfig

    train, hardware = recipe.train, recipe.hardware
    on_cpu = hardware.accelerator == "cpu"
    precision = "no" if on_cpu else hardware.mixed_precision
    if not has_eval:
        eval_strategy, eval_steps = "no", None
    elif train.eval_interval is None:
        eval_strategy, eval_steps = "epoch", None
    else:
        eval_strategy, eval_steps = "steps", train.eval_interval
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=train.epochs,
        max_steps=-1 if train.max_steps is None else train.max_steps,
        per_device_train_batch_size=train.micro_batch_size,
        per_device_eval_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=recipe.method.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=float(train.warmup_ratio),  # a float below 1 is a ratio of the total steps
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        optim=train.optimizer,
        gradient_checkpointing=train.gradient_checkpointing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=on_cpu,
        dataloader_pin_memory=not on_cpu,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps,
        logging_steps=recipe.logging.log_interval,
        logging_first_step=True,
        disable_tqdm=not recipe.logging.progress_bars,
        report_to=[],
        save_strategy="no",
        seed=recipe.seed,
        data_seed=recipe.seed,
        max_length=recipe.data.max_seq_len,
        packing=recipe.objective.packing,
        completion_only_loss=recipe.objective.completion_only_loss,
    )


def run_train(recipe, run_dir: Path) -> dict:
    """Trains the recipe's method on the prepared data and saves the result; returns a summary."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    run_dir = Path(run_dir)
    if recipe.objective.name != "sft":
        raise RecipeError(f"objective '{recipe.objective.name}' cannot train yet", hint="use objective=sft")
    train_rows = read_split(run_dir, "train")
    if not train_rows:
        raise DataError(
            f"no training rows in {run_dir / 'data' / 'train.jsonl'}",
            hint="run the prepare stage first, or lower data.split.validation and data.split.test",
        )
    eval_rows = read_split(run_dir, "validation")

    set_seed(recipe.seed)
    model, tokenizer = load_model_and_tokenizer(recipe)
    model = apply_method(model, recipe, total_steps=total_optimizer_steps(recipe, len(train_rows)))
    trainable, total = count_parameters(model)
    print(f"train: {recipe.method.name} on {recipe.model.name}: {trainable:,} of {total:,} parameters train")

    callbacks, metrics = standard_callbacks(recipe, run_dir, model)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(recipe, run_dir, has_eval=bool(eval_rows)),
        train_dataset=Dataset.from_list(to_prompt_completion(train_rows)),
        eval_dataset=Dataset.from_list(to_prompt_completion(eval_rows)) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    started = time.time()
    result = trainer.train()
    seconds = time.time() - started

    adapter = recipe.method.name in ADAPTER_METHODS
    out = run_dir / ("adapter" if adapter else "model")
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    losses = metrics.losses()
    summary = {
        "saved": str(out),
        "steps": result.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 1),
        "trainable_params": trainable,
        "total_params": total,
    }
    if losses:
        print(f"train: {result.global_step} steps in {seconds:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"train: saved {out}")
    return summary
