"""Prompt-learning methods: trained virtual tokens in front of the input, the base untouched.

- `prompt_tuning`: `method.num_virtual_tokens` trained input embeddings; `method.init` is `random`
  or `text` (start from the embeddings of `method.init_text`, repeated or cut to length).
- `p_tuning`: virtual tokens produced by a small MLP encoder (`method.encoder_hidden_size`,
  `method.encoder_dropout`), which reparameterises them for more stable training.
- `p_tuning_v2`: prefix tuning over all layers: trained keys and values for every attention layer
  (`method.num_virtual_tokens` of them), optionally through a projection MLP
  (`method.prefix_projection`, `method.encoder_hidden_size`).

None of them can be merged into the base: they add inputs (or attention prefixes), not weight
deltas. `p_tuning_v2` cannot train with `train.gradient_checkpointing` (see
`ftrecipes.config.rules_methods.prefix_needs_no_checkpointing`).
"""

from __future__ import annotations

from ftrecipes.methods.registry import register

NOT_MERGEABLE = ("its virtual tokens are extra inputs in front of the prompt, not changes to the base "
                 "weights, so there is nothing to fold into model/; serve the base with adapter/ "
                 "(PeftModel.from_pretrained)")
PREFIX_NOT_MERGEABLE = ("its trained prefixes are extra keys and values in every attention layer, not "
                        "changes to the base weights, so there is nothing to fold into model/; serve the "
                        "base with adapter/ (PeftModel.from_pretrained)")


@register("prompt_tuning", merge=NOT_MERGEABLE)
def prompt_tuning(model, method, total_steps=None):
    """Trained input embeddings; `init=text` starts them from `init_text`'s token embeddings."""
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    text = method.init == "text"
    config = PromptTuningConfig(
        num_virtual_tokens=method.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=method.init_text if text else None,
        # peft tokenizes init_text with the base's own tokenizer, read from where the base came from
        tokenizer_name_or_path=model.name_or_path if text else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


@register("p_tuning", merge=NOT_MERGEABLE)
def p_tuning(model, method, total_steps=None):
    """Virtual tokens from an MLP prompt encoder (P-tuning)."""
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, get_peft_model

    config = PromptEncoderConfig(
        num_virtual_tokens=method.num_virtual_tokens,
        encoder_reparameterization_type=PromptEncoderReparameterizationType.MLP,
        encoder_hidden_size=method.encoder_hidden_size,  # None: the model's hidden size
        encoder_dropout=method.encoder_dropout,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


@register("p_tuning_v2", merge=PREFIX_NOT_MERGEABLE)
def p_tuning_v2(model, method, total_steps=None):
    """Prefix tuning over all layers (P-tuning v2), with an optional projection MLP."""
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        num_virtual_tokens=method.num_virtual_tokens,
        prefix_projection=method.prefix_projection,
        encoder_hidden_size=method.encoder_hidden_size,  # None: the key/value width
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
