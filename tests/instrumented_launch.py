"""`python -m ftrecipes.launch ARGS`, plus test-only hooks given as JSON in FTR_TEST_HOOKS:

- `term_at`: step k; the process sends itself SIGTERM when step k begins (the scheduler's signal,
  arriving mid-step);
- `inf_grad_at`: step k; a backward hook on one trainable parameter turns its gradient into inf
  during step k (a real divergence, seen by clipping and the numerics guard);
- `record_ids`: a file; each training micro-batch appends `{"pid", "step", "ids"}`: the process,
  the step it belongs to and a short hash of each row's tokens (the sample ids, in the order the
  trainer saw them).

The hooks wrap `ftrecipes.train.common.train_with_checkpoints`, which every objective's trainer
goes through; nothing else differs from the product CLI (argument parsing, stages, exit codes).

    FTR_TEST_HOOKS='{"term_at": 3}' python tests/instrumented_launch.py recipe=quickstart ...
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

import ftrecipes.train.common as common


class TermAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class InfGradAt(TrainerCallback):
    def __init__(self, step: int):
        self.step, self.handle = step, None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step and self.handle is None:
            parameter = next(p for p in model.parameters() if p.requires_grad)
            self.handle = parameter.register_hook(lambda grad: grad * float("inf"))

    def on_step_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def record_ids(trainer, path: Path) -> None:
    original = trainer.compute_loss

    def compute_loss(model, inputs, *args, **kwargs):
        if model.training and not kwargs.get("return_outputs", False):
            ids, mask = inputs["input_ids"], inputs.get("attention_mask")
            rows = [row[m.bool()] if mask is not None else row for row, m in
                    zip(ids, mask if mask is not None else ids)]
            hashes = [hashlib.sha256(row.cpu().numpy().tobytes()).hexdigest()[:12] for row in rows]
            with open(path, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "step": trainer.state.global_step + 1, "ids": hashes}) + "\n")
        return original(model, inputs, *args, **kwargs)

    trainer.compute_loss = compute_loss


def install(hooks: dict) -> None:
    train_with_checkpoints = common.train_with_checkpoints

    def instrumented(trainer, recipe, run_dir, metrics):
        if "term_at" in hooks:
            trainer.add_callback(TermAt(hooks["term_at"]))
        if "inf_grad_at" in hooks:
            trainer.add_callback(InfGradAt(hooks["inf_grad_at"]))
        if "record_ids" in hooks:
            record_ids(trainer, Path(hooks["record_ids"]))
        return train_with_checkpoints(trainer, recipe, run_dir, metrics)

    common.train_with_checkpoints = instrumented


if __name__ == "__main__":
    from ftrecipes.launch import main

    install(json.loads(os.environ.get("FTR_TEST_HOOKS", "{}")))
    sys.exit(main(sys.argv[1:]))
