"""The train stage: `run_train(recipe, run_dir)` runs the trainer of `objective.name`.

Objectives are thin adapters over TRL trainers, registered by name in `OBJECTIVES`:

- `sft` (`ftrecipes.train.sft`): SFTTrainer on conversations, the default;
- `dpo` (`ftrecipes.train.dpo`): DPOTrainer on preference pairs;
- `grpo` (`ftrecipes.train.grpo`): GRPOTrainer on prompts, scored by `objective.rewards`;
- `pretrain` (`ftrecipes.train.pretrain`): next-token loss on raw text (continued pretraining).

`ACCEPTS` says which prepared row kinds (docs/data.md) each objective trains on, and
`FORMAT_KINDS` which kind each `data.format` yields; validation (`ftrecipes.config.rules_objectives`)
refuses a declared format an objective cannot use, and the trainers refuse rows of the wrong kind
(from `data.format=auto`) with a `DataError` naming both keys.

This module imports nothing heavy, so validation rules can read its tables.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ftrecipes.errors import RecipeError

OBJECTIVES = {
    "sft": "ftrecipes.train.sft:run_train",
    "dpo": "ftrecipes.train.dpo:run_train",
    "grpo": "ftrecipes.train.grpo:run_train",
    "pretrain": "ftrecipes.train.pretrain:run_train",
}
# Row kinds: sft = messages ending with an assistant answer; preference = prompt + chosen/rejected;
# prompt = messages ending with a user turn; text = raw text.
ACCEPTS = {
    "sft": ("sft",),
    "dpo": ("preference",),
    # GRPO samples its own completions; an answer, when rows have one, is the `reference` column
    # that rewards such as exact_match compare with.
    "grpo": ("prompt", "sft"),
    "pretrain": ("text",),
}
FORMAT_KINDS = {"alpaca": "sft", "chat": "sft", "sharegpt": "sft", "preference": "preference",
                "prompt": "prompt", "text": "text"}
# The data.format to suggest when an objective is given rows it cannot use.
SUGGESTED_FORMAT = {"sft": "alpaca, chat or sharegpt", "dpo": "preference",
                    "grpo": "prompt (or alpaca, chat, sharegpt: the answer becomes the reference)",
                    "pretrain": "text"}


def run_train(recipe, run_dir: Path) -> dict:
    """Trains `recipe.objective.name` on the prepared splits; returns the trainer's summary.

    Reads `objective.name`; the objective's module documents every other key it reads.
    """
    name = recipe.objective.name
    if name not in OBJECTIVES:
        raise RecipeError(f"objective '{name}' is unknown", hint=f"use one of: {', '.join(OBJECTIVES)}")
    module, function = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), function)(recipe, Path(run_dir))
