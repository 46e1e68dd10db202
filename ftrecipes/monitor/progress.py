"""Rich progress bars for prepare, train (step, loss and ETA: `train_progress.TrainProgress`) and
evaluate. This module imports rich only, so the prepare stage stays free of torch.

`logging.progress_bars` turns them on; on a terminal they redraw in place, elsewhere (CI logs,
captured output) rich prints nothing until the end, so logs stay short.
"""

from __future__ import annotations

import contextlib


def make_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True)


@contextlib.contextmanager
def bar(description: str, total: int, enabled: bool = True):
    """`with bar("evaluate", n) as advance: ... advance(k, info="...")`; a no-op when disabled."""
    if not enabled:
        yield lambda n=1, info="": None
        return
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        yield lambda n=1, info="": progress.update(task, advance=n, info=info)
