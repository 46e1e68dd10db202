"""LyCORIS-style low-rank methods: `loha` (low-rank Hadamard product).

Recipe keys: `method.r` (rank of each of the two factor pairs; the update's rank can reach r^2),
`method.alpha` (scale = alpha / r), `method.rank_dropout` (drops ranks of the update during
training), `method.module_dropout` (skips a whole adapted layer during training) and
`method.target_modules` (`all-linear` or a list of module names). Mergeable like LoRA.
"""

from __future__ import annotations

from ftrecipes.methods.lora import lora_targets
from ftrecipes.methods.registry import register


@register("loha", merge=True)
def loha(model, method, total_steps=None):
    """LoHa adapters: (A1 B1) * (A2 B2), an elementwise product of two low-rank products."""
    from peft import LoHaConfig, get_peft_model

    config = LoHaConfig(
        r=method.r,
        alpha=method.alpha,
        rank_dropout=method.rank_dropout,
        module_dropout=method.module_dropout,
        target_modules=lora_targets(method),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
