"""(IA)^3: trained vectors that rescale keys, values and the feed-forward input; the base is frozen.

Recipe keys: `method.target_modules` (layers whose activations are rescaled) and
`method.feedforward_modules` (those among them that are feed-forward layers: their input, not
their output, is rescaled). Mergeable: each vector folds into its layer's weight.
"""

from __future__ import annotations

from ftrecipes.methods.registry import register


@register("ia3")
def ia3(model, method, total_steps=None):
    """(IA)^3 scaling vectors on `method.target_modules`."""
    from peft import IA3Config, get_peft_model

    config = IA3Config(
        target_modules=[str(m) for m in method.target_modules],
        feedforward_modules=[str(m) for m in method.feedforward_modules],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
