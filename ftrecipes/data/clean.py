"""Cleaning steps on internal rows: redaction, dedup, answer filters, split and source weights.

Each step returns the indices it keeps and a count of what it removed, so the report can show
rows in and out per step and per reason. Steps never log row content.

Recipe keys: `data.pii.*`, `data.denylist.*`, `data.dedup.*`, `data.filters.drop_empty_outputs`,
`data.output_format.*`, `data.split.*`, `data.weight`, `data.sources[].weight`, `seed`.
"""

from __future__ import annotations

import json
import random
import re

from ftrecipes.data import dedup, formats
from ftrecipes.errors import DataError


def map_strings(row: dict, fn) -> None:
    """Applies `fn` to every text of a row in place (contents, answers, text, tool-call arguments)."""
    if "text" in row:
        row["text"] = fn(row["text"])
        return
    for key in ("messages", "chosen", "rejected"):
        for m in row.get(key, ()):
            m["content"] = fn(m["content"])
            for call in m.get("tool_calls") or ():
                function = call.get("function", call)
                function["arguments"] = _map_nested(function.get("arguments"), fn)


def _map_nested(value, fn):
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_nested(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_nested(v, fn) for v in value]
    return value


_POOL_STATE: dict = {}  # the redaction functions, set in the parent before forking


def _redact_chunk(rows: list[dict]) -> tuple[list[dict], list[str], list]:
    fns = _POOL_STATE["fns"]
    for row in rows:
        for fn in fns:
            map_strings(row, fn)
    return rows, [dedup.exact_key(formats.texts_of(r)) for r in rows], [_counts(fn) for fn in fns]


def _counts(fn):
    return (dict(fn.counts), set(fn.fakes)) if hasattr(fn, "fakes") else fn.count


def redact_rows(rows: list[dict], fns: list, num_proc: int, chunk: int = 2500) -> tuple[list[dict], list[str]]:
    """Applies the redaction functions (`pii.Redactor`, `compliance.Denylist`) to every text of every
    row, and returns the rows with their exact-dedup keys (computed on the redacted text).

    Large inputs run in `num_proc` forked workers; their per-process counts (redactions per entity,
    pseudonyms, denylist hits) are added back into `fns`, so the report is the same either way."""
    import multiprocessing

    jobs = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    _POOL_STATE["fns"] = fns
    if num_proc > 1 and len(jobs) > 2 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(jobs))) as pool:
            parts = pool.map(_redact_chunk, jobs)
        for _, _, counts in parts:
            for fn, got in zip(fns, counts):
                if hasattr(fn, "fakes"):
                    for name, n in got[0].items():
                        fn.counts[name] = fn.counts.get(name, 0) + n
                    fn.fakes |= got[1]
                else:
                    fn.count += got
    else:  # in this process the functions count for themselves
        parts = [_redact_chunk(job) for job in jobs]
    out_rows = [row for part, _, _ in parts for row in part]
    keys = [key for _, part_keys, _ in parts for key in part_keys]
    return out_rows, keys


def exact_dedup(rows: list[dict], protected: int, keys: list[str] | None = None) -> tuple[list[int], int]:
    """Indices kept (first occurrence; the first `protected` rows always kept) and the count removed."""
    seen, kept = set(), []
    for i, row in enumerate(rows):
        key = keys[i] if keys is not None else dedup.exact_key(formats.texts_of(row))
        if key in seen and i >= protected:
            continue
        seen.add(key)
        kept.append(i)
    return kept, len(rows) - len(kept)


def near_dedup(rows: list[dict], cfg, protected: int) -> tuple[list[int], dict]:
    """Indices kept, and the clusters: kept index -> [removed indices]."""
    docs = ["\n".join(formats.texts_of(r)) for r in rows]
    dupes = dedup.near_duplicates(docs, cfg.threshold, cfg.num_perm, cfg.shingle_size, protected)
    clusters: dict[int, list[int]] = {}
    for dup, original in dupes.items():
        clusters.setdefault(original, []).append(dup)
    return [i for i in range(len(rows)) if i not in dupes], clusters


def answer_filters(rows: list[dict], where: list[str], data) -> tuple[list[int], dict]:
    """Empty answers and the optional output format (regex or JSON Schema)."""
    fmt = data.output_format
    regex = re.compile(fmt.regex, re.DOTALL) if fmt.regex else None
    validator = None
    if fmt.json_schema is not None:
        from jsonschema import Draft202012Validator
        from omegaconf import OmegaConf

        validator = Draft202012Validator(OmegaConf.to_container(fmt.json_schema, resolve=True))
    removed = {"empty_output": 0, "output_format": 0}
    kept, drop_empty, on_mismatch = [], bool(data.filters.drop_empty_outputs), fmt.on_mismatch
    for i, row in enumerate(rows):
        answer = formats.answer_of(row)
        if answer is not None and drop_empty and not answer.strip():
            removed["empty_output"] += 1
            continue
        if answer is not None and (regex or validator) and not _matches(answer, regex, validator):
            if on_mismatch == "error":
                raise DataError("the answer does not match data.output_format", where=where[i],
                                hint="fix the row, or data.output_format.on_mismatch=drop")
            removed["output_format"] += 1
            continue
        kept.append(i)
    return kept, removed


def _matches(answer: str, regex, validator) -> bool:
    if regex is not None and not regex.fullmatch(answer):
        return False
    if validator is not None:
        try:
            return validator.is_valid(json.loads(answer))
        except json.JSONDecodeError:
            return False
    return True


def split(indices: list[int], is_validation_source: list[bool], seed: int, validation: float,
          test: float) -> dict[str, list[int]]:
    """Seeded shuffle, then test, validation and the rest train. Rows from a separate validation
    source all go to validation (and `validation` is then 0)."""
    fixed = [i for i in indices if is_validation_source[i]]
    pool = [i for i in indices if not is_validation_source[i]]
    random.Random(seed).shuffle(pool)
    n_test, n_val = round(len(pool) * test), round(len(pool) * validation)
    return {"train": pool[n_test + n_val:], "validation": fixed + pool[n_test:n_test + n_val],
            "test": pool[:n_test]}


def apply_weights(train: list[int], source: list[int], weights: list[float], seed: int) -> list[int]:
    """Training indices after mixing: each source's rows repeated (weight > 1) or sampled (< 1)."""
    if all(w == 1.0 for w in weights):
        return train
    rng = random.Random(seed + 1)
    out = []
    by_source: dict[int, list[int]] = {}
    for i in train:
        by_source.setdefault(source[i], []).append(i)
    for index, members in sorted(by_source.items()):
        weight = weights[index]
        whole, part = int(weight), weight - int(weight)
        out += members * whole
        out += rng.sample(members, round(len(members) * part))
    rng.shuffle(out)
    return out
