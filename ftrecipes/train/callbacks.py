"""The callbacks every trainer gets, whatever the objective: one place to add them.

`standard_callbacks(recipe, run_dir, model)` returns `(callbacks, metrics)`:

- `metrics` (`MetricsJsonl`) writes `run_dir/metrics.jsonl` with throughput, memory and MFU
  fields (`ftrecipes.monitor.resources`), passes each row to the tracker backends
  (`logging.wandb|tensorboard|mlflow`, `ftrecipes.monitor.trackers`) and to the health checks
  (`logging.health`, `ftrecipes.monitor.health`), and stops on a non-finite loss;
- a rich progress bar with step and ETA (`logging.progress_bars`);
- the method's own per-step hooks (`ftrecipes.model.methods.method_callbacks`, e.g. AdaLoRA's
  rank reallocation), so no objective can forget them;
- the numerics guard (`train.nonfinite.*`: a non-finite loss or gradient norm stops before the
  optimizer step, exit 4; empty batches are counted, never NaN), see `ftrecipes.train.numerics`;
- preemption and checkpoint commits (`train.checkpoint.*`, `resume`), see `ftrecipes.reliability.hf`.

Trainers for every objective (sft, dpo, grpo, pretrain) pass all of them to TRL; they set
`disable_tqdm` so the rich bar is the only one.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.model.methods import method_callbacks
from ftrecipes.monitor.health import Health
from ftrecipes.monitor.train_progress import TrainProgress
from ftrecipes.monitor.resources import Throughput
from ftrecipes.monitor.trackers import open_trackers
from ftrecipes.train.metrics import MetricsJsonl


def standard_callbacks(recipe, run_dir: Path, model) -> tuple[list, MetricsJsonl]:
    metrics_path = Path(run_dir) / "metrics.jsonl"  # emptied, or cut back to a resumed step, at train begin
    sinks = [Health(recipe, run_dir), *open_trackers(recipe, run_dir)]
    metrics = MetricsJsonl(metrics_path, enrich=Throughput(recipe, model), sinks=sinks)
    progress = [TrainProgress()] if recipe.logging.progress_bars else []
    return [*numerics_callbacks(recipe, run_dir), metrics, *progress, *method_callbacks(model, recipe),
            *checkpoint_callbacks(recipe, run_dir)], metrics


def numerics_callbacks(recipe, run_dir: Path) -> list:
    """The numerics guard (`train.nonfinite.*`, `ftrecipes.train.numerics`). It comes before
    MetricsJsonl, so its counts land in the same metrics.jsonl rows."""
    from ftrecipes.train.common import checkpoint_root
    from ftrecipes.train.numerics import NumericsGuard

    return [NumericsGuard.from_recipe(recipe, checkpoint_root(run_dir))]


def checkpoint_callbacks(recipe, run_dir: Path) -> list:
    """Preemption (SIGTERM/SIGUSR1/SIGUSR2: save at the step boundary, stop; exit 6) and the commit of
    each checkpoint HF saves (`train.checkpoint.*`), from `ftrecipes.reliability.hf`. They come
    last: the commit must follow every callback that may still ask for a save."""
    from ftrecipes.reliability import hf
    from ftrecipes.train.common import checkpoint_root

    root = checkpoint_root(run_dir)
    grace = recipe.train.checkpoint.grace_s
    return [hf.preemption_callback(grace_s=grace, on_expired=lambda message: _report_preempted(run_dir, message)),
            hf.commit_callback(recipe, run_dir, root)]


def _report_preempted(run_dir: Path, message: str) -> None:
    """The exit report of a rank the grace period stops (the launcher reads it: exit 6, not 7)."""
    from ftrecipes.distributed import runtime
    from ftrecipes.errors import Preempted

    if runtime.world() > 1:
        runtime.write_exit_report(run_dir, Preempted.exit_code, Preempted(message))
