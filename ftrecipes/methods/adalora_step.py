"""AdaLoRA's per-step work as a TrainerCallback (see `ftrecipes.methods.adalora` for why)."""

from __future__ import annotations

import torch
from transformers import TrainerCallback


def orthogonality_penalty(model):
    """Mean over AdaLoRA's P (lora_A) and Q (lora_B) of ||P P^T - I||_F (resp. ||Q^T Q - I||_F)."""
    terms = []
    for name, param in model.named_parameters():
        if param.requires_grad and ("lora_A" in name or "lora_B" in name):
            cov = param @ param.T if "lora_A" in name else param.T @ param
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)))
    return torch.stack(terms).mean() if terms else None


def ranks(model) -> list[int] | None:
    """The rank allocated to each AdaLoRA matrix (the kept rows of its `rank_pattern`), or None
    before the first allocation."""
    pattern = next(iter(model.peft_config.values())).rank_pattern
    if not pattern:
        return None
    return [int(sum(bool(x) for x in (keep.tolist() if hasattr(keep, "tolist") else keep)))
            for keep in pattern.values()]


class AdaLoraStep(TrainerCallback):
    """Per optimizer step: the orthogonality penalty's gradient, then rank reallocation.

    `history` holds `(step, mean allocated rank)` each time it changed, from `init_r` at step 0;
    a line is printed at the end.
    """

    def __init__(self, model, orth_reg_weight: float):
        self.model, self.weight = model, orth_reg_weight
        self.history: list[tuple[int, float]] = [(0, float(next(iter(model.peft_config.values())).init_r))]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # After clipping, before the step: the penalty's gradient joins the loss's gradient, as if
        # it had been part of the loss (it is not clipped with it).
        if self.weight > 0:
            with torch.enable_grad():
                penalty = orthogonality_penalty(self.model)
                if penalty is not None:
                    (self.weight * penalty).backward()

    def on_optimizer_step(self, args, state, control, **kwargs):
        # The importance scores read the gradients, which the Trainer zeroes right after this hook.
        self.model.base_model.update_and_allocate(state.global_step)
        self._record(state.global_step + 1)

    def on_train_end(self, args, state, control, **kwargs):
        # Record the penalty weight that was applied, so the saved adapter_config.json is truthful.
        for config in self.model.peft_config.values():
            config.orth_reg_weight = self.weight
        (s0, r0), (s1, r1) = self.history[0], self.history[-1]
        print(f"train: adalora mean rank {r0:.1f} (step {s0}) -> {r1:.1f} (step {s1})")

    def _record(self, step: int) -> None:
        current = ranks(self.model)
        if current:
            mean = sum(current) / len(current)
            if self.history[-1][1] != mean:
                self.history.append((step, mean))
