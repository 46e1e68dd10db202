"""Fine-tuning methods: plain functions `(model, method_cfg) -> model`, registered by name.

`apply_method(model, recipe)` looks up `recipe.method.name` in `METHODS`:

- `full`: every parameter trains (`method.learning_rate` is read by the train stage).
- `lora`: peft LoRA adapters; `method.r`, `method.lora_alpha`, `method.lora_dropout`,
  `method.target_modules` (a list of module names, or `all-linear`), `method.rslora`
  (rank-stabilised scaling) and `method.modules_to_save` (modules trained in full and saved with
  the adapter).

Raises `EnvironmentProblem` for a method that recipes can declare and plan but that cannot train
yet (`qlora`), and `RecipeError` for an unknown name.
"""

from __future__ import annotations

from collections.abc import Callable

from ftrecipes.errors import EnvironmentProblem, RecipeError

# Methods whose result is an adapter on a frozen base (saved to adapter/, merged by export).
ADAPTER_METHODS = {"lora", "qlora"}

# Declared in recipes/method/, planned by dry runs, but not trainable in this release.
NOT_TRAINABLE_YET = {
    "qlora": "it needs bitsandbytes and a CUDA GPU, and its training path comes in a later release",
}


def full(model, method_cfg):
    """Full fine-tuning: every parameter trains."""
    del method_cfg
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def lora(model, method_cfg):
    """LoRA adapters on `method.target_modules`; the base weights stay frozen."""
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model

    targets = method_cfg.target_modules
    if not isinstance(targets, str):
        targets = list(OmegaConf.to_container(targets))
    config = LoraConfig(
        r=method_cfg.r,
        lora_alpha=method_cfg.lora_alpha,
        lora_dropout=method_cfg.lora_dropout,
        target_modules=targets,
        use_rslora=method_cfg.rslora,
        modules_to_save=list(method_cfg.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


METHODS: dict[str, Callable] = {"full": full, "lora": lora}


def apply_method(model, recipe, total_steps: int | None = None):
    """Applies `recipe.method.name` to `model` and returns the model to train.

    `total_steps` is the run's optimizer-step count (`ftrecipes.train.schedule`), for methods
    whose configuration depends on the schedule.
    """
    name = recipe.method.name
    if name in METHODS:
        return METHODS[name](model, recipe.method)
    if name in NOT_TRAINABLE_YET:
        raise EnvironmentProblem(
            f"method '{name}' is not trainable yet: {NOT_TRAINABLE_YET[name]}",
            hint=f"plan it with dry_run=true, or train with method=lora ({', '.join(METHODS)} train)",
        )
    raise RecipeError(f"method '{name}' is unknown", hint=f"use one of: {', '.join(METHODS)}")


def method_callbacks(model, recipe) -> list:
    """TrainerCallbacks the method needs every step (none for full and lora)."""
    del model, recipe
    return []


def count_parameters(model) -> tuple[int, int]:
    """`(trainable, total)` parameter counts."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total
