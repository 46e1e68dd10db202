"""Wiring the checkpoint protocol into a Hugging Face (or TRL) Trainer, for the train stages.

    from ftrecipes.reliability import hf
    root = run_dir / "checkpoints"
    args = SFTConfig(..., **hf.checkpoint_arguments(recipe, root))   # staging dir, save cadence
    hf.scrub_secrets(args)                                              # before anything pickles it
    preemption = hf.preemption_callback()                     # SIGTERM/SIGUSR1/SIGUSR2: save, stop
    trainer = SFTTrainer(..., args=args, callbacks=[preemption, hf.commit_callback(recipe, run_dir, root)])
    trainer.train(resume_from_checkpoint=hf.resume_checkpoint(recipe, run_dir, root))
    hf.raise_if_preempted(preemption, trainer.state)                   # Preempted: exit 6, requeue

HF writes each checkpoint into a staging folder (`checkpoint.hf_staging_dir`); the callback's
`on_save` (every rank waits at a barrier, so each rank's `rng_state_<rank>.pth` is on disk) commits
it on rank 0 as `root/checkpoint-<step>` and applies retention. Recipe keys:
`train.checkpoint.interval_steps` (null: once per epoch), `train.checkpoint.keep`,
`train.checkpoint.grace_s` (see `preemption_callback`), `resume`.
transformers is imported only when these functions are called.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from ftrecipes.errors import Preempted
from ftrecipes.reliability import checkpoint, resume
from ftrecipes.reliability.preflight import scrub_tokens


def _settings(recipe) -> dict:
    plain = resume._plain(recipe)
    return {"interval": plain.get("train", {}).get("checkpoint", {}).get("interval_steps"),
            "keep": plain.get("train", {}).get("checkpoint", {}).get("keep", 2),
            "mode": plain.get("resume", "auto")}


def checkpoint_arguments(recipe, root: Path) -> dict:
    """TrainingArguments keywords: HF saves into the staging folder, never rotates on its own, and
    keeps the optimizer, scheduler and RNG state (transformers 5 always writes safetensors)."""
    settings = _settings(recipe)
    cadence = ({"save_strategy": "steps", "save_steps": settings["interval"]} if settings["interval"]
               else {"save_strategy": "epoch"})
    return {"output_dir": str(checkpoint.hf_staging_dir(root)), "save_total_limit": None,
            "save_only_model": False, **cadence}


def scrub_secrets(args) -> list[str]:
    """`preflight.scrub_tokens` on the trainer's arguments (hub_token, ...), before HF pickles
    them into every checkpoint's training_args.bin."""
    return scrub_tokens(args)


def resume_checkpoint(recipe, run_dir: Path, root: Path, world_size: int | None = None) -> str | None:
    """The committed checkpoint to pass as `resume_from_checkpoint` (None: start fresh), chosen by
    `resume.select_for_resume` under the recipe's `resume` mode. Call it on every rank."""
    fingerprint = resume.recipe_fingerprint(recipe, run_dir=run_dir, world_size=world_size)
    chosen = resume.select_for_resume(root, fingerprint, _settings(recipe)["mode"])
    return str(chosen) if chosen is not None else None


def commit_callback(recipe, run_dir: Path, root: Path, world_size: int | None = None):
    """A TrainerCallback whose `on_save` commits HF's staged checkpoint (rank 0, after a barrier)."""
    from transformers import TrainerCallback

    fingerprint = resume.recipe_fingerprint(recipe, run_dir=run_dir, world_size=world_size)
    keep = _settings(recipe)["keep"]

    class CommitCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            _barrier()
            if state.is_world_process_zero:
                checkpoint.commit_hf_checkpoint(root, state.global_step, fingerprint,
                                                world_size=max(args.world_size, 1), keep=keep)
            _barrier()
            return control

    return CommitCheckpoint()


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # SLURM's usual, our sbatch's, submitit's


def preemption_callback(signals=PREEMPTION_SIGNALS, grace_s: float | None = None, on_expired=None):
    """A TrainerCallback that turns the scheduler's signal into: finish the current step (or the
    running evaluation), save (committed by `commit_callback`), stop. Every rank stops at the same
    step (the flag is all-reduced each step when torch.distributed is initialized). Create it in
    the main thread; the previous handlers come back when training ends (or call `restore()`).

    `grace_s` (`train.checkpoint.grace_s`): when the step, the evaluation or the save is still
    running that many seconds after the signal, the process stops anyway, exit 6, before the
    scheduler's kill; the re-run resumes from the last committed checkpoint (an unfinished save
    never counts). `on_expired(message)` runs first (the distributed exit report)."""
    from transformers import TrainerCallback

    class Preemption(TrainerCallback):
        def __init__(self):
            self.received, self.saved_step, self.timer = None, None, None
            self.previous = {sig: signal.signal(sig, self._note) for sig in signals}

        def _note(self, signum, frame):
            self.received = self.received or signum
            if grace_s and self.timer is None:
                self.timer = threading.Timer(grace_s, self._expire)
                self.timer.daemon = True
                self.timer.start()

        def _expire(self):
            message = (f"stopped by {signal.Signals(self.received).name}: the step did not end within "
                       f"train.checkpoint.grace_s={grace_s:g} s; a re-run resumes from the last committed checkpoint")
            print(f"ftrecipes: {message}", file=sys.stderr, flush=True)
            if on_expired is not None:
                on_expired(message)
            os._exit(Preempted.exit_code)  # from a timer thread: the main thread is stuck in the step

        def restore(self):
            """The previous handlers back, the grace timer stopped (idempotent); also called when
            training raises."""
            if self.timer is not None:
                self.timer.cancel()
            for sig, handler in self.previous.items():  # later stages get the default behaviour back
                signal.signal(sig, handler)
            self.previous = {}

        def on_train_end(self, args, state, control, **kwargs):
            self.restore()

        def on_step_end(self, args, state, control, **kwargs):
            if _any_rank(self.received is not None, args.device):
                self.received = self.received or signals[0]
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_evaluate(self, args, state, control, **kwargs):
            # a signal that arrives during an evaluation: the Trainer saves right after it returns,
            # unless this step is saved already (a second save would hold the RNG state after the eval)
            if state.global_step != self.saved_step:
                self.on_step_end(args, state, control)
            return control

        def on_save(self, args, state, control, **kwargs):
            self.saved_step = state.global_step
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.received is not None:  # stopping: no end-of-epoch evaluation (or save) of a cut epoch
                control.should_evaluate = False
                control.should_save = state.global_step != self.saved_step
            return control

    return Preemption()


def isolate_evaluation_rng(trainer) -> None:
    """Wraps `trainer.evaluate` (this trainer object only) so that an evaluation during training
    leaves the python, numpy and torch RNG states as it found them. Without it, a checkpoint saved
    at the last step of an epoch holds the RNG state from before the epoch-end evaluation, which
    a resume never replays, so the resumed run's dropout would differ from the uninterrupted one."""
    import functools
    import random

    import numpy as np
    import torch

    original = trainer.evaluate

    @functools.wraps(original)
    def evaluate(*args, **kwargs):
        cuda = [torch.cuda.current_device()] if trainer.args.device.type == "cuda" else []
        python, numpy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=cuda):
            try:
                return original(*args, **kwargs)
            finally:
                random.setstate(python)
                np.random.set_state(numpy)

    trainer.evaluate = evaluate


def raise_if_preempted(callback, state) -> None:
    """After `trainer.train()` returns: Preempted (exit 6) if the run stopped for a signal."""
    if callback.received is not None:
        raise Preempted(f"stopped by {signal.Signals(callback.received).name} after step {state.global_step}; "
                        f"its checkpoint is committed",
                        hint="requeue the job: a re-run with the same run_dir resumes from that checkpoint")


def _any_rank(flag: bool, device) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
