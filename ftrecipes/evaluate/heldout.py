"""The evaluate stage: score the base and the tuned model on held-out rows.

`run_evaluate(recipe, run_dir)` writes `run_dir/eval/summary.json`::

    {"base": {"exact_match": 0.0, "perplexity": 41.2, "n_samples": 100},
     "tuned": {"exact_match": 0.93, "perplexity": 1.08, "n_samples": 100}, "split": "test"}

and `run_dir/eval/samples.jsonl` (prompt, reference, each model's prediction and match), and
prints a small table.

- exact match: greedy generation from the chat-formatted prompt (generation prompt added, left
  padding), compared with the reference after stripping whitespace.
- perplexity: exp of the mean token negative log-likelihood of the reference completion (as the
  chat template renders it, end-of-turn token included) given the prompt.

Preference rows (`objective=dpo` data) are scored by chosen-versus-rejected log-probabilities
instead (`preference_summary`): `preference_accuracy` per model and the tuned model's
`reward_accuracy` (DPO's implicit reward against the base), in the same files.

Recipe keys: `evaluate.split` (`test`, falling back to `validation` when empty),
`evaluate.max_samples`, `evaluate.max_new_tokens`, `evaluate.batch_size`, `evaluate.metrics`
(`exact_match`, `perplexity`), `evaluate.compare_base` (also score the untuned base). The tuned
model is the base plus `run_dir/adapter/` (LoRA-family `method.name`) or `run_dir/model/` (full).

Raises `DataError` when no held-out rows exist and `EnvironmentProblem` when the train stage's
output is missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ftrecipes.data.splits import read_split
from ftrecipes.errors import DataError
from ftrecipes.model.load import load_model_and_tokenizer, load_tuned


def heldout_rows(recipe, run_dir: Path) -> tuple[str, list[dict]]:
    split = recipe.evaluate.split
    rows = read_split(run_dir, split)
    if not rows and split == "test":
        split, rows = "validation", read_split(run_dir, "validation")
    if not rows:
        raise DataError(
            f"no held-out rows in {run_dir / 'data'} (split '{recipe.evaluate.split}')",
            hint="run the prepare stage with data.split.test or data.split.validation above 0",
        )
    return split, rows[: recipe.evaluate.max_samples]


def _progress(batches: list, desc: str, enabled: bool):
    """Yields the batches under a rich progress bar (`logging.progress_bars`)."""
    from ftrecipes.monitor.progress import bar

    with bar(desc, len(batches), enabled) as advance:
        for batch in batches:
            yield batch
            advance(1)


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int, desc: str,
             progress: bool = False):
    """Greedy completions of chat prompts, batched with left padding."""
    import torch

    tokenizer.padding_side = "left"
    outputs = []
    for batch in _progress(list(_batches(prompts, batch_size)), desc, progress):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    return outputs


def _completion_ids(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], list[int]]:
    """Prompt and completion token ids, split where the two renderings diverge (as TRL does)."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    cut = 0
    while cut < min(len(prompt_ids), len(full_ids)) and prompt_ids[cut] == full_ids[cut]:
        cut += 1
    return full_ids[:cut], full_ids[cut:]


def perplexity(model, tokenizer, rows: list[dict], batch_size: int, desc: str, progress: bool = False) -> float:
    """exp(mean NLL per reference-completion token), over all rows."""
    import torch

    pairs = [_completion_ids(tokenizer, r["messages"][:-1], r["messages"][-1:]) for r in rows]
    total_nll, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id
    for batch in _progress(list(_batches(pairs, batch_size)), desc, progress):
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            seq = p + c
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(c)
            mask[i, : len(seq)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        # Prompt tuning and p-tuning prepend virtual tokens, whose logits come first: keep the inputs'.
        logits = logits[:, -width:]
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((shift_labels != -100).sum())
    return math.exp(total_nll / max(1, total_tokens))


def score(model, tokenizer, recipe, rows: list[dict], name: str) -> tuple[dict, list[str]]:
    """`({"exact_match", "token_f1", "format_compliance", "perplexity", "n_samples"}, predictions)`
    for one model; a metric not in `evaluate.metrics` stays None."""
    from omegaconf import OmegaConf

    from ftrecipes.evaluate.text_metrics import format_compliance, token_f1

    ev = recipe.evaluate
    model.eval()
    result: dict = {"exact_match": None, "token_f1": None, "format_compliance": None, "perplexity": None,
                    "n_samples": len(rows)}
    predictions: list[str] = []
    if {"exact_match", "token_f1", "format_compliance"} & set(ev.metrics):
        prompts = [r["messages"][:-1] for r in rows]
        predictions = generate(model, tokenizer, prompts, ev.max_new_tokens, ev.batch_size, f"generating ({name})",
                               recipe.logging.progress_bars)
        refs = [r["messages"][-1]["content"].strip() for r in rows]
        if "exact_match" in ev.metrics:
            result["exact_match"] = sum(p.strip() == ref for p, ref in zip(predictions, refs)) / len(rows)
        if "token_f1" in ev.metrics:
            result["token_f1"] = sum(token_f1(p, ref) for p, ref in zip(predictions, refs)) / len(rows)
        if "format_compliance" in ev.metrics:
            result["format_compliance"] = format_compliance(
                predictions, OmegaConf.to_container(recipe.data.output_format, resolve=True))
    if "perplexity" in ev.metrics:
        result["perplexity"] = perplexity(model, tokenizer, rows, ev.batch_size, f"perplexity ({name})",
                                          recipe.logging.progress_bars)
    return result, predictions


def run_evaluate(recipe, run_dir: Path) -> dict:
    """Scores base and tuned models on the held-out split; returns the summary it writes."""
    run_dir = Path(run_dir)
    split, rows = heldout_rows(recipe, run_dir)
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if "chosen" in rows[0]:
        summary, samples = preference_summary(recipe, run_dir, rows)
        summary["split"] = split
        with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(format_preference_table(summary))
        return after_scoring(recipe, run_dir, summary)
    summary: dict = {}
    predictions: dict[str, list[str]] = {}
    base = None
    if recipe.evaluate.compare_base:
        base = load_model_and_tokenizer(recipe)
        summary["base"], predictions["base"] = score(*base, recipe, rows, "base")
    tuned, tokenizer = load_tuned(recipe, run_dir, base)
    summary["tuned"], predictions["tuned"] = score(tuned, tokenizer, recipe, rows, "tuned")
    summary["split"] = split

    with (out / "samples.jsonl").open("w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            reference = row["messages"][-1]["content"]
            sample = {"prompt": row["messages"][:-1], "reference": reference}
            for name, preds in predictions.items():
                if preds:
                    sample[name] = preds[i]
                    sample[f"{name}_match"] = preds[i].strip() == reference.strip()
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(summary))
    return after_scoring(recipe, run_dir, summary)


def after_scoring(recipe, run_dir: Path, summary: dict) -> dict:
    """The expert review sheet (`evaluate.review.*`) and the lm-eval tasks (`evaluate.lm_eval.*`),
    both merged into `eval/summary.json`; returns the summary with them."""
    from ftrecipes.evaluate.lm_eval_bridge import run_lm_eval
    from ftrecipes.evaluate.review_sheet import write_review_sheet
    from ftrecipes.evaluate.summary_merge import merge_eval_summary

    sheet = write_review_sheet(recipe, run_dir)
    if sheet is not None:
        summary = merge_eval_summary(run_dir, "review_sheet", sheet)
    lm_eval = run_lm_eval(recipe, run_dir)
    if lm_eval is not None:
        summary["lm_eval"] = lm_eval
    return summary


def format_table(summary: dict) -> str:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [f"{'model':<8}{'exact_match':>13}{'perplexity':>13}{'samples':>9}"]
    for name in ("base", "tuned"):
        if name in summary:
            s = summary[name]
            lines.append(
                f"{name:<8}{cell(s['exact_match'], '.3f'):>13}{cell(s['perplexity'], '.3f'):>13}{s['n_samples']:>9}"
            )
    return "\n".join(lines)


# Preference rows (objective=dpo data): chosen against rejected, instead of generation.


def completion_logps(model, tokenizer, pairs: list[tuple[list[int], list[int]]], batch_size: int, desc: str,
                     progress: bool = False) -> list[float]:
    """Sum of log p(completion tokens | prompt) for each `(prompt_ids, completion_ids)` pair."""
    import torch

    out: list[float] = []
    pad = tokenizer.pad_token_id
    for batch in _progress(list(_batches(pairs, batch_size)), desc, progress):
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
            mask[i, : len(p) + len(c)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logits = logits[:, -width:]  # prompt-learning adapters prepend virtual tokens' logits
        shift_labels = labels[:, 1:].to(logits.device)
        logps = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logps.gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out += (picked * (shift_labels != -100)).sum(dim=1).tolist()
    return out


def preference_pairs(tokenizer, rows: list[dict], limit: int) -> tuple[list[int], list, list]:
    """Token pairs for chosen and rejected, cut to `limit` tokens from the end as DPO training
    does; rows whose prompt alone fills `limit` are left out (their indices are not returned)."""
    kept, chosen, rejected = [], [], []
    for index, row in enumerate(rows):
        p, c = _completion_ids(tokenizer, row["messages"], row["chosen"])
        p2, r = _completion_ids(tokenizer, row["messages"], row["rejected"])
        cut = min(len(p), len(p2))
        if cut >= limit:
            continue
        prompt = p[:cut]
        kept.append(index)
        chosen.append((prompt, (p[cut:] + c)[: limit - cut]))
        rejected.append((prompt, (p2[cut:] + r)[: limit - cut]))
    return kept, chosen, rejected


def preference_summary(recipe, run_dir: Path, rows: list[dict]) -> tuple[dict, list[dict]]:
    """`(summary, samples)` for preference rows, base and tuned.

    - `preference_accuracy`: how often the model gives the chosen answer a higher log-probability
      than the rejected one (per model).
    - `reward_accuracy` (tuned): how often DPO's implicit reward, log p_tuned - log p_base, is
      higher for the chosen answer; above 0.5 means training moved toward the chosen answers.

    Reads `evaluate.batch_size` and `data.max_seq_len`; the base is always scored (the reward
    needs it), whatever `evaluate.compare_base` says.
    """
    base, tokenizer = load_model_and_tokenizer(recipe)
    kept, chosen, rejected = preference_pairs(tokenizer, rows, recipe.data.max_seq_len)
    if not kept:
        raise DataError("every held-out preference prompt fills data.max_seq_len", hint="raise data.max_seq_len")
    size = recipe.evaluate.batch_size
    base.eval()
    logps = {"base": (completion_logps(base, tokenizer, chosen, size, "chosen (base)"),
                      completion_logps(base, tokenizer, rejected, size, "rejected (base)"))}
    tuned, tokenizer = load_tuned(recipe, run_dir, (base, tokenizer))
    tuned.eval()
    logps["tuned"] = (completion_logps(tuned, tokenizer, chosen, size, "chosen (tuned)"),
                      completion_logps(tuned, tokenizer, rejected, size, "rejected (tuned)"))
    n = len(kept)
    summary: dict = {name: {"preference_accuracy": sum(c > r for c, r in zip(*pair)) / n, "n_samples": n}
                     for name, pair in logps.items()}
    margins = [(tc - bc) - (tr - br) for tc, bc, tr, br in zip(logps["tuned"][0], logps["base"][0],
                                                                  logps["tuned"][1], logps["base"][1])]
    summary["tuned"]["reward_accuracy"] = sum(m > 0 for m in margins) / n
    summary["tuned"]["reward_margin"] = sum(margins) / n
    samples = [{"row": index, "prompt": rows[index]["messages"],
                **{f"{name}_logps": [logps[name][0][k], logps[name][1][k]] for name in logps},
                "reward_margin": margins[k]} for k, index in enumerate(kept)]
    return summary, samples


def format_preference_table(summary: dict) -> str:
    lines = [f"{'model':<8}{'pref_accuracy':>15}{'reward_accuracy':>17}{'samples':>9}"]
    for name in ("base", "tuned"):
        s = summary[name]
        reward = s.get("reward_accuracy")
        lines.append(f"{name:<8}{s['preference_accuracy']:>15.3f}{'-' if reward is None else format(reward, '.3f'):>17}"
                     f"{s['n_samples']:>9}")
    return "\n".join(lines)
