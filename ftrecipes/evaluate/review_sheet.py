"""The expert review sheet: `write_review_sheet(recipe, run_dir) -> dict`.

Writes a seeded sample of held-out items for people to score, after the evaluate stage:

- `eval/review.csv`: one row per item, columns `COLUMNS`: the item id (`test:37` is line 37 of
  `data/test.jsonl`), the prompt, the reference, the base and the tuned answers, then empty score
  columns for the tuned answer: `accuracy_1_5` (1-5), `format_compliant_yn` and `safe_yn` (y/n),
  `comment`, and `rater` (a name, so several experts' sheets can be told apart). UTF-8 with a byte
  order mark, so spreadsheet programs open non-ASCII text correctly.
- `eval/review.html`: the same items, readable in a browser, with the scoring instructions.
- `eval/review.json`: the seed, the item ids and the sheet's sha256, for reading a filled sheet back
  (`python -m ftrecipes.review`, `ftrecipes.evaluate.review_scores`).

Answers come from `eval/samples.jsonl` (the evaluate stage's greedy answers for the first
`evaluate.max_samples` held-out rows); items beyond those, and preference rows (scored there by
log-probabilities, without answers), are generated here the same way (`heldout.generate`). The base
answer column stays empty when `evaluate.compare_base` is false.

Recipe keys: `evaluate.review.enabled`, `evaluate.review.samples` (50-100; all held-out rows when
there are fewer), `evaluate.review.seed` (null: the recipe's `seed`), and for generation
`evaluate.max_new_tokens`, `evaluate.batch_size`, `evaluate.compare_base`. The split is the one the
evaluate stage scored (`split` in `eval/summary.json`, else `evaluate.split`).

Raises `EnvironmentProblem` when the evaluate stage has not run, `DataError` when there are no
held-out rows with a prompt.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import random
from pathlib import Path

from ftrecipes.data.splits import read_split
from ftrecipes.errors import DataError, EnvironmentProblem

SCORE_COLUMNS = ("accuracy_1_5", "format_compliant_yn", "safe_yn", "comment")
COLUMNS = ("id", "prompt", "reference", "base_answer", "tuned_answer", "rater", *SCORE_COLUMNS)


def prompt_and_reference(row: dict) -> tuple[list[dict], str] | None:
    """`(prompt turns, reference)` for an SFT, preference or prompt-only row; None for raw text."""
    messages = row.get("messages")
    if not messages:
        return None
    if "chosen" in row:
        return messages, row["chosen"][-1].get("content") or ""
    if messages[-1].get("role") == "assistant":
        return messages[:-1], messages[-1].get("content") or ""
    return messages, str(row.get("answer") or row.get("reference") or "")


def render_prompt(turns: list[dict]) -> str:
    """The prompt as a reviewer reads it: the user text alone, or `[role] text` per turn."""
    if len(turns) == 1 and turns[0].get("role") == "user":
        return turns[0].get("content") or ""
    return "\n\n".join(f"[{t.get('role')}] {t.get('content') or ''}" for t in turns)


def _answers_from_samples(run_dir: Path, items: list[dict]) -> None:
    """Fills `base`/`tuned` of items whose held-out row the evaluate stage already answered."""
    path = run_dir / "eval" / "samples.jsonl"
    samples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for item in items:
        index = item["index"]
        # samples.jsonl line i is held-out row i (the stage scores the first max_samples rows);
        # the prompt check guards against a split rewritten since.
        if index < len(samples) and samples[index].get("prompt") == item["turns"]:
            for name in ("base", "tuned"):
                if isinstance(samples[index].get(name), str):
                    item[name] = samples[index][name]


def _generate_missing(recipe, run_dir: Path, items: list[dict]) -> dict:
    """Generates the answers samples.jsonl did not have; returns how many per model."""
    from ftrecipes.evaluate.heldout import generate
    from ftrecipes.model.load import load_model_and_tokenizer, load_tuned

    ev, counts, base = recipe.evaluate, {}, None
    wanted = [("tuned", [i for i in items if i.get("tuned") is None])]
    if ev.compare_base:
        wanted.insert(0, ("base", [i for i in items if i.get("base") is None]))
    for name, todo in wanted:
        counts[name] = len(todo)
        if not todo:
            continue
        if name == "base":
            base = load_model_and_tokenizer(recipe)
            model, tokenizer = base
        else:
            model, tokenizer = load_tuned(recipe, run_dir, base)
        model.eval()
        answers = generate(model, tokenizer, [i["turns"] for i in todo], ev.max_new_tokens, ev.batch_size,
                           f"review answers ({name})")
        for item, answer in zip(todo, answers):
            item[name] = answer
    return counts


def _split(recipe, run_dir: Path) -> str:
    summary = run_dir / "eval" / "summary.json"
    if not summary.is_file() or not (run_dir / "eval" / "samples.jsonl").is_file():
        raise EnvironmentProblem(f"no evaluation in {run_dir / 'eval'}",
                                 hint="run the evaluate stage first (stages=[evaluate] run_dir=...)")
    split = json.loads(summary.read_text(encoding="utf-8")).get("split") or recipe.evaluate.split
    return split


def write_review_sheet(recipe, run_dir: Path) -> dict | None:
    """Writes `eval/review.{csv,html,json}`; returns `{"items", "csv", "html", "generated", ...}`,
    or None when `evaluate.review.enabled` is false."""
    cfg = recipe.evaluate.review
    if not cfg.enabled:
        return None
    run_dir = Path(run_dir)
    split = _split(recipe, run_dir)
    rows = read_split(run_dir, split)
    usable = [(i, pr) for i, row in enumerate(rows) if (pr := prompt_and_reference(row)) is not None]
    if not usable:
        raise DataError(f"no held-out rows with a prompt in {run_dir / 'data' / (split + '.jsonl')}",
                        hint="the review sheet needs chat rows (messages); raw text rows have no prompt")
    seed = recipe.seed if cfg.seed is None else cfg.seed
    picked = random.Random(seed).sample(usable, min(cfg.samples, len(usable)))
    items = [{"id": f"{split}:{index + 1}", "index": index, "turns": turns, "reference": reference,
              "base": None, "tuned": None} for index, (turns, reference) in picked]
    _answers_from_samples(run_dir, items)
    generated = _generate_missing(recipe, run_dir, items)

    out = run_dir / "eval"
    csv_path = out / "review.csv"
    with csv_path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for item in items:
            writer.writerow([item["id"], render_prompt(item["turns"]), item["reference"], item["base"] or "",
                             item["tuned"] or "", "", "", "", "", ""])
    html_path = out / "review.html"
    html_path.write_text(render_html(items, split, seed, run_dir), encoding="utf-8")
    meta = {"split": split, "seed": seed, "samples": len(items), "ids": [i["id"] for i in items],
            "columns": list(COLUMNS), "sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
            "base_answers": bool(recipe.evaluate.compare_base), "generated": generated}
    (out / "review.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    note = "" if len(items) == cfg.samples else f" (all {len(items)} held-out rows: fewer than {cfg.samples})"
    print(f"review: {len(items)} items{note} in {csv_path} and {html_path}")
    return {"items": len(items), "csv": str(csv_path), "html": str(html_path), "seed": seed, "split": split,
            "generated": generated}


INSTRUCTIONS = """Score the <b>tuned answer</b> of each item in <code>review.csv</code> (the base answer
is there for comparison): <code>accuracy_1_5</code> 1 (wrong) to 5 (fully correct and complete);
<code>format_compliant_yn</code> y if it has the required format; <code>safe_yn</code> y if it is
safe to show a user; <code>comment</code> anything else; <code>rater</code> your name. Leave all
three scores empty to skip an item. Do not edit the other columns. Then run
<code>python -m ftrecipes.review run_dir=RUN_DIR sheet=filled.csv</code>."""


def render_html(items: list[dict], split: str, seed: int, run_dir: Path) -> str:
    def cell(text) -> str:
        if not text or not text.strip():
            return f'<span class="empty">({"only whitespace" if text else "none"})</span>'
        return f"<pre>{html.escape(text)}</pre>"

    body = "".join(
        f'<section id="{html.escape(i["id"])}"><h2>{n}. {html.escape(i["id"])}</h2><table>'
        f"<tr><th>prompt</th><td>{cell(render_prompt(i['turns']))}</td></tr>"
        f"<tr><th>reference</th><td>{cell(i['reference'])}</td></tr>"
        f"<tr><th>base answer</th><td>{cell(i['base'])}</td></tr>"
        f"<tr><th>tuned answer</th><td>{cell(i['tuned'])}</td></tr></table></section>"
        for n, i in enumerate(items, 1))
    style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;width:100%}th{width:9em;text-align:left;vertical-align:top;"
             "background:#f4f4f4}td,th{border:1px solid #ccc;padding:.3em .6em}pre{white-space:pre-wrap;margin:0}"
             ".empty{color:#888}.how{background:#eef5ff;padding:.6em 1em;border-left:4px solid #4a7fd0}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>review: {html.escape(run_dir.name)}'
            f"</title><style>{style}</style></head><body><h1>Expert review: {html.escape(run_dir.name)}</h1>"
            f"<p>{len(items)} held-out items from the {html.escape(split)} split (seed {seed}).</p>"
            f'<p class="how">{INSTRUCTIONS}</p>{body}</body></html>\n')
