"""The method registry: each method is a plain function, registered by name with a few facts.

    @register("dora", learning_rate=(2e-4, 5e-4), merge=True)
    def dora(model, method, total_steps):
        ...
        return get_peft_model(model, config)

A method function takes the loaded base model, the recipe's `method` block and the run's
optimizer-step count (`ftrecipes.train.schedule`; `None` outside training), and returns the model
to train. What the rest of ftrecipes needs to know about a method is declared at registration:

- `adapter`: the result is a peft adapter on a frozen base (saved to `adapter/`, not `model/`).
- `merge`: `True` when export can fold the adapter into the base weights, else a sentence that
  says why not (export then keeps the adapter and prints it).
- `quantized_base`: the base is loaded through bitsandbytes (`ftrecipes.methods.quantized`).
- `callbacks`: `(model, method) -> [TrainerCallback]`, hooks the method needs every step; every
  objective's trainer gets them through `ftrecipes.train.callbacks.standard_callbacks`.

Importing this module (and `ftrecipes.methods`) imports neither torch nor peft, so validation and
dry runs can ask about methods cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ftrecipes.errors import RecipeError


@dataclass(frozen=True)
class Method:
    name: str
    apply: Callable  # (model, method_cfg, total_steps) -> model
    adapter: bool = True
    merge: bool | str = True  # True, or why the adapter cannot be merged
    quantized_base: bool = False
    callbacks: Callable | None = None  # (model, method_cfg) -> list of TrainerCallback

    @property
    def mergeable(self) -> bool:
        return self.merge is True


METHODS: dict[str, Method] = {}


def register(name: str, **facts) -> Callable:
    """Decorator: registers `fn` as method `name` (see the module docstring for `facts`)."""

    def add(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice")
        METHODS[name] = Method(name, fn, **facts)
        return fn

    return add


def get(name: str) -> Method:
    if name not in METHODS:
        raise RecipeError(f"method '{name}' is unknown", hint=f"use one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def apply_method(model, recipe, total_steps: int | None = None):
    """Applies `recipe.method.name` to `model` and returns the model to train.

    `total_steps` is the run's optimizer-step count, for methods whose configuration depends on
    the schedule (AdaLoRA's budget). Raises `RecipeError` for an unknown name or a combination
    the method refuses (each method's docstring lists them).
    """
    return get(recipe.method.name).apply(model, recipe.method, total_steps)


def method_callbacks(model, recipe) -> list:
    """TrainerCallbacks the method needs every step (e.g. AdaLoRA's rank reallocation)."""
    method = get(recipe.method.name)
    return list(method.callbacks(model, recipe.method)) if method.callbacks else []


def adapter_methods() -> set[str]:
    return {name for name, m in METHODS.items() if m.adapter}


def parameter_size(param) -> int:
    """Logical number of weights: bitsandbytes packs two 4-bit weights per uint8 element."""
    n = param.numel()
    if type(param).__name__ == "Params4bit":
        # Params4bit stores its weights packed in `quant_storage` elements (uint8 by default: 2 per byte).
        return n * param.element_size() * 2
    return n


def count_parameters(model) -> tuple[int, int]:
    """`(trainable, total)` parameter counts; 4-bit weights count as the weights they stand for."""
    trainable = total = 0
    for param in model.parameters():
        size = parameter_size(param)
        total += size
        if param.requires_grad:
            trainable += size
    return trainable, total


def describe_trainable(model) -> dict:
    """`{"trainable_params", "total_params", "trainable_fraction"}` for the run dir's summaries."""
    trainable, total = count_parameters(model)
    return {"trainable_params": trainable, "total_params": total,
            "trainable_fraction": trainable / total if total else 0.0}
