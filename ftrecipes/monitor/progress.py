"""Rich progress bars for prepare, train (step, loss and ETA) and evaluate.

`logging.progress_bars` turns them on; on a terminal they redraw in place, elsewhere (CI logs,
captured output) rich prints nothing until the end, so logs stay short.
"""

from __future__ import annotations

import contextlib

from transformers import TrainerCallback


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)


@contextlib.contextmanager
def bar(description: str, total: int, enabled: bool = True):
    """`with bar("evaluate", n) as advance: ... advance(k, info="...")`; a no-op when disabled."""
    if not enabled:
        yield lambda n=1, info="": None
        return
    with _progress() as progress:
        task = progress.add_task(description, total=total, info="")
        yield lambda n=1, info="": progress.update(task, advance=n, info=info)


class TrainProgress(TrainerCallback):
    """One bar over the optimizer steps, showing the last logged loss."""

    def __init__(self):
        self.progress = self.task = None
        self.info = ""

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = _progress()
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
