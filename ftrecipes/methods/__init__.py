"""Fine-tuning methods, registered by name (see `ftrecipes.methods.registry` for the contract).

| name | module | result | merge |
|---|---|---|---|
| full | full | whole model in model/ | (already full weights) |
| lora, dora, qlora | lora | adapter | yes |
| loha | lycoris | adapter | yes |
| adalora | adalora | adapter | yes |
| ia3 | ia3 | adapter | yes |
| prompt_tuning, p_tuning, p_tuning_v2 | prompts | adapter | no (virtual tokens) |

Adding a method: docs/methods.md ("How to add a method").
"""

from ftrecipes.methods import adalora, full, ia3, lora, lycoris, prompts  # noqa: F401  (registers the methods)
from ftrecipes.methods.registry import (
    METHODS,
    Method,
    adapter_methods,
    apply_method,
    count_parameters,
    describe_trainable,
    get,
    method_callbacks,
    register,
)

__all__ = ["METHODS", "Method", "adapter_methods", "apply_method", "count_parameters",
           "describe_trainable", "get", "method_callbacks", "register"]
