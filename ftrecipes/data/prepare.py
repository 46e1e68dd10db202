"""The prepare stage: read the recipe's data file, check every row, split it, write chat rows.

`run_prepare(recipe, run_dir)` writes `run_dir/data/{train,validation,test}.jsonl`, one
`{"messages": [...]}` conversation a line, and `run_dir/data/report.json`.

Recipe keys:

- `data.path`: `builtin:NAME` (a file shipped in `ftrecipes/data/builtin/`) or a path, relative to
  the current directory.
- `data.format`: `alpaca` (JSON lines or one JSON array of
  `{"instruction", "input"?, "output", "system"?}` objects). The user turn is the instruction,
  then a blank line and the input when there is one.
- `data.split.validation`, `data.split.test`: fractions of the rows held out, after a shuffle
  seeded by `seed`.
- `data.max_seq_len`: rows whose chat-formatted tokens exceed it are dropped (never truncated)
  and counted in the report under `dropped.too_long`. Counting needs the base model's tokenizer,
  so this stage resolves `model` (and builds the tiny model when `model.source=build`).

Raises `DataError` for a missing or empty file, an unknown format, or a bad row; a row error names
the file and line (`data.jsonl:17: ...`) and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from ftrecipes import paths
from ftrecipes.errors import DataError

SPLITS = ("train", "validation", "test")
_ROW_HINT = 'each row needs "instruction" and "output" strings; "input" and "system" are optional'


def resolve_data_path(spec: str) -> Path:
    """`builtin:NAME` -> the shipped file; anything else -> a path relative to the CWD."""
    if spec.startswith("builtin:"):
        path = paths.builtin_data_dir() / spec.removeprefix("builtin:")
        hint = f"builtin files: {', '.join(sorted(p.name for p in paths.builtin_data_dir().glob('*')))}"
    else:
        path = Path(spec).expanduser()
        hint = "set data.path to an existing JSONL or JSON file"
    if not path.is_file():
        raise DataError(f"data file '{spec}' not found (looked at {path.resolve()})", hint=hint)
    return path


def read_alpaca(path: Path) -> list[tuple[int, dict]]:
    """`(line, row)` pairs from a JSONL file or a JSON array, each row checked."""
    text = path.read_text(encoding="utf-8")
    items = _json_array_items(path, text) if text.lstrip().startswith("[") else _jsonl_items(path, text)
    if not items:
        raise DataError(f"data file '{path}' has no rows", hint="add alpaca rows, one JSON object a line")
    return [(line, _check_row(path, line, row)) for line, row in items]


def _jsonl_items(path: Path, text: str) -> list[tuple[int, object]]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON ({exc.msg}, column {exc.colno})",
                where=f"{path}:{number}",
                hint="each line must be one complete JSON object",
            ) from None
    return items


def _json_array_items(path: Path, text: str) -> list[tuple[int, object]]:
    """Elements of a top-level JSON array, each with the line where it starts."""
    decoder = json.JSONDecoder()
    items, pos = [], text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON ({exc.msg})", where=f"{path}:{exc.lineno}", hint="fix the JSON syntax"
            ) from None
        items.append((line, value))
    if pos >= len(text):
        raise DataError("the JSON array is not closed", where=f"{path}:{line if items else 1}")
    return items


def _check_row(path: Path, line: int, row: object) -> dict:
    where = f"{path}:{line}"
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}", where=where, hint=_ROW_HINT)
    for field in ("instruction", "output"):
        if field not in row:
            raise DataError(f'missing field "{field}"', where=where, hint=_ROW_HINT)
    for field in ("instruction", "input", "output", "system"):
        if field in row and row[field] is not None and not isinstance(row[field], str):
            raise DataError(
                f'field "{field}" must be a string, got {type(row[field]).__name__}',
                where=where,
                hint=_ROW_HINT,
            )
    for field in ("instruction", "output"):
        if not (row[field] or "").strip():
            raise DataError(f'field "{field}" is empty', where=where, hint=f'give every row a non-empty "{field}"')
    return row


def to_messages(row: dict) -> list[dict[str, str]]:
    """An alpaca row as chat turns: [system], user (instruction + input), assistant (output)."""
    user = row["instruction"]
    if (row.get("input") or "").strip():
        user = f"{user}\n\n{row['input']}"
    messages = []
    if (row.get("system") or "").strip():
        messages.append({"role": "system", "content": row["system"]})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": row["output"]})
    return messages


def split_rows(rows: list, seed: int, validation: float, test: float) -> dict[str, list]:
    """Shuffles with `seed`, then takes the test rows, the validation rows, and the rest."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_test, n_val = round(len(rows) * test), round(len(rows) * validation)
    return {
        "test": rows[:n_test],
        "validation": rows[n_test : n_test + n_val],
        "train": rows[n_test + n_val :],
    }


def _token_length(tokenizer, messages: list[dict[str, str]]) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return len(ids)


def run_prepare(recipe, run_dir: Path) -> dict:
    """Reads, checks, filters and splits the data; returns the report it writes."""
    from ftrecipes.model.load import load_tokenizer, resolve_model_path

    data = recipe.data
    if data.format != "alpaca":
        raise DataError(
            f"data.format '{data.format}' is not supported yet",
            hint="convert the file to alpaca rows (instruction, input, output) and set data.format=alpaca",
        )
    path = resolve_data_path(data.path)
    rows = read_alpaca(path)
    tokenizer = load_tokenizer(recipe, resolve_model_path(recipe))
    kept, too_long = [], 0
    for _line, row in rows:
        messages = to_messages(row)
        if _token_length(tokenizer, messages) > data.max_seq_len:
            too_long += 1
            continue
        kept.append({"messages": messages})
    if not kept:
        raise DataError(
            f"all {len(rows)} rows are longer than data.max_seq_len={data.max_seq_len} tokens",
            hint="raise data.max_seq_len or shorten the rows",
        )
    splits = split_rows(kept, recipe.seed, data.split.validation, data.split.test)
    out = Path(run_dir) / "data"
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in splits[name]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    report = {
        "source": str(path),
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "format": data.format,
        "rows_read": len(rows),
        "rows_kept": len(kept),
        "dropped": {"too_long": too_long},
        "max_seq_len": data.max_seq_len,
        "splits": {name: len(splits[name]) for name in SPLITS},
        "seed": recipe.seed,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"prepare: {len(rows)} rows read, {len(kept)} kept ({too_long} over {data.max_seq_len} tokens); "
        + ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
    )
    return report


def read_split(run_dir: Path, name: str) -> list[dict]:
    """The `{"messages": [...]}` rows of one split written by `run_prepare` ([] if absent)."""
    path = Path(run_dir) / "data" / f"{name}.jsonl"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
