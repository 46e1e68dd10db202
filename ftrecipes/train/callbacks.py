"""The callbacks every trainer gets, whatever the objective: one place to add them.

`standard_callbacks(recipe, run_dir, model)` returns `(callbacks, metrics)`:

- `metrics` (`MetricsJsonl`) writes `run_dir/metrics.jsonl` and stops on a non-finite loss;
- the method's own per-step hooks (`ftrecipes.model.methods.method_callbacks`, e.g. AdaLoRA's
  rank reallocation), so no objective can forget them.

Trainers for every objective (sft, dpo, grpo, pretrain) pass all of them to TRL.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.model.methods import method_callbacks
from ftrecipes.train.metrics import MetricsJsonl


def standard_callbacks(recipe, run_dir: Path, model) -> tuple[list, MetricsJsonl]:
    metrics_path = Path(run_dir) / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    metrics = MetricsJsonl(metrics_path)
    return [metrics, *method_callbacks(model, recipe)], metrics
