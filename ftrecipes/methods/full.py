"""Full fine-tuning: every parameter trains; the train stage saves the whole model to model/."""

from __future__ import annotations

from ftrecipes.errors import RecipeError
from ftrecipes.methods.registry import register


@register("full", adapter=False, merge="full fine-tuning writes the whole model to model/ itself")
def full(model, method, total_steps=None):
    """Unfreezes every parameter.

    Raises `RecipeError` for a quantized base: 4-bit or 8-bit weights cannot take gradient steps.
    """
    if getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None:
        raise RecipeError(
            f"method.name=full cannot train the quantized model at model.path '{model.name_or_path}': "
            "its weights are stored in 4 or 8 bits and take no gradient steps",
            hint="use method=qlora on a quantized base, or point model.path at unquantized weights")
    for param in model.parameters():
        param.requires_grad_(True)
    return model
