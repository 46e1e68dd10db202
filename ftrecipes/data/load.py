"""Loading every source of a data recipe into internal rows, applying the bad-row policy.

Recipe keys: `data.path`, `data.format`, `data.weight`, `data.sources[]` (`path`, `format`,
`weight`), `data.validation_path`, `data.validation_format`, `data.columns.*`, `data.roles.*`,
`data.on_bad_row` (`error` | `skip`), `data.max_bad_fraction`.

Raises `DataError` (exit code 3) with `file:line: reason` for the first bad row under
`on_bad_row=error`, and when the skipped fraction exceeds `max_bad_fraction` under `skip`.
Messages name the field and the reason, never the row's content (it may hold PII).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ftrecipes.data import formats, readers
from ftrecipes.errors import DataError

_HINTS = {
    "missing_field": "add the field, map it with data.columns.*, or set data.format to the file's format",
    "wrong_type": "give the field the documented type (see docs/data.md)",
    "empty_assistant": "give every assistant turn text, or data.on_bad_row=skip to drop such rows",
    "empty_user": "give every instruction text, or data.on_bad_row=skip",
    "bad_role_order": "turns go [system], user, assistant, user, assistant, ...; map roles with data.roles.*",
    "invalid_json": "each JSONL line must be one complete JSON object",
    "unknown_role": "map the role with data.roles.<role>: [name]",
    "unknown_format": "set data.format (alpaca, chat, sharegpt, preference, prompt, text)",
    "empty_text": "remove empty rows, or data.on_bad_row=skip",
}


@dataclass
class Loaded:
    rows: list = field(default_factory=list)        # internal rows
    where: list = field(default_factory=list)       # file:line of each row
    source: list = field(default_factory=list)      # source index of each row (-1: validation source)
    weights: list = field(default_factory=list)     # weight per source index
    formats: dict = field(default_factory=dict)     # spec -> format used
    bad: Counter = field(default_factory=Counter)   # reason code -> rows skipped
    read: int = 0


def source_specs(data) -> list[tuple[str, str, float]]:
    """`(path spec, format, weight)` for data.path then every data.sources entry."""
    specs = [(data.path, data.format, float(data.weight))]
    specs += [(s.path, s.get("format", "auto"), float(s.get("weight", 1.0))) for s in data.sources]
    return specs


def input_specs(data) -> list[str]:
    """Every source's path spec, then `data.validation_path`."""
    return [s for s, _, _ in source_specs(data)] + ([data.validation_path] if data.validation_path else [])


def input_files(data) -> list[Path]:
    """Every local file the data recipe reads (`data.path`, `data.sources[].path`,
    `data.validation_path`; globs expanded, `builtin:` resolved), in reading order, without repeats.
    Hub datasets (`hf:`) have no local file. For lock files: hash these, not only `data.path`
    (this module stays light, so the launcher imports it before any run)."""
    files: list[Path] = []
    for spec in input_specs(data):
        files += [p for p in readers.resolve_files(spec) if p not in files]
    return files


def load(data) -> Loaded:
    columns, roles = formats.mapping(data.columns, data.roles)
    out = Loaded()
    if data.validation_path:
        _read(out, data.validation_path, data.validation_format, -1, columns, roles, data.on_bad_row)
    for index, (spec, fmt, weight) in enumerate(source_specs(data)):
        out.weights.append(weight)
        _read(out, spec, fmt, index, columns, roles, data.on_bad_row)
    bad = sum(out.bad.values())
    if out.read == 0 or not out.rows:
        raise DataError(f"no usable rows in {data.path}" + (f" ({bad} bad rows skipped)" if bad else ""),
                        hint="check data.path and data.format")
    if bad and bad / out.read > data.max_bad_fraction:
        reasons = ", ".join(f"{k}: {v}" for k, v in out.bad.most_common())
        raise DataError(f"{bad} of {out.read} rows are bad ({bad / out.read:.1%} > data.max_bad_fraction="
                        f"{data.max_bad_fraction:g}); by reason: {reasons}",
                        hint="fix the data (run with data.on_bad_row=error to see the first bad row's "
                             "file:line), or raise data.max_bad_fraction")
    return out


def _read(out: Loaded, spec: str, fmt: str, index: int, columns: dict, roles: dict, policy: str) -> None:
    chosen = None if fmt == "auto" else fmt
    for where, record in readers.read_spec(spec):
        out.read += 1
        try:
            if isinstance(record, readers.BadJson):
                raise formats.RowProblem("invalid_json", record.reason)
            if chosen is None:
                chosen = formats.infer_format(record, columns)
                out.formats[spec] = chosen
            row = formats.normalize(record, chosen, columns, roles)
        except formats.RowProblem as problem:
            if policy == "error":
                hint = _HINTS.get(problem.code, "fix the row")
                raise DataError(problem.reason, where=where,
                                hint=f"{hint}; or data.on_bad_row=skip to drop bad rows") from None
            out.bad[problem.code] += 1
            continue
        out.formats.setdefault(spec, chosen)
        out.rows.append(row)
        out.where.append(where)
        out.source.append(index)
