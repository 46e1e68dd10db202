"""The numerics guard: no optimizer step ever applies a non-finite update, and a batch with no
supervised tokens never turns into NaN.

`NumericsGuard` is one of the standard callbacks (`ftrecipes.train.callbacks`); `attach(trainer)`
wraps the trainer's `compute_loss` so the guard sees each micro-batch's loss and labels (the
callback API passes neither). Before every optimizer step (`on_pre_optimizer_step`, after
gradient clipping) it checks the micro-batch losses of that step and the norm of the trainable
parameters' gradients. With torch.distributed initialised the verdict is one all-reduce, so
every rank takes the same decision, and the message names the rank(s) at fault.

Recipe keys:

- `train.nonfinite.action`: `abort` (default) raises `Diverged` (exit 4) before the optimizer
  step, naming the step (the optimizer step that would have completed, as in metrics.jsonl) and
  the rank; the last committed checkpoint is untouched. `skip` drops that step's gradients, so
  the optimizer leaves the weights and its state as they were (the learning-rate schedule
  still advances), and counts it (`skipped_steps` in metrics.jsonl and the train summary).
- `train.nonfinite.max_consecutive`: under `skip`, this many bad steps in a row are tolerated;
  one more aborts as above.

A micro-batch whose labels are all -100 (no supervised token) would give 0/0 = NaN in the loss
and the gradients. It is computed with one placeholder label and its loss multiplied by 0, so it
adds exactly nothing (the forward still runs, so DDP's reducer sees every rank), and it is
counted (`empty_batches`) and warned about. A step made only of such micro-batches, on every
rank, is skipped like a non-finite one, without counting as bad. Under fp16 loss scaling the
gradients are left to the GradScaler (an overflow there is routine: it skips the step and lowers
the scale): only the loss is checked, and `skip` leaves dropping the step to the scaler. DeepSpeed
keeps gradients outside `param.grad`, so there too only the loss is checked.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from transformers import TrainerCallback

from ftrecipes.errors import Diverged
from ftrecipes.reliability.checkpoint import committed_checkpoints

ACTIONS = ("abort", "skip")
_WARNINGS = 3  # empty micro-batches warned about one by one; the rest are counted


def _say(text: str) -> None:
    print(f"ftrecipes: {text}", file=sys.stderr, flush=True)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def supervised_labels(inputs, shifts: bool = True):
    """The labels the loss counts (shifted for a causal LM, as the Trainer counts them), or None
    for batches without labels (DPO, GRPO)."""
    if not isinstance(inputs, dict):
        return None
    if "shift_labels" in inputs:
        return inputs["shift_labels"]
    labels = inputs.get("labels")
    if labels is None or not hasattr(labels, "ne"):
        return None
    return labels[..., 1:] if shifts else labels


def _with_placeholder_label(inputs: dict, shifts: bool) -> dict | None:
    """A copy of `inputs` with one supervised token (the first row's second token), or None when
    the batch is too short to hold one."""
    inputs = dict(inputs)
    if "shift_labels" in inputs:
        labels = inputs["shift_labels"].clone()
        if labels.shape[-1] < 1 or "input_ids" not in inputs or inputs["input_ids"].shape[-1] < 2:
            return None
        labels.view(-1, labels.shape[-1])[0, 0] = inputs["input_ids"].view(-1, inputs["input_ids"].shape[-1])[0, 1]
        inputs["shift_labels"] = labels
        return inputs
    labels = inputs["labels"].clone()
    position = 1 if shifts else 0
    if labels.dim() < 1 or labels.shape[-1] <= position or "input_ids" not in inputs:
        return None
    ids = inputs["input_ids"]
    labels.view(-1, labels.shape[-1])[0, position] = ids.view(-1, ids.shape[-1])[0, position]
    inputs["labels"] = labels
    return inputs


class NumericsGuard(TrainerCallback):
    """See the module docstring. `root` is the checkpoint folder, named in the abort message."""

    def __init__(self, action: str = "abort", max_consecutive: int = 1, root: Path | None = None):
        if action not in ACTIONS:
            raise ValueError(f"train.nonfinite.action={action!r}: use one of {ACTIONS}")
        self.action, self.max_consecutive, self.root = action, max_consecutive, root
        self.consecutive = 0
        self.empty_batches = self.skipped_steps = 0  # totals for this process
        self._logged_empty = self._logged_skipped = 0
        self._bad_loss = None  # a 0-dim tensor, so no device sync per micro-batch
        self._nonempty = self._empty = 0  # micro-batches of the current step

    @classmethod
    def from_recipe(cls, recipe, root: Path | None = None) -> "NumericsGuard":
        """Reads `train.nonfinite.action` and `train.nonfinite.max_consecutive`."""
        settings = recipe.train.nonfinite
        return cls(settings.action, settings.max_consecutive, root)

    def attach(self, trainer) -> None:
        """Wraps `trainer.compute_loss` on this trainer object only (the class is untouched)."""
        original = trainer.compute_loss
        shifts = getattr(trainer, "_loss_shifts_labels", True)

        @functools.wraps(original)
        def compute_loss(model, inputs, *args, **kwargs):
            training = not kwargs.get("return_outputs", False) and model.training
            if not training:
                return original(model, inputs, *args, **kwargs)
            labels = supervised_labels(inputs, shifts)
            if labels is not None and not bool(labels.ne(-100).any()):
                return self._empty_batch_loss(original, model, inputs, shifts, args, kwargs)
            self._nonempty += 1
            loss = original(model, inputs, *args, **kwargs)
            self._note_loss(loss)
            return loss

        trainer.compute_loss = compute_loss

    def _empty_batch_loss(self, original, model, inputs, shifts, args, kwargs):
        self.empty_batches += 1
        self._empty += 1
        if self.empty_batches <= _WARNINGS:
            more = "" if self.empty_batches < _WARNINGS else " (further ones are only counted: empty_batches)"
            _say(f"a training micro-batch has no supervised token (every label is -100); it adds nothing "
                 f"to the gradient{more}")
        patched = _with_placeholder_label(inputs, shifts)
        if patched is None:  # nothing to compute a finite loss on: let the non-finite check decide
            loss = original(model, inputs, *args, **kwargs)
            self._note_loss(loss)
            return loss
        items = kwargs.get("num_items_in_batch")
        if items is not None and not bool(items):  # the whole step is empty: avoid 0/0
            kwargs = {**kwargs, "num_items_in_batch": 1}
        # x * 0 keeps the graph (every parameter gets a zero gradient, so DDP's reducer completes)
        loss = original(model, patched, *args, **kwargs) * 0.0
        self._note_loss(loss)
        return loss

    def _note_loss(self, loss) -> None:
        import torch

        bad = ~torch.isfinite(loss.detach()).all()
        self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        step = state.global_step + 1
        world, rank = _world()
        grads = [] if args.fp16 or model is None else [
            p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
            for p in model.parameters() if p.grad is not None]
        flags = torch.zeros(2 * world + 2, device=args.device)
        if self._bad_loss is not None:
            flags[2 * rank] = self._bad_loss.to(flags.device).float()
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
            flags[2 * rank + 1] = (~torch.isfinite(norm)).to(flags.device).float()
        flags[-2], flags[-1] = float(self._nonempty), float(self._empty)
        self._bad_loss, self._nonempty, self._empty = None, 0, 0
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        values = flags.tolist()
        loss_ranks = [r for r in range(world) if values[2 * r] > 0]
        grad_ranks = [r for r in range(world) if values[2 * r + 1] > 0]
        if not loss_ranks and not grad_ranks:
            self.consecutive = 0
            if values[-2] == 0 and values[-1] > 0 and not args.fp16:  # only empty micro-batches, every rank
                _drop_gradients(model)
            return control
        self.consecutive += 1
        what = "; ".join(f"the {name} was not finite on rank{'s' if len(ranks) > 1 else ''} "
                         f"{', '.join(map(str, ranks))}"
                         for name, ranks in (("loss", loss_ranks), ("gradient norm", grad_ranks)) if ranks)
        if self.action == "skip" and self.consecutive <= self.max_consecutive:
            self.skipped_steps += 1
            _say(f"step {step}: {what}; skipped (train.nonfinite.action=skip, {self.consecutive} of at most "
                 f"{self.max_consecutive} in a row)")
            if not args.fp16:  # under fp16 the GradScaler skips a non-finite step itself
                _drop_gradients(model)
            return control
        raise Diverged(f"training diverged at step {step}: {what}; stopped before the optimizer step"
                       f"{self._run_of_bad_steps()}. {self._kept()}",
                       hint="lower method.learning_rate or train.max_grad_norm and run again with resume=force "
                            "(it continues from the kept checkpoint), or set train.nonfinite.action=skip")

    def _run_of_bad_steps(self) -> str:
        if self.action != "skip":
            return ""
        return f" ({self.consecutive} bad steps in a row, train.nonfinite.max_consecutive={self.max_consecutive})"

    def _kept(self) -> str:
        found = committed_checkpoints(self.root) if self.root is not None else []
        if not found:
            return "No checkpoint had committed yet"
        return f"The last committed checkpoint, {found[0]}, is kept"

    def on_log(self, args, state, control, logs=None, **kwargs):
        # the same dict goes on to MetricsJsonl (this callback comes first), so the counts land in metrics.jsonl
        if logs is not None and "loss" in logs:
            if self.empty_batches > self._logged_empty:
                logs["empty_batches"] = self.empty_batches - self._logged_empty
            if self.skipped_steps > self._logged_skipped:
                logs["skipped_steps"] = self.skipped_steps - self._logged_skipped
            self._logged_empty, self._logged_skipped = self.empty_batches, self.skipped_steps
        return control


def _drop_gradients(model) -> None:
    """The optimizers skip parameters whose `.grad` is None: no update, no state change, no decay."""
    if model is not None:
        for parameter in model.parameters():
            parameter.grad = None
