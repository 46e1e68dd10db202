"""`run_dir/metrics.jsonl`: one JSON object per logged training or evaluation step.

Rows look like `{"step": 10, "epoch": 0.4, "loss": 1.93, "learning_rate": 0.0019,
"grad_norm": 0.81, "tokens_per_s": 5120.3, "samples_per_s": 40.1, "memory_gb": 1.2, ...}`;
evaluation rows carry `eval_loss` and `eval_perplexity`. The interval is `logging.log_interval`.
The file is always written, whatever tracker backends are enabled; each row then goes to every
sink (trackers, health checks) in order. A resumed run keeps the rows up to its checkpoint's step
and appends the rest (the trackers get only the resumed run's rows).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from transformers import TrainerCallback

from ftrecipes.errors import TrainingError

# Averages since the start of training that the Trainer adds to every row when it counts tokens;
# rows carry per-interval rates instead (tokens_per_s, samples_per_s).
_SESSION_AVERAGES = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_tokens_per_second",
                     "total_flos"}


class MetricsJsonl(TrainerCallback):
    """Appends every log to `path` (plus the fields of `enrich(state, row)`), passes it to each sink,
    and stops training on a non-finite loss."""

    def __init__(self, path: Path, enrich=None, sinks: tuple = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.enrich, self.sinks = enrich, list(sinks) if int(os.environ.get("RANK", "0")) == 0 else []

    def on_train_begin(self, args, state, control, **kwargs):
        # state.global_step is the resumed checkpoint's step here (0 for a fresh run): rows logged
        # after it are replayed by this run, so only the ones up to it are kept
        self.rows = [row for row in self._read() if row.get("step", 0) <= state.global_step] if state.global_step else []
        if state.is_world_process_zero:
            with self.path.open("w", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in self.rows)
        if hasattr(self.enrich, "start"):
            self.enrich.start()

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line torn by a kill
                break
        return rows

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "train_loss" in logs:  # the Trainer's end-of-run summary, returned by train() instead
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        row.update({k: v for k, v in logs.items()
                    if isinstance(v, (int, float)) and k != "epoch" and k not in _SESSION_AVERAGES})
        if "eval_loss" in row and math.isfinite(row["eval_loss"]):
            row["eval_perplexity"] = round(math.exp(min(row["eval_loss"], 50.0)), 4)
        if self.enrich is not None:
            row.update(self.enrich(state, row))
        self.rows.append(row)
        if state.is_world_process_zero:  # every rank logs the same (gathered) values; rank 0 writes
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            for sink in self.sinks:
                sink.log(row)
        for key in ("loss", "eval_loss"):
            if key in row and not math.isfinite(row[key]):
                self.finish()
                raise TrainingError(
                    f"the {key.replace('_', ' ')} became {row[key]} at step {state.global_step}",
                    hint="lower method.learning_rate, or keep train.max_grad_norm at 1.0",
                )

    def on_train_end(self, args, state, control, **kwargs):
        self.finish()

    def finish(self) -> None:
        for sink in self.sinks:
            sink.finish()
        self.sinks = []

    def losses(self) -> list[float]:
        return [row["loss"] for row in self.rows if "loss" in row]
