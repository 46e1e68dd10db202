"""The train stage for `objective=dpo`: TRL's DPOTrainer on prepared preference pairs.

`run_train(recipe, run_dir)` reads the preference rows of `run_dir/data/` (`{"messages": prompt
turns, "chosen": [answer], "rejected": [answer]}`), passes them to DPOTrainer in TRL's
conversational form (`prompt`, `chosen`, `rejected`), trains, and saves like every objective
(`run_dir/adapter/` or `run_dir/model/`).

Features and the keys that control them:

- the DPO loss: `objective.beta` (how far the policy may move from the reference),
  `objective.loss_type` (`sigmoid` is the paper's loss; `ipo`, `hinge`, `robust`, ... are TRL's
  variants), `objective.label_smoothing` (robust/EXO losses).
- the reference model (the policy before training):
  - adapter methods (`method.name` lora, ...): no second model. TRL keeps a frozen copy of the
    initial adapter (`ref`) and scores the reference with it; for LoRA-family adapters, which
    start as a no-op, that is the base model. Only the trained adapter is saved.
  - `method.name=full`, and `adalora` (whose peft model holds one trainable adapter only): a
    second, frozen copy of the base, loaded like the policy (`model.*`).
  - `objective.precompute_ref_log_probs=true`: reference log-probabilities are computed once
    before training, so no reference model stays in memory (full fine-tuning included).
- length: `data.max_seq_len` (prompt + answer; longer pairs are cut from the end).
- schedule, precision, gradient checkpointing, validation, logging, seed: see
  `ftrecipes.train.common.training_arguments`. The summary adds the first and last logged
  `rewards/accuracies` (how often the implicit reward prefers the chosen answer).

Raises `DataError` when the train split is empty or holds rows other than preference pairs, and
`TrainingError` when the loss stops being finite.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.train.callbacks import standard_callbacks
from ftrecipes.train.common import first_and_last, load_rows, run_and_save, setup_model, training_arguments


def to_preference(rows: list[dict]) -> list[dict]:
    """Internal preference rows -> TRL's conversational `{"prompt", "chosen", "rejected"}`."""
    return [{"prompt": r["messages"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def dpo_config(recipe, run_dir: Path, has_eval: bool):
    """The DPOConfig for a recipe; TRL's defaults that matter are set explicitly."""
    from trl import DPOConfig

    objective = recipe.objective
    return DPOConfig(
        **training_arguments(recipe, run_dir, has_eval),
        beta=objective.beta,
        loss_type=[objective.loss_type],
        label_smoothing=objective.label_smoothing,
        precompute_ref_log_probs=objective.precompute_ref_log_probs,
        max_length=recipe.data.max_seq_len,
        truncation_mode="keep_start",
        # TRL's default; stated because dropout would make the policy and the reference disagree
        disable_dropout=True,
        trust_remote_code=recipe.trust_remote_code,
    )


# peft configs whose model holds a single trainable adapter, so TRL cannot add its frozen `ref`
# copy: these get a frozen copy of the base instead (they start as a no-op, like LoRA).
SINGLE_ADAPTER_CONFIGS = ("AdaLoraConfig",)


def reference_model(recipe, model):
    """The frozen reference model, or None when TRL derives the reference itself (see the module
    docstring): a copy of the base for full fine-tuning and single-adapter methods (AdaLoRA)."""
    from ftrecipes.model.load import load_model_and_tokenizer

    peft_config = getattr(model, "peft_config", None)
    single_adapter = bool(peft_config) and type(peft_config["default"]).__name__ in SINGLE_ADAPTER_CONFIGS
    if peft_config and not single_adapter:
        return None
    if recipe.objective.precompute_ref_log_probs and not single_adapter:
        return None
    reference, _ = load_model_and_tokenizer(recipe)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def run_train(recipe, run_dir: Path) -> dict:
    """Trains with the DPO loss and saves the result; returns the summary."""
    from datasets import Dataset
    from trl import DPOTrainer

    run_dir = Path(run_dir)
    train_rows, eval_rows = load_rows(recipe, run_dir)
    model, tokenizer, trainable, total = setup_model(recipe, len(train_rows))
    callbacks, metrics = standard_callbacks(recipe, run_dir, model)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference_model(recipe, model),
        args=dpo_config(recipe, run_dir, has_eval=bool(eval_rows)),
        train_dataset=Dataset.from_list(to_preference(train_rows)),
        eval_dataset=Dataset.from_list(to_preference(eval_rows)) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    summary = run_and_save(trainer, tokenizer, recipe, run_dir, metrics, (trainable, total))
    first, last = first_and_last(metrics, "rewards/accuracies", window=3)
    summary.update(first_reward_accuracy=first, last_reward_accuracy=last)
    if last is not None:
        print(f"train: reward accuracy {first:.2f} -> {last:.2f} (logged training batches)")
    return summary
