"""The training progress bar: one rich bar over the optimizer steps, with the last loss and ETA
(`logging.progress_bars`)."""

from __future__ import annotations

from transformers import TrainerCallback

from ftrecipes.monitor.progress import make_progress


class TrainProgress(TrainerCallback):
    """One bar over the optimizer steps, showing the last logged loss."""

    def __init__(self):
        self.progress = self.task = None
        self.info = ""

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = make_progress()
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps or None, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, info=self.info)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.info = f"loss {logs['loss']:.4g}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
