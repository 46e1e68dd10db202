"""The method layer as the stages import it; the methods themselves live in `ftrecipes.methods`.

- `apply_method(model, recipe, total_steps=None)`: the model to train for `recipe.method.name`.
- `method_callbacks(model, recipe)`: per-step TrainerCallbacks the method needs (AdaLoRA's).
- `count_parameters(model)` / `describe_trainable(model)`: trainable and total parameters.
- `ADAPTER_METHODS`: methods whose result is a peft adapter on a frozen base (saved to adapter/).
- `METHODS`: name -> `ftrecipes.methods.Method` (its function and facts).
"""

from __future__ import annotations

from ftrecipes.methods import (
    METHODS,
    adapter_methods,
    apply_method,
    count_parameters,
    describe_trainable,
    method_callbacks,
)

ADAPTER_METHODS = frozenset(adapter_methods())

__all__ = ["ADAPTER_METHODS", "METHODS", "apply_method", "count_parameters", "describe_trainable",
           "method_callbacks"]
