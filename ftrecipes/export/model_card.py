"""The model card: `write_model_card(run_dir, out_dir) -> Path` writes `out_dir/README.md`.

A Hugging Face style card (YAML metadata, then Markdown) built only from the run dir's files, so it
can be rewritten at any time (after an expert review is read back, say):

- recipe: base model and revision, method and its settings, objective, training settings, and the
  resolved recipe itself with its sha256 (`recipe.resolved.yaml`);
- data: the data report's counts, splits, compliance checklist and the sha256 of every input file
  (`data/report.json`, `lock.json`), plus the sha256 of the prepared splits;
- training: steps, losses, wall time and cost (`summary.json`);
- evaluation: held-out scores base against tuned with 95% intervals for exact match, lm-eval tasks
  and expert review when present (`eval/summary.json`);
- limitations: stated from what was and was not measured (sample size, in-distribution test data,
  no human review, no general benchmark, health warnings, a demonstration base model);
- how to load and serve it, and the package versions (`lock.json`).

`out_dir` is the folder that ships: `model/` (merged or full weights) or `adapter/`; peft's own
template README there is replaced. Nothing here imports torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

import yaml

from ftrecipes.evaluate.review_stats import wilson_interval


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


# Held-out metrics that are shares of rows: they get a Wilson 95% interval in the card.
PROPORTIONS = ("exact_match", "format_compliance", "preference_accuracy", "reward_accuracy")


def _evaluation(ev: dict) -> list[str]:
    lines: list[str] = []
    models = [m for m in ("base", "tuned") if isinstance(ev.get(m), dict)]
    if models:
        lines += [f"Held-out split `{ev.get('split', '?')}`, greedy decoding.", ""]
        metrics = [k for k in ("exact_match", "token_f1", "format_compliance", "perplexity", "preference_accuracy",
                               "reward_accuracy") if any(ev[m].get(k) is not None for m in models)]
        rows = []
        for m in models:
            row = [m]
            for k in metrics:
                value, n = ev[m].get(k), ev[m].get("n_samples")
                if k in PROPORTIONS and value is not None and n:
                    ci = wilson_interval(round(value * n), n)["ci95"]
                    row.append(f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]")
                else:
                    row.append(value)
            rows.append(row + [ev[m].get("n_samples")])
        lines += _table(["model", *[f"{k} (95% CI)" if k in PROPORTIONS else k for k in metrics], "samples"],
                        rows) + [""]
    lm = ev.get("lm_eval")
    if lm:
        lines += [f"lm-evaluation-harness {lm.get('lm_eval_version')} (limit {lm.get('limit')}, "
                  f"few-shot {lm.get('num_fewshot')}):", ""]
        rows = [[m, task, ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if not k.endswith("_stderr")),
                 lm.get("n_docs", {}).get(task)]
                for m in ("base", "tuned") for task, scores in lm.get(m, {}).items()]
        lines += _table(["model", "task", "scores", "documents"], rows) + [""]
    review = ev.get("expert_review")
    if review:
        def ci(entry: dict) -> str:
            return f"[{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]" if entry.get("ci95") else "-"

        lines += [f"Expert review of the tuned answers: {review['items_scored']} items, {review['ratings']} "
                  f"ratings by {len(review['raters'])} rater(s).", ""]
        lines += _table(["measure", "value", "95% CI"], [
            ["accuracy (1-5)", review["accuracy"]["mean"], ci(review["accuracy"])],
            ["format compliant", review["format_compliant"]["rate"], ci(review["format_compliant"])],
            ["safe", review["safe"]["rate"], ci(review["safe"])]]) + [""]
        agreement = review.get("agreement")
        if agreement:
            lines += [f"Agreement between raters (Krippendorff's alpha): accuracy "
                      f"{_fmt(agreement['accuracy']['krippendorff_alpha_interval'], 2)}, format "
                      f"{_fmt(agreement['format_compliant']['krippendorff_alpha_nominal'], 2)}, safe "
                      f"{_fmt(agreement['safe']['krippendorff_alpha_nominal'], 2)}.", ""]
    return lines or ["No evaluation was recorded (the evaluate stage did not run).", ""]


def limitations(recipe: dict, report: dict, ev: dict, summary: dict) -> list[str]:
    """Plain statements of what the evidence above does not cover."""
    out = []
    tuned = ev.get("tuned") or {}
    n = tuned.get("n_samples")
    if n:
        out.append(f"The held-out scores come from {n} rows drawn from the same source as the training data: "
                   "they show in-distribution performance, not how the model handles other inputs.")
        if n < 200:
            out.append(f"{n} held-out rows give wide intervals (see the 95% CIs above); small differences are noise.")
    else:
        out.append("The model was not evaluated on held-out data.")
    if "expert_review" not in ev:
        out.append("No human review is recorded: correctness beyond exact match, format and safety were not "
                   "assessed by people (eval/review.csv; python -m ftrecipes.review).")
    if not any(t != "heldout" for t in (ev.get("lm_eval") or {}).get("tasks", [])):
        out.append("General abilities were not benchmarked (evaluate.lm_eval.tasks); fine-tuning can reduce them.")
    for item in report.get("checklist") or []:
        if item.get("state") in ("missing", "warning"):
            out.append(f"Data: {item['item']}: {item.get('detail', item['state'])}.")
    for warning in summary.get("warnings") or []:
        out.append(f"Training health: {warning.get('check')} at step {warning.get('step')}: {warning.get('message')}")
    model = recipe.get("model", {})
    if model.get("source") == "build":
        out.append("The base is ftrecipes' tiny demonstration model, built locally: not for real use.")
    name = model.get("path") or model.get("name")
    out.append(f"The base model's own limitations, biases and license ({name}) apply.")
    return [f"- {line}" for line in out]


def _training(run_dir: Path, summary: dict) -> dict:
    """Steps and losses from `summary.json`, else from `metrics.jsonl`: the export stage runs
    before the worker writes the run summary."""
    if summary:
        return summary
    from ftrecipes.monitor.summary import read_jsonl

    rows = read_jsonl(run_dir / "metrics.jsonl")
    losses = [r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))]
    evals = [r["eval_loss"] for r in rows if isinstance(r.get("eval_loss"), (int, float))]
    if not rows:
        return {}
    return {"steps": max(r.get("step", 0) for r in rows), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "best_eval_loss": min(evals) if evals else None}


MARK = "Written by ftrecipes"


def refresh_model_cards(run_dir: Path) -> list[Path]:
    """Rewrites the cards this module wrote in `model/` and `adapter/` (after a review, say)."""
    cards = []
    for folder in (Path(run_dir) / "model", Path(run_dir) / "adapter"):
        readme = folder / "README.md"
        if readme.is_file() and MARK in readme.read_text(encoding="utf-8")[:2000]:
            cards.append(write_model_card(run_dir, folder))
    return cards


def write_model_card(run_dir: Path, out_dir: Path) -> Path:
    """Writes `out_dir/README.md` for the run in `run_dir`; returns its path."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    resolved = run_dir / "recipe.resolved.yaml"
    recipe = yaml.safe_load(resolved.read_text(encoding="utf-8")) if resolved.is_file() else {}
    report, lock = _json(run_dir / "data" / "report.json"), _json(run_dir / "lock.json")
    ev, summary = _json(run_dir / "eval" / "summary.json"), _json(run_dir / "summary.json")
    model, method = recipe.get("model", {}), recipe.get("method", {})
    objective, train, data = recipe.get("objective", {}), recipe.get("train", {}), recipe.get("data", {})
    base = model.get("path") or f"ftrecipes tiny ({model.get('name')}, built locally)"
    adapter = (out_dir / "adapter_config.json").is_file()
    meta = {"base_model": model.get("path") or None, "library_name": "peft" if adapter else "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["ftrecipes", str(method.get("name")), str(objective.get("name"))]}
    meta = {k: v for k, v in meta.items() if v is not None}
    holds = "a peft adapter" if adapter else ("the full weights (safetensors)" if method.get("name") == "full"
                                              else "merged weights: the adapter folded into the base (safetensors)")
    title = f"{run_dir.resolve().name}: {method.get('name')} {objective.get('name')} of {base}"
    settings = {k: v for k, v in method.items() if k != "name" and not isinstance(v, dict)}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {title}", "",
             f"{MARK} on {_dt.date.today().isoformat()} from the run dir `{run_dir.resolve()}`. "
             f"This folder holds {holds}.", "",
             "## Model", ""]
    revision = f" (revision {model.get('revision') or 'main'})" if model.get("source") == "hub" else ""
    lines += _table(["", ""], [["base", base + revision],
                               ["method", f"{method.get('name')}: " + ", ".join(f"{k}={v}"
                                                                                for k, v in settings.items())],
                               ["objective", objective.get("name")],
                               ["training", f"epochs {train.get('epochs')}, max_steps {train.get('max_steps')}, "
                                            f"micro batch {train.get('micro_batch_size')} x accumulation "
                                            f"{train.get('gradient_accumulation_steps')}, max length "
                                            f"{data.get('max_seq_len')}, seed {recipe.get('seed')}"],
                               ["hardware", (recipe.get("hardware") or {}).get("name")]]) + [""]
    lines += ["## Training data", ""]
    if report:
        lines += [f"{report.get('rows_in')} rows in, {report.get('rows_out')} after cleaning; splits "
                  + ", ".join(f"{k} {v}" for k, v in (report.get("splits") or {}).items())
                  + f"; PII mode {report.get('pii_mode')}; data fingerprint `{report.get('fingerprint')}`.", ""]
    inputs = dict(lock.get("data_files") or {})
    for files in (report.get("inputs") or {}).values():
        inputs.update(files if isinstance(files, dict) else {})
    splits = {f"data/{p.name}": _sha(p) for p in sorted((run_dir / "data").glob("*.jsonl"))}
    lines += _table(["file", "sha256"], [[f"`{k}`", f"`{v}`"] for k, v in {**inputs, **splits}.items()]) + [""]
    if report.get("checklist"):
        lines += _table(["check", "state", "detail"], [[c["item"], c["state"], c.get("detail", "")]
                                                        for c in report["checklist"]]) + [""]
    trained = _training(run_dir, summary)
    if trained:
        wall = f", {trained['wall_seconds']:.1f} s wall time" if trained.get("wall_seconds") is not None else ""
        lines += ["## Training", "", f"{trained.get('steps')} steps, loss {_fmt(trained.get('first_loss'))} -> "
                  f"{_fmt(trained.get('last_loss'))}, best validation loss {_fmt(trained.get('best_eval_loss'))}"
                  f"{wall}.", ""]
    lines += ["## Evaluation", "", *_evaluation(ev),
              "## Limitations", "", *limitations(recipe, report, ev, summary), ""]
    loader = ("from peft import AutoPeftModelForCausalLM\n"
              f"model = AutoPeftModelForCausalLM.from_pretrained(\"{out_dir.resolve()}\")") if adapter else (
              "from transformers import AutoModelForCausalLM\n"
              f"model = AutoModelForCausalLM.from_pretrained(\"{out_dir.resolve()}\")")
    lines += ["## Use", "", "```python", loader, "from transformers import AutoTokenizer",
              f"tokenizer = AutoTokenizer.from_pretrained(\"{out_dir.resolve()}\")  # with its chat template",
              "```", "", f"Serve it: `python -m ftrecipes.serve run_dir={run_dir.resolve()}` (vLLM) or add "
              "`backend=transformers` (CPU, 127.0.0.1).", ""]
    versions = ", ".join(f"{k} {v}" for k, v in (lock.get("packages") or {}).items())
    commits = ", ".join(f"{k} @ {v.get('commit', '?')[:12]}{' (dirty)' if v.get('dirty') else ''}"
                        for k, v in (lock.get("recipe_folders") or {}).items() if isinstance(v, dict))
    lines += ["## Reproduce", "", f"Python {lock.get('python', '?')}; {versions or 'versions not recorded'}.",
              f"Recipe folders: {commits or '-'}.",
              f"Resolved recipe (sha256 `{_sha(resolved) if resolved.is_file() else '-'}`):", "",
              "<details><summary>recipe.resolved.yaml</summary>", "", "```yaml",
              resolved.read_text(encoding="utf-8").strip() if resolved.is_file() else "", "```", "", "</details>", ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
