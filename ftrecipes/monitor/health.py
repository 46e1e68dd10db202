"""Plain-words health checks on the metrics rows, during the run and in the summary.

Each check is a plain function over the rows seen so far that returns a `Warning_` or None; the
`Health` sink runs them on every logged row, prints each new warning once, and keeps them for the
summary and report.html (`run_dir/health.json`).

Recipe keys (`logging.health`):
- `window`: K, the number of evaluations (or logged train losses, when there are too few
  evaluations) a trend must hold for before the rising-loss, plateau and overfitting checks speak;
- `plateau_delta`: relative improvement of the validation loss below which it counts as flat;
- `memory_percent`: the device-memory share that triggers the memory warning (default 90);
- `perplexity_max`: `{zh: 10, en: 20}`, thresholds stated in the summary for the data's language;
- `language`: `auto` (from the share of CJK characters in the training rows), `en` or `zh`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


SPIKE = 1.5  # a logged training loss this many times its best so far is a divergence


@dataclass(frozen=True)
class Warning_:
    check: str
    step: int
    message: str
    advice: str


def rising_loss(rows: list[dict], window: int, learning_rate: float) -> Warning_ | None:
    """The loss rose over the last `window` evaluations (or logged train losses), or the training
    loss jumped: the latest value is above `SPIKE` times the best before it and above where it
    started. A jump is divergence even when the loss comes back down later (to the unigram
    floor, typically), so it speaks as soon as it is logged."""
    advice = f"lower the learning rate: method.learning_rate={learning_rate / 3:.2g} (now {learning_rate:.2g})"
    losses = [(r["step"], r["loss"]) for r in rows if _finite(r.get("loss")) and not _finite(r.get("eval_loss"))]
    if len(losses) >= 3:
        best_before, first, (step, last) = min(v for _, v in losses[:-1]), losses[0][1], losses[-1]
        if last > SPIKE * best_before and last > first:
            return Warning_("rising_loss", step, f"the training loss jumped to {last:.3g} (best so far "
                            f"{best_before:.3g}): the run is diverging", advice)
    for key, what in (("eval_loss", "validation loss"), ("loss", "training loss")):
        series = [(r["step"], r[key]) for r in rows if _finite(r.get(key))]
        if len(series) < window + 1:
            continue
        tail = series[-(window + 1):]
        values = [v for _, v in tail]
        if all(b > a for a, b in zip(values, values[1:])):
            trail = " -> ".join(f"{v:.3g}" for v in values)
            return Warning_("rising_loss", tail[-1][0], f"the {what} rose over the last {window} logs ({trail})",
                            advice)
        if key == "eval_loss":
            return None  # with enough evaluations, they decide
    return None


def plateau(rows: list[dict], window: int, delta: float) -> Warning_ | None:
    """The validation loss improved by less than `delta` (relative) over the last `window` evals."""
    evals = [(r["step"], r["eval_loss"]) for r in rows if _finite(r.get("eval_loss"))]
    if len(evals) < window + 1:
        return None
    first, last = evals[-(window + 1)][1], evals[-1][1]
    best_before = min(v for _, v in evals[: -window])
    if last > best_before * (1 - delta) and abs(last - first) <= delta * abs(first):
        return Warning_("plateau", evals[-1][0], f"the validation loss has plateaued near {last:.3g} over the last "
                        f"{window} evaluations: the run has converged", "stop here, or lower train.epochs; more "
                        "steps will not help at this learning rate")
    return None


def overfitting(rows: list[dict], window: int) -> Warning_ | None:
    """Training loss falls while validation loss rises over the last `window` evaluations."""
    evals = [(r["step"], r["eval_loss"]) for r in rows if _finite(r.get("eval_loss"))]
    if len(evals) < window + 1:
        return None
    tail = evals[-(window + 1):]
    if not all(b[1] > a[1] for a, b in zip(tail, tail[1:])):
        return None
    train = [(r["step"], r["loss"]) for r in rows if _finite(r.get("loss"))]
    before = [v for s, v in train if s <= tail[0][0]]
    after = [v for s, v in train if s > tail[0][0]]
    if before and after and sum(after) / len(after) < before[-1]:
        return Warning_("overfitting", tail[-1][0], f"training loss keeps falling while validation loss rose from "
                        f"{tail[0][1]:.3g} to {tail[-1][1]:.3g}: the model is overfitting",
                        "use fewer train.epochs, more data, or a lower method.learning_rate")
    return None


def memory_high(rows: list[dict], limit: float) -> Warning_ | None:
    for r in reversed(rows):
        share = r.get("memory_percent")
        if share is not None and share > limit and r.get("memory_device") == "cuda":
            return Warning_("memory", r["step"], f"peak accelerator memory is {share:.0f}% of the device "
                            f"(above {limit:.0f}%)", "lower train.micro_batch_size (raise "
                            "train.gradient_accumulation_steps to keep the batch), or set train.gradient_checkpointing=true")
    return None


def perplexity_verdict(best_eval_loss: float | None, language: str, thresholds: dict) -> dict | None:
    """The final perplexity against the threshold for the data's language, stated in the summary."""
    if best_eval_loss is None or not _finite(best_eval_loss):
        return None
    ppl = math.exp(min(best_eval_loss, 50.0))
    limit = thresholds.get(language, thresholds.get("en"))
    return {"perplexity": round(ppl, 3), "language": language, "threshold": limit,
            "ok": limit is None or ppl < limit}


def detect_language(texts: list[str]) -> str:
    """`zh` when at least 30% of the letters are CJK ideographs, else `en`."""
    cjk = letters = 0
    for text in texts:
        for ch in text:
            if "\u4e00" <= ch <= "\u9fff":
                cjk += 1
                letters += 1
            elif ch.isalpha():
                letters += 1
    return "zh" if letters and cjk / letters >= 0.3 else "en"


class Health:
    """A metrics sink: runs the checks on every row and prints each new kind of warning once."""

    def __init__(self, recipe, run_dir: Path, echo=print):
        cfg = recipe.logging.health
        self.window, self.delta, self.memory_limit = cfg.window, cfg.plateau_delta, cfg.memory_percent
        self.learning_rate = float(recipe.method.learning_rate)
        self.path = Path(run_dir) / "health.json"
        self.rows: list[dict] = []
        self.warnings: list[Warning_] = []
        self.echo = echo

    def log(self, row: dict) -> None:
        self.rows.append(row)
        seen = {w.check for w in self.warnings}
        for found in (rising_loss(self.rows, self.window, self.learning_rate), plateau(self.rows, self.window, self.delta),
                      overfitting(self.rows, self.window), memory_high(self.rows, self.memory_limit)):
            if found is not None and found.check not in seen:
                self.warnings.append(found)
                self.echo(f"warning (step {found.step}): {found.message}\n  advice: {found.advice}")
                self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps([asdict(w) for w in self.warnings], indent=2) + "\n")

    def finish(self) -> None:
        self.save()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
