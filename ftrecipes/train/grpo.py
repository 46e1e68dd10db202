"""The train stage for `objective=grpo`: TRL's GRPOTrainer, rewarded by `objective.rewards`.

`run_train(recipe, run_dir)` reads the prompts of `run_dir/data/`: prompt-only rows
(`data.format=prompt`), or conversations whose final answer becomes the `reference` column that
rewards such as `exact_match` compare with (alpaca, chat, sharegpt). For each prompt the policy
samples `objective.num_generations` completions; each is scored by the rewards, and the policy
moves toward the completions that scored above their group's mean. Saving is as for every
objective (`run_dir/adapter/` or `run_dir/model/`).

Features and the keys that control them:

- sampling: `objective.num_generations` (completions per prompt, at least 2),
  `objective.max_completion_length` (tokens), `objective.temperature`.
- rewards: `objective.rewards` (a list of `{name, weight, ...}`; built-ins, entry points and
  allowlisted dotted paths, see `ftrecipes.train.rewards`), `reward_modules` (the command-line
  allowlist of modules that user rewards may come from).
- the loss: `objective.loss_type` (TRL's `dapo` by default, `grpo`, `dr_grpo`, `bnpo`),
  `objective.beta` (the KL penalty toward the reference, the policy before training; 0 loads no
  reference: adapter methods then keep a frozen copy of the initial adapter, full fine-tuning a
  second copy of the base, as TRL does).
- batch: `train.micro_batch_size` counts completions, not prompts (a rule checks that it is a
  multiple of `objective.num_generations`); one generation round per optimizer step.
- length of the prompt: `data.max_seq_len` bounds the prepared rows.
- schedule, precision, gradient checkpointing, validation (mean reward on the validation
  prompts), logging, seed: see `ftrecipes.train.common.training_arguments`. The summary adds the
  mean reward of the first and last logged steps.

Raises `DataError` for rows of the wrong kind or an `exact_match` reward without references,
`RecipeError` for a reward that cannot be used (see `ftrecipes.train.rewards`), and
`TrainingError` when the loss stops being finite.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.errors import DataError
from ftrecipes.train import rewards as reward_registry
from ftrecipes.train.callbacks import standard_callbacks
from ftrecipes.train.common import first_and_last, load_rows, row_kind, run_and_save, setup_model, training_arguments


def to_prompts(rows: list[dict]) -> list[dict]:
    """`{"prompt": turns before the answer, "reference": answer}`; no `reference` without answers."""
    out = []
    for row in rows:
        if row_kind(row) == "sft":
            out.append({"prompt": row["messages"][:-1], "reference": row["messages"][-1]["content"]})
        else:
            out.append({"prompt": row["messages"]})
    return out


def build_rewards(recipe, has_reference: bool) -> list:
    """One callable per `objective.rewards` entry; `reward_modules` is the user allowlist."""
    built = [reward_registry.build(entry, recipe.reward_modules) for entry in recipe.objective.rewards]
    for index, reward in enumerate(built):
        if reward.needs_reference and not has_reference:
            raise DataError(
                f"objective.rewards[{index}] ({reward.__name__}) compares with a reference answer, but the "
                f"prepared rows have none (data.format={recipe.data.format})",
                hint="use rows with answers (data.format=alpaca, chat or sharegpt), or a reward that needs no "
                "reference (regex, json_schema, length_penalty)",
            )
    return built


def grpo_config(recipe, run_dir: Path, has_eval: bool):
    """The GRPOConfig for a recipe; TRL's defaults that matter are set explicitly."""
    from trl import GRPOConfig

    objective = recipe.objective
    return GRPOConfig(
        **training_arguments(recipe, run_dir, has_eval),
        num_generations=objective.num_generations,
        max_completion_length=objective.max_completion_length,
        temperature=objective.temperature,
        beta=objective.beta,
        loss_type=objective.loss_type,
        reward_weights=[float(entry.get("weight", 1.0)) for entry in objective.rewards],
        # keep the `reference` column: rewards read it
        remove_unused_columns=False,
        # TRL's default, stated: sampled completions can repeat row content, which is never printed
        log_completions=False,
        trust_remote_code=recipe.trust_remote_code,
    )


def run_train(recipe, run_dir: Path) -> dict:
    """Trains with GRPO and saves the result; returns the summary."""
    from datasets import Dataset
    from trl import GRPOTrainer

    run_dir = Path(run_dir)
    train_rows, eval_rows = load_rows(recipe, run_dir)
    train_data, eval_data = to_prompts(train_rows), to_prompts(eval_rows)
    has_reference = all("reference" in row for row in train_data + eval_data)
    rewards = build_rewards(recipe, has_reference)
    # every prompt is repeated num_generations times: that is what the step count depends on
    model, tokenizer, trainable, total = setup_model(recipe, len(train_rows) * recipe.objective.num_generations)
    callbacks, metrics = standard_callbacks(recipe, run_dir, model)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=grpo_config(recipe, run_dir, has_eval=bool(eval_rows)),
        train_dataset=Dataset.from_list(train_data),
        eval_dataset=Dataset.from_list(eval_data) if eval_data else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    summary = run_and_save(trainer, tokenizer, recipe, run_dir, metrics, (trainable, total))
    first, last = first_and_last(metrics, "reward", window=3)
    summary.update(first_reward=first, last_reward=last)
    if last is not None:
        print(f"train: mean reward {first:.3f} -> {last:.3f} (first and last logged steps)")
    return summary
