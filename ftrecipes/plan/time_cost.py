"""Training time and money, before launch.

Keys that matter: plan.mfu, plan.chars_per_token, plan.api_comparison.*, train.epochs /
max_steps / micro_batch_size / gradient_accumulation_steps / gradient_checkpointing,
data.path / max_seq_len / split.*, hardware.peak_tflops_bf16 / price_per_gpu_hour / currency.

FLOPs per trained token (PaLM, appendix B): 6*N for full fine-tuning, plus the attention term
12*L*H*Q*T (L layers, H heads, Q head width, T tokens attended). Adapters skip the frozen weights'
gradients: 2*N forward + 2*N backward through the activations + 6*N_trainable. Gradient
checkpointing recomputes the forward (+2*N). Hours = FLOPs / (peak * MFU * GPUs); MFU is an
assumption (0.35 by default) until our own GPU benchmark calibrates it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftrecipes.plan.memory import world_size
from ftrecipes.plan.params import ParamCounts

HOURS_PER_MONTH = 730.0


def flops_per_token(recipe, params: ParamCounts, seq_len: float) -> float:
    arch = recipe["model"]["architecture"]
    attention = 12 * arch["num_hidden_layers"] * arch["num_attention_heads"] * arch["head_dim"] * seq_len
    if recipe["method"]["name"] == "full":
        model = 6 * params.total
    else:
        model = 4 * params.total + 6 * params.trainable
    if recipe["train"].get("gradient_checkpointing"):
        model += 2 * params.total
    return model + attention


def token_estimate(recipe, run_dir: Path | None = None) -> tuple[float, float, str]:
    """(training tokens per epoch, mean tokens per row, where the numbers come from)."""
    report = run_dir / "data" / "report.json" if run_dir else None
    if report and report.is_file():
        data = json.loads(report.read_text())
        mean = data.get("token_lengths", {}).get("mean")
        rows = data.get("splits", {}).get("train")
        if mean and rows:
            return float(mean) * rows, float(mean), "data report"
    from ftrecipes.rundir import data_files

    chars = sum(path.stat().st_size for path in data_files(recipe["data"]["path"]) if path.is_file())
    split = recipe["data"]["split"]
    train_share = 1.0 - split["validation"] - split.get("test", 0.0)
    tokens = chars / recipe["plan"]["chars_per_token"] * train_share
    return tokens, float(recipe["data"]["max_seq_len"]), "estimate from data file size"


def time_and_cost(recipe, params: ParamCounts, run_dir: Path | None = None) -> dict:
    train, hw, plan = recipe["train"], recipe["hardware"], recipe["plan"]
    tokens_per_epoch, mean_len, source = token_estimate(recipe, run_dir)
    world = max(world_size(hw), 1)
    if train.get("max_steps"):
        per_step = train["micro_batch_size"] * train["gradient_accumulation_steps"] * world * mean_len
        tokens, source = train["max_steps"] * per_step, source + ", max_steps"
    else:
        tokens = tokens_per_epoch * train["epochs"]
    flops = tokens * flops_per_token(recipe, params, min(mean_len, recipe["data"]["max_seq_len"]))
    result = {"tokens": tokens, "token_source": source, "flops": flops, "mfu": plan["mfu"],
              "hours": None, "cost": None, "currency": hw.get("currency", "USD")}
    if hw["accelerator"] == "cuda" and hw.get("peak_tflops_bf16"):
        hours = flops / (hw["peak_tflops_bf16"] * 1e12 * plan["mfu"] * world) / 3600
        result.update(hours=hours, cost=hours * world * hw["price_per_gpu_hour"])
    api = plan.get("api_comparison")
    if api:
        result["api_comparison"] = api_comparison(api, hw)
    return result


def api_comparison(api, hw) -> dict:
    """Monthly API cost for the user's volume against keeping GPUs of this preset serving."""
    api_monthly = api["monthly_tokens"] / 1e6 * api["price_per_million_tokens"]
    self_hosted = api["serving_gpus"] * hw["price_per_gpu_hour"] * api["serving_hours_per_month"]
    same_currency = api["currency"] == hw.get("currency", "USD")
    return {"api_monthly": api_monthly, "api_currency": api["currency"],
            "self_hosted_monthly": self_hosted, "self_hosted_currency": hw.get("currency", "USD"),
            "comparable": same_currency,
            "ratio": api_monthly / self_hosted if same_currency and self_hosted else None}
