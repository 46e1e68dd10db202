"""LoRA and its variants: `lora`, `dora` and `qlora` (LoRA on a bitsandbytes-quantized base).

Recipe keys (all three): `method.r`, `method.lora_alpha`, `method.lora_dropout`,
`method.target_modules` (a list of module names, or `all-linear`: every linear layer but the
output head), `method.rslora` (scale by lora_alpha / sqrt(r) instead of / r) and
`method.modules_to_save` (modules trained in full and saved with the adapter, e.g. `lm_head`).
`qlora` also reads `method.quant_type`, `method.double_quant` and `method.compute_dtype`, used when
`ftrecipes.model.load` loads the base (see `ftrecipes.methods.quantized`).
"""

from __future__ import annotations

from ftrecipes.methods.registry import register


def lora_targets(method):
    """`all-linear` as peft spells it, or a plain list (peft rejects OmegaConf lists)."""
    targets = method.target_modules
    return targets if isinstance(targets, str) else [str(t) for t in targets]


def lora_config(method, **extra):
    from peft import LoraConfig

    return LoraConfig(
        r=method.r,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.lora_dropout,
        target_modules=lora_targets(method),
        use_rslora=method.rslora,
        modules_to_save=[str(m) for m in method.modules_to_save] or None,
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )


@register("lora")
def lora(model, method, total_steps=None):
    """LoRA adapters on `method.target_modules`; the base weights stay frozen."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(method))


@register("dora")
def dora(model, method, total_steps=None):
    """DoRA: LoRA on the direction of each weight plus a trained magnitude vector per layer."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(method, use_dora=True))


@register("qlora", quantized_base=True)
def qlora(model, method, total_steps=None):
    """LoRA on a base that `ftrecipes.model.load` loaded in 4-bit (or 8-bit) through bitsandbytes.

    Raises `EnvironmentProblem` when the base is not actually quantized.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    from ftrecipes.methods.quantized import require_quantized

    require_quantized(model, method)
    # Gradient checkpointing belongs to the trainer (train.gradient_checkpointing), so it is not
    # switched on here; this only casts norms and embeddings to fp32 and freezes the base.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(method))
