"""Proof that a merged model is the adapter model: equal logits on held-out inputs.

`reference_inputs(recipe, run_dir, tokenizer)` tokenizes up to `export.verify_samples` held-out
rows (prompt plus reference answer, chat template applied, right-padded). The export stage takes
the adapter model's logits on them before `merge_and_unload`, reloads the merged folder from disk
with `from_pretrained`, and `check_logits` compares: the largest absolute difference on
non-padding positions must stay under `tolerance(dtype) * max(1, largest |logit|)`: 1e-4 for
float32 (what the merge's own rounding gives), 2e-2 for bfloat16/float16. Raises `MergeMismatch`
(exit 4) naming the difference and the bound, so a broken merge never ships.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.data.splits import read_split
from ftrecipes.errors import TrainingError

TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 2e-2}


class MergeMismatch(TrainingError):
    """The merged weights do not reproduce the adapter model's logits (exit 4)."""


def tolerance(dtype: str) -> float:
    return TOLERANCE.get(dtype, 2e-2)


def reference_inputs(recipe, run_dir: Path, tokenizer, limit: int = 8) -> dict:
    """Input ids and attention mask of up to `limit` held-out conversations (any split with rows)."""
    import torch

    rows = []
    for split in ("test", "validation", "train"):
        rows = [r for r in read_split(Path(run_dir), split) if r.get("messages")]
        if rows:
            break
    texts = [tokenizer.apply_chat_template(r["messages"] + r.get("chosen", []), tokenize=False) for r in rows[:limit]]
    if not texts:
        texts = ["The quick brown fox jumps over the lazy dog."]
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=256, add_special_tokens=False)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].to(torch.long)}


def logits(model, inputs: dict):
    import torch

    with torch.no_grad():
        out = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits.float().cpu()
    return out[:, -inputs["input_ids"].shape[1]:]  # virtual-token methods prepend positions


def check_logits(reference, candidate, attention_mask, dtype: str) -> dict:
    """`{"max_abs_diff", "bound", "positions"}`; raises MergeMismatch past the bound."""
    mask = attention_mask.bool()
    diff = float((reference - candidate).abs()[mask].max())
    bound = tolerance(dtype) * max(1.0, float(reference.abs()[mask].max()))
    result = {"max_abs_diff": diff, "bound": bound, "positions": int(mask.sum()), "dtype": dtype}
    if not diff <= bound:
        raise MergeMismatch(f"the merged model's logits differ from the adapter model's by {diff:.3g} "
                            f"(allowed {bound:.3g} in {dtype}) on {result['positions']} held-out positions",
                            hint="the merge is broken: keep the adapter (export.merge=false) and report this")
    return result
