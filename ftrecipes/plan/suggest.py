"""When a recipe does not fit, compute the changes that make it fit, not just list ideas.

Each candidate is a set of overrides applied to a copy of the recipe; the memory estimate is run
again and only the candidates that fit under the headroom are returned, smallest change first.
"""

from __future__ import annotations

import copy

from ftrecipes.plan import memory, params


def _with(recipe: dict, changes: dict) -> dict:
    changed = copy.deepcopy(recipe)
    for path, value in changes.items():
        node = changed
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return changed


def candidates(recipe: dict) -> list[tuple[str, dict]]:
    method, train, hw, data = recipe["method"], recipe["train"], recipe["hardware"], recipe["data"]
    out = []
    if not train.get("gradient_checkpointing"):
        out.append(("turn on gradient checkpointing", {"train.gradient_checkpointing": True}))
    if train["micro_batch_size"] > 1:
        accumulation = train["gradient_accumulation_steps"] * train["micro_batch_size"]
        out.append((f"micro-batch 1 with {accumulation} accumulation steps (same global batch)",
                    {"train.micro_batch_size": 1, "train.gradient_accumulation_steps": accumulation}))
    if data["max_seq_len"] > 512:
        out.append((f"shorter sequences ({data['max_seq_len'] // 2})", {"data.max_seq_len": data["max_seq_len"] // 2}))
    if method["name"] == "lora" and hw["accelerator"] == "cuda":
        qlora = {**method, "name": "qlora", "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
        out.append(("QLoRA (4-bit NF4 base) instead of LoRA", {"method": qlora}))
    if method["name"] == "full" and hw["accelerator"] == "cuda":
        lora = {"name": "lora", "learning_rate": 2e-4, "r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                "target_modules": "all-linear", "rslora": False, "modules_to_save": []}
        out.append(("LoRA r=16 instead of full fine-tuning", {"method": lora}))
    if not train.get("optimizer", "").endswith("8bit") and hw["accelerator"] == "cuda":
        out.append(("8-bit AdamW", {"train.optimizer": "adamw_8bit"}))
    if memory.world_size(hw) > 1:
        for strategy in ("zero3", "zero3_offload"):
            if hw["strategy"] != strategy:
                out.append((f"DeepSpeed {strategy.replace('_', ' + ')}", {"hardware.strategy": strategy}))
    if hw["accelerator"] == "cuda" and hw["gpus_per_node"] < 8:
        out.append(("8 GPUs of this kind with ZeRO-3", {"hardware.gpus_per_node": 8, "hardware.strategy": "zero3"}))
        out.append(("8 GPUs of this kind with ZeRO-3 + offload",
                    {"hardware.gpus_per_node": 8, "hardware.strategy": "zero3_offload"}))
    return out


def _cli(changes: dict) -> str:
    parts = []
    for path, value in changes.items():
        if isinstance(value, dict):
            parts.append(f"{path}={value['name']}")
        else:
            parts.append(f"{path}={str(value).lower() if isinstance(value, bool) else value}")
    return " ".join(parts)


def _fit(recipe: dict) -> memory.MemoryEstimate:
    return memory.estimate(recipe, params.count(recipe["model"]["architecture"], recipe["method"]))


def suggestions(recipe: dict, limit: int = 6) -> list[dict]:
    """Single changes that fit, least invasive first; if none does, the greedy combination that does."""
    options = candidates(recipe)
    fitting = []
    for label, changes in options:
        estimate = _fit(_with(recipe, changes))
        if estimate.fits:
            fitting.append({"change": label, "overrides": _cli(changes),
                            "memory_gib": round(estimate.total, 1), "fraction": round(estimate.fraction, 3)})
    if fitting:
        return fitting[:limit]
    combined, labels, merged = recipe, [], {}
    for label, changes in options:
        combined, labels = _with(combined, changes), labels + [label]
        merged.update(changes)
        estimate = _fit(combined)
        if estimate.fits:
            return [{"change": " + ".join(labels), "overrides": _cli(merged),
                     "memory_gib": round(estimate.total, 1), "fraction": round(estimate.fraction, 3)}]
    return []
