"""The speed keys as TrainingArguments: optimizer, activation checkpointing, compile, TF32, Liger.

`speed_arguments(recipe)` returns the keyword arguments every TRL config gets from them (see
`ftrecipes.train.common.training_arguments`). Keys:

- `train.optimizer`: transformers' `optim` name as given (`adamw_torch`, `adamw_torch_fused`,
  `adamw_8bit`, ...; `ftrecipes.config.rules_speed` refuses the ones this machine lacks).
- `train.gradient_checkpointing`: `false`; `true` (non-reentrant recompute); `reentrant`;
  `offload` (non-reentrant, saved activations in pinned host memory). transformers 5 calls this
  `activation_checkpointing` (+ `_kwargs`); the old name warns, and TRL's default of True for it
  would win when the new name is unset. Older releases know only `gradient_checkpointing`.
- `train.torch_compile`: transformers' `torch_compile` (inductor, default mode).
- `train.tf32`: `auto` is on for `hardware.accelerator=cuda` and left unset (None) elsewhere; TRL
  and transformers would otherwise decide from the torch version.
- `train.liger_kernel`: transformers' `use_liger_kernel` (it patches the model's modules through
  liger-kernel's own `apply_liger_kernel_to_*`, a hook upstream provides, so no patching here).

The attention kernel (`model.attn_implementation`) is a `from_pretrained` argument and lives in
`ftrecipes.model.load`; padding-free packing is `objective.packing` (`ftrecipes.train.sft`).
"""

from __future__ import annotations


def checkpointing_arguments(value) -> dict:
    """TrainingArguments for `train.gradient_checkpointing` (False, True, 'reentrant', 'offload').

    Non-reentrant is the default variant: the reentrant one needs an input that requires grad
    (with a frozen base and LoRA it silently drops gradients unless inputs are made to require
    them) and does not compose with torch.compile.
    """
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    new = "activation_checkpointing" in fields
    name = "activation_checkpointing" if new else "gradient_checkpointing"
    if not value:
        return {name: False}
    kwargs: dict = {"use_reentrant": value == "reentrant"}
    if value == "offload":
        kwargs["offload"] = True  # transformers 5: popped before torch.utils.checkpoint sees the rest
    return {name: True, f"{name}_kwargs": kwargs}


def tf32_argument(recipe) -> bool | None:
    value = recipe.train.tf32
    if value == "auto":
        return True if recipe.hardware.accelerator == "cuda" else None
    return bool(value)


def speed_arguments(recipe) -> dict:
    """Keyword arguments for TrainingArguments from the speed keys listed in the module docstring."""
    train = recipe.train
    return {
        "optim": train.optimizer,
        **checkpointing_arguments(train.gradient_checkpointing),
        "torch_compile": bool(train.torch_compile),
        "tf32": tf32_argument(recipe),
        "use_liger_kernel": bool(train.liger_kernel),
    }
