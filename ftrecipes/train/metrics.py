"""`run_dir/metrics.jsonl`: one JSON object per logged training or evaluation step.

Rows look like `{"step": 10, "epoch": 0.4, "loss": 1.93, "learning_rate": 0.0019,
"grad_norm": 0.81, ...}`; evaluation rows carry `eval_loss`. The interval is
`logging.log_interval`. The file is always written, whatever `logging.backends` says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from ftrecipes.errors import TrainingError

# The Trainer's end-of-run summary (train_runtime, train_loss, ...) is returned, not logged here.
_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos"}


class MetricsJsonl(TrainerCallback):
    """Appends every log to `path`, and stops training on a non-finite loss."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if _SUMMARY_KEYS & logs.keys():
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float)) and k != "epoch"})
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for key in ("loss", "eval_loss"):
            if key in row and not math.isfinite(row[key]):
                raise TrainingError(
                    f"the {key.replace('_', ' ')} became {row[key]} at step {state.global_step}",
                    hint="lower method.learning_rate, or keep train.max_grad_norm at 1.0",
                )

    def losses(self) -> list[float]:
        return [row["loss"] for row in self.rows if "loss" in row]
