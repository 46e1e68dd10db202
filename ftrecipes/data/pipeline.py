"""The prepare stage: load -> normalize -> redact -> dedup -> filter -> template/tokenize -> split -> pack.

`run_prepare(recipe, run_dir)` writes into `run_dir/data/`:

- `train.jsonl`, `validation.jsonl`, `test.jsonl`: one internal row a line (docs/data.md);
- `tokenized/{train,validation,test}/`: `datasets` folders with `input_ids` and `completion_mask`;
- `packed/train/`: packed sequences with `input_ids`, `completion_mask`, `seq_lengths`, `position_ids`
  (SFT and text rows, when `data.packing.enabled`);
- `report.json`, `report.md`, `lengths.png`: the data report with the compliance checklist.

Features and the keys that control them:

- sources, formats, mapping: `data.path`, `data.format`, `data.weight`, `data.sources`,
  `data.validation_path`, `data.columns`, `data.roles` (ftrecipes/data/load.py)
- bad rows: `data.on_bad_row`, `data.max_bad_fraction`
- PII/PHI redaction: `data.pii.enabled`, `data.pii.mode`, `data.pii.entities` (pii.py)
- proprietary terms: `data.denylist.*`; attestations: `data.attestations.*` (compliance.py)
- dedup: `data.dedup.exact`, `data.dedup.near`, `data.dedup.threshold`, `num_perm`, `shingle_size`
- filters: `data.filters.min_tokens`, `data.filters.max_length_policy`, `data.max_seq_len`,
  `data.filters.drop_empty_outputs`, `data.output_format.*`
- templating: `data.template.train_on`, `data.num_proc`, `data.debug_rows` (tokenize.py)
- split: `data.split.validation`, `data.split.test`, `seed`; packing: `data.packing.enabled`
- caching and multi-rank: `data.cache.enabled`, `data.cache.wait_timeout_s` (cache.py)

The tokenizer is the base model's (`model.*`, resolved through ftrecipes.model.load).

Raises `DataError` (exit code 3): a bad row under `on_bad_row=error` (`file:line: reason`), too
many bad rows, a row over `max_seq_len` under `max_length_policy=error`, an answer that fails
`output_format` under `on_mismatch=error`, or no rows left.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from ftrecipes.data import cache, clean, compliance, formats, load, pack, pii, readers, report, tokenize
from ftrecipes.errors import DataError, FtrecipesError
from ftrecipes.monitor.progress import bar

SPLITS = ("train", "validation", "test")


def run_prepare(recipe, run_dir: Path, tokenizer=None) -> dict:
    """Prepares the data (or restores it from the cache); returns a summary of the report."""
    from omegaconf import OmegaConf

    data, out = recipe.data, Path(run_dir) / "data"
    if tokenizer is None:
        from ftrecipes.model.load import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(recipe, resolve_model_path(recipe))
    data_cfg = OmegaConf.to_container(data, resolve=True)
    inputs = input_hashes(data)
    fp = cache.fingerprint(data_cfg, recipe.seed, cache.tokenizer_hash(tokenizer), inputs)
    rank, world = cache.rank_and_world()
    if world > 1 and rank != 0:
        cache.wait_for_rank0(out, fp, data.cache.wait_timeout_s)
        return _summary(json.loads((out / "report.json").read_text()), cached=True)
    if world > 1 and cache.is_done(out, fp):
        # a done-marker for this fingerprint may be read by the other ranks before this rank could
        # clear it: rewriting the files under them would race, and the result is the same anyway
        print(f"prepare: {out} already holds the prepared data {fp[:12]}; no work done")
        return _summary(json.loads((out / "report.json").read_text()), cached=True)
    out.mkdir(parents=True, exist_ok=True)
    cache.clear_marks(out)
    try:
        if data.cache.enabled and cache.restore(fp, out):
            result = json.loads((out / "report.json").read_text())
            print(f"prepare: cached result {fp[:12]} reused (same data recipe, tokenizer and input "
                  f"files); no work done")
            summary = _summary(result, cached=True)
        else:
            with bar("prepare", total=_planned_steps(data), enabled=recipe.logging.progress_bars) as advance:
                result = prepare(recipe, out, tokenizer, fp, inputs, advance)
            if data.cache.enabled:
                cache.store(fp, out)
            summary = _summary(result, cached=False)
    except FtrecipesError as error:
        cache.mark(out, cache.FAILED, f"{fp} {error.message}")
        raise
    cache.mark(out, cache.DONE, fp)
    return summary


def input_hashes(data) -> dict:
    """`{path spec: {file: sha256}}` for every source (hub datasets: their name)."""
    return {spec: ({spec: "hub"} if spec.startswith("hf:") else
                   {str(p): cache.file_sha256(p) for p in readers.resolve_files(spec)}) for spec in load.input_specs(data)}


def _summary(result: dict, cached: bool) -> dict:
    return {"cached": cached, "fingerprint": result["fingerprint"], "splits": result["splits"],
            "rows_in": result["rows_in"], "packing_efficiency": (result.get("packing") or {}).get("efficiency")}


def _planned_steps(data) -> int:
    return 8 + bool(data.dedup.exact) + bool(data.dedup.near) + bool(data.packing.enabled)


def prepare(recipe, out: Path, tokenizer, fp: str, inputs: dict, advance=lambda n=1, info="": None) -> dict:
    """All the work of the stage; writes every file and returns the report. `advance(n, info)` moves
    the progress bar one step per cleaning step."""
    from omegaconf import OmegaConf

    data, started, timings, steps = recipe.data, time.perf_counter(), {}, []

    def step(name: str, n_in: int, n_out: int, removed: dict, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 3)
        steps.append({"step": name, "in": n_in, "out": n_out, "removed": dict(removed), "seconds": timings[name]})
        advance(1, info=name)

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # save_to_disk bars are noise in the stage log
    t0 = time.perf_counter()
    loaded = load.load(data)
    rows, where = loaded.rows, loaded.where
    protected = sum(1 for s in loaded.source if s == -1)
    step("load", loaded.read, len(rows), loaded.bad, t0)

    t0 = time.perf_counter()
    redactor = pii.Redactor(data.pii.mode, data.pii.entities, recipe.seed)
    deny = compliance.Denylist(compliance.denylist_pattern(data.denylist.terms, data.denylist.regexes),
                               data.denylist.replacement)
    num_proc = data.num_proc or tokenize.cpu_count()
    fns = ([redactor] if data.pii.enabled else []) + ([deny] if deny.pattern is not None else [])
    rows, exact_keys = clean.redact_rows(rows, fns, num_proc)
    step("redact", len(rows), len(rows), {}, t0)

    keep = list(range(len(rows)))
    exact = near = 0
    clusters: dict = {}
    if data.dedup.exact:
        t0 = time.perf_counter()
        kept, exact = clean.exact_dedup(rows, protected, exact_keys)
        keep = kept
        step("dedup_exact", len(rows), len(keep), {"exact_duplicate": exact}, t0)
    if data.dedup.near:
        t0 = time.perf_counter()
        sub = [rows[i] for i in keep]
        kept, local = clean.near_dedup(sub, data.dedup, sum(1 for i in keep if i < protected))
        clusters = {keep[k]: [keep[d] for d in v] for k, v in local.items()}
        near = len(sub) - len(kept)
        step("dedup_near", len(sub), len(kept), {"near_duplicate": near}, t0)
        keep = [keep[k] for k in kept]

    t0 = time.perf_counter()
    kept, removed = clean.answer_filters([rows[i] for i in keep], [where[i] for i in keep], data)
    step("filter_answers", len(keep), len(kept), removed, t0)
    keep = [keep[k] for k in kept]

    t0 = time.perf_counter()
    view = tokenize.template_view(tokenizer)
    rendered = tokenize.render_all([rows[i] for i in keep], data.template.train_on, view, num_proc)
    rate_log: list = []
    ids, masks = tokenize.encode(tokenizer, rendered, rate_log=rate_log)
    n_tokens = sum(len(x) for x in ids if x is not None)
    step("tokenize", len(keep), len(keep), {}, t0)
    timings["tokens"] = n_tokens

    t0 = time.perf_counter()
    kept, removed, truncated = _length_filters(data, [rows[i] for i in keep], [where[i] for i in keep],
                                               rendered, ids, masks, tokenizer, view)
    step("filter_tokens", len(keep), len(kept), {**removed, "truncated (kept)": truncated}, t0)
    token_of = {keep[k]: (ids[k], masks[k]) for k in kept}
    keep = [keep[k] for k in kept]
    if not keep:
        raise DataError("no rows are left after cleaning and filtering",
                        hint="see the counts above; relax data.filters or data.dedup")

    t0 = time.perf_counter()
    is_val = [s == -1 for s in loaded.source]
    parts = clean.split(keep, is_val, recipe.seed, data.split.validation, data.split.test)
    parts["train"] = clean.apply_weights(parts["train"], loaded.source, loaded.weights, recipe.seed)
    step("split", len(keep), sum(len(v) for v in parts.values()), {}, t0)

    t0 = time.perf_counter()
    for name in SPLITS:
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in parts[name])
        pack.to_dataset([token_of[i][0] for i in parts[name]],
                        [token_of[i][1] for i in parts[name]]).save_to_disk(str(out / "tokenized" / name))
    step("write", len(keep), len(keep), {}, t0)

    packing = None
    kinds = {("text" if "text" in rows[i] else "pref" if "chosen" in rows[i] else "prompt"
              if formats.answer_of(rows[i]) is None else "sft") for i in keep}
    if data.packing.enabled and kinds <= {"sft", "text"}:
        t0 = time.perf_counter()
        packed, packing = pack.pack([token_of[i][0] for i in parts["train"]],
                                    [token_of[i][1] for i in parts["train"]], data.max_seq_len)
        if packed is not None:
            packed.save_to_disk(str(out / "packed" / "train"))
        step("pack", len(parts["train"]), packing["sequences"], {}, t0)
    elif data.packing.enabled:
        packing = {"efficiency": None, "note": f"not packed: {sorted(kinds - {'sft', 'text'})} rows are "
                   "tokenized by their trainer (DPO, GRPO)"}

    if data.debug_rows:
        for i in keep[: data.debug_rows]:
            print(f"debug {where[i]}:\n  " + tokenize.debug_view(tokenizer, *token_of[i]))

    t0 = time.perf_counter()
    final = [rows[i] for name in SPLITS for i in parts[name]]
    texts = [t for r in final for t in formats.texts_of(r)]
    residual = pii.residual(texts, data.pii.entities, redactor.fakes) if data.pii.enabled else {}
    deny_left = sum(len(deny.pattern.findall(t)) for t in texts) if deny.pattern is not None else 0
    timings["compliance_scan"] = round(time.perf_counter() - t0, 3)

    attest = OmegaConf.to_container(data.attestations, resolve=True)
    lengths = [len(token_of[i][0]) for i in keep]
    result = {
        "name": data.name, "fingerprint": fp, "seed": recipe.seed,
        "formats": loaded.formats, "rows_in": loaded.read, "rows_out": len(keep),
        "bad_rows": dict(loaded.bad), "steps": steps,
        "splits": {name: len(parts[name]) for name in SPLITS},
        "pii_mode": data.pii.mode if data.pii.enabled else "off", "redactions": dict(sorted(redactor.counts.items())),
        "pii_residual": residual, "denylist_removed": deny.count,
        "duplicates": {"exact": exact, "near": near, "threshold": data.dedup.threshold,
                       "near_clusters": len(clusters),
                       "largest_clusters": sorted(({"kept": where[k], "removed": len(v)} for k, v in clusters.items()),
                                                  key=lambda c: -c["removed"])[:10]},
        "token_lengths": report.length_stats(lengths), "tokens": n_tokens, "packing": packing,
        "template": {"train_on": data.template.train_on, "tool_role": "native" if view["tool_role"] else "as user turns",
                     "tools": "template variable" if view["tools_variable"] else "in the system turn"},
        "tokenize_batches": rate_log,
        "checklist": compliance.checklist(
            pii_enabled=data.pii.enabled, pii_residual=residual, standard_rows=len(final), total_rows=len(final),
            denylist_configured=deny.pattern is not None, denylist_residual=deny_left, attestations=attest,
            train_rows=len(parts["train"])),
        "inputs": inputs, "versions": _versions(), "timings": timings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    report.write(out, result)
    _console(result)
    return result


def _length_filters(data, rows, where, rendered, ids, masks, tokenizer, view):
    """Template failures, min tokens (content only) and max length (drop, truncate or error)."""
    removed = Counter({"template_mismatch": 0, "too_few_tokens": 0, "too_long": 0, "no_trained_tokens": 0})
    overhead: dict = {}
    kept, truncated, limit = [], 0, int(data.max_seq_len)
    on_bad_row, min_tokens, train_on = data.on_bad_row, int(data.filters.min_tokens), data.template.train_on
    policy = data.filters.max_length_policy
    for k, row in enumerate(rows):
        if isinstance(rendered[k], str):
            if on_bad_row == "error":
                raise DataError(rendered[k], where=where[k], hint="use a chat template that keeps turn text as "
                                "given, or data.on_bad_row=skip")
            removed["template_mismatch"] += 1
            continue
        content = len(ids[k]) - _overhead(row, tokenizer, view, overhead, train_on)
        if content < min_tokens:
            removed["too_few_tokens"] += 1
            continue
        if len(ids[k]) > limit:
            if policy == "error":
                raise DataError(f"the row has {len(ids[k])} tokens, more than data.max_seq_len={limit}",
                                where=where[k], hint="raise data.max_seq_len, or data.filters.max_length_policy="
                                "drop or truncate")
            if policy == "drop":
                removed["too_long"] += 1
                continue
            ids[k], masks[k] = ids[k][:limit], masks[k][:limit]
            truncated += 1
        if "text" not in row and formats.answer_of(row) is not None and not any(masks[k]):
            removed["no_trained_tokens"] += 1
            continue
        kept.append(k)
    return kept, {k: v for k, v in removed.items()}, truncated


def _overhead(row: dict, tokenizer, view: dict, memo: dict, train_on: str) -> int:
    """Tokens the chat template adds around this row's structure (its roles, with empty texts)."""
    if "text" in row:
        return 1 if view["specials"].get("eos_token") else 0
    key = (tuple((m["role"], bool(m.get("tool_calls"))) for m in row["messages"]), "chosen" in row,
           json.dumps(row.get("tools"), sort_keys=True) if row.get("tools") else None)
    if key not in memo:
        skeleton = {"messages": [{"role": m["role"], "content": ""} for m in row["messages"]]}
        if "chosen" in row:
            skeleton["chosen"] = [{"role": "assistant", "content": ""}]
        if row.get("tools"):
            skeleton["tools"] = row["tools"]
        text = "".join(t for t, _ in tokenize.segments(skeleton, "all", view))
        memo[key] = len(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)
    return memo[key]


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ftrecipes", "tokenizers", "transformers", "datasets", "trl", "datasketch", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _console(r: dict) -> None:
    """Counts only: never a row's content."""
    print(f"prepare: {r['rows_in']} rows read -> {r['rows_out']} kept in {r['seconds']} s; "
          + ", ".join(f"{k} {v}" for k, v in r["splits"].items()))
    for s in r["steps"]:
        gone = ", ".join(f"{k} {v}" for k, v in s["removed"].items() if v)
        print(f"  {s['step']:<15} {s['in']:>8} -> {s['out']:<8} {s['seconds']:>7.2f} s  {gone}")
    if r["redactions"]:
        print("  redacted: " + ", ".join(f"{k} {v}" for k, v in r["redactions"].items()))
    if r["packing"] and r["packing"].get("efficiency") is not None:
        print(f"  packing efficiency {r['packing']['efficiency']:.2%} ({r['packing']['sequences']} sequences)")
    for item in r["checklist"]:
        if item["state"] in ("missing", "failed", "warning"):
            print(f"  {item['state']}: {item['item']}: {item['detail']}")
