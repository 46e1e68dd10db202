"""AdaLoRA: LoRA in SVD form whose rank budget moves, during training, to the matrices that matter.

Recipe keys: `method.init_r` (rank every matrix starts with), `method.target_r` (average rank
left at the end), `method.tinit` and `method.tfinal` (warm-up steps before, and fine-tuning steps
after, the budgeting phase; a value below 1 is a fraction of the run's optimizer steps),
`method.deltaT` (steps between reallocations), `method.beta1` / `method.beta2` (EMA factors of
the sensitivity and its uncertainty), `method.orth_reg_weight` (weight of the penalty that keeps
P and Q orthogonal), `method.lora_alpha`, `method.lora_dropout`, `method.target_modules`.

Two things make it AdaLoRA rather than plain LoRA, and both live in the callback below:

- `update_and_allocate(global_step)` after every optimizer step, before the gradients are zeroed.
  Without it the masks never change and the run is silently LoRA at rank `init_r`.
- the orthogonality penalty. peft adds it to `outputs.loss`, but TRL computes its losses from its
  own fused log-probabilities and never reads `outputs.loss`, so the penalty would be dropped. The
  callback adds its gradient instead, once per optimizer step, and peft's own copy is set to 0 so
  that a trainer that does read `outputs.loss` cannot count it twice.

`total_step` comes from the run's real schedule (`ftrecipes.train.schedule`).
"""

from __future__ import annotations

from ftrecipes.errors import RecipeError
from ftrecipes.methods.lora import lora_targets
from ftrecipes.methods.registry import register


def schedule_steps(value: float, total_steps: int) -> int:
    """`tinit`/`tfinal` in steps: a value below 1 is a fraction of the run's optimizer steps."""
    return int(value * total_steps) if value < 1 else int(value)


def _callbacks(model, method) -> list:
    from ftrecipes.methods.adalora_step import AdaLoraStep  # imports transformers: only when training

    return [AdaLoraStep(model, method.orth_reg_weight)]


@register("adalora", merge=True, callbacks=_callbacks)
def adalora(model, method, total_steps=None):
    """AdaLoRA adapters; `total_steps` (the run's optimizer steps) sets the budget schedule.

    Raises `RecipeError` when the schedule leaves no budgeting phase (tinit + tfinal >= steps).
    """
    from peft import AdaLoraConfig, get_peft_model

    if not total_steps:
        raise RecipeError("method 'adalora' needs the run's optimizer-step count to plan its rank budget",
                          hint="apply it through the train stage, which passes total_steps")
    tinit, tfinal = schedule_steps(method.tinit, total_steps), schedule_steps(method.tfinal, total_steps)
    if tinit + tfinal >= total_steps:
        raise RecipeError(
            f"method.tinit ({tinit} steps) + method.tfinal ({tfinal} steps) leave no budgeting phase in "
            f"this run's {total_steps} optimizer steps (set by train.epochs / train.max_steps and the data)",
            hint="lower method.tinit and method.tfinal (fractions such as 0.1 and 0.2 follow the schedule), "
            "or train longer (train.epochs, train.max_steps)")
    config = AdaLoraConfig(
        init_r=method.init_r,
        target_r=method.target_r,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=method.deltaT,
        beta1=method.beta1,
        beta2=method.beta2,
        orth_reg_weight=0.0,  # applied by AdaLoraStep; see the module docstring
        total_step=total_steps,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.lora_dropout,
        target_modules=lora_targets(method),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
