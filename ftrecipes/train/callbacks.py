"""The callbacks every trainer gets, whatever the objective: one place to add them.

`standard_callbacks(recipe, run_dir, model)` returns `(callbacks, metrics)`:

- `metrics` (`MetricsJsonl`) writes `run_dir/metrics.jsonl` with throughput, memory and MFU
  fields (`ftrecipes.monitor.resources`), passes each row to the tracker backends
  (`logging.wandb|tensorboard|mlflow`, `ftrecipes.monitor.trackers`) and to the health checks
  (`logging.health`, `ftrecipes.monitor.health`), and stops on a non-finite loss;
- a rich progress bar with step and ETA (`logging.progress_bars`);
- the method's own per-step hooks (`ftrecipes.model.methods.method_callbacks`, e.g. AdaLoRA's
  rank reallocation), so no objective can forget them.

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
    metrics_path = Path(run_dir) / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    sinks = [Health(recipe, run_dir), *open_trackers(recipe, run_dir)]
    metrics = MetricsJsonl(metrics_path, enrich=Throughput(recipe, model), sinks=sinks)
    progress = [TrainProgress()] if recipe.logging.progress_bars else []
    return [metrics, *progress, *method_callbacks(model, recipe)], metrics
