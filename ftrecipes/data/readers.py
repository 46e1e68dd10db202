"""Reading data sources: local files, globs, builtin files and Hugging Face dataset names.

Every record comes out as `(where, value)`: `where` is `file:line` (the line where a JSON object
starts, a JSONL line, a CSV line) or `file:N` (the Nth row of a Parquet file), so every later
problem names its row. A JSONL line that is not valid JSON comes out as `(where, BadJson(msg))`
so the caller can apply `data.on_bad_row`; a broken JSON array cannot be resynchronised and is
always an error.

Path forms (`data.path`, `data.sources[].path`, `data.validation_path`):

- `builtin:NAME`: a file shipped in `ftrecipes/data/builtin/`.
- `hf:ORG/NAME` or `hf:ORG/NAME:SPLIT`: a Hugging Face dataset (needs the hub or its cache).
- anything else: a file or a glob (`data/*.jsonl`), relative to the current directory.
  Shared datasets in a checkout are at `../shared/datasets/` from the repository root.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ftrecipes import paths
from ftrecipes.errors import DataError, EnvironmentProblem

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class BadJson:
    """A record that could not be parsed; `reason` never contains the row's text."""

    reason: str


def resolve_files(spec: str) -> list[Path]:
    """The files a path spec names, sorted; `hf:` specs return [] (see `read_hf`)."""
    if spec.startswith("hf:"):
        return []
    if spec.startswith("builtin:"):
        path = paths.builtin_data_dir() / spec.removeprefix("builtin:")
        if not path.is_file():
            names = ", ".join(sorted(p.name for p in paths.builtin_data_dir().glob("*")))
            raise DataError(f"data file '{spec}' not found", hint=f"builtin files: {names}")
        return [path]
    expanded = str(Path(spec).expanduser())
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"the glob '{spec}' matches no files (from {Path.cwd()})",
                            hint="check the pattern; relative paths start at the current directory")
        return files
    path = Path(expanded)
    if not path.is_file():
        raise DataError(f"data file '{spec}' not found (looked at {path.resolve()})",
                        hint="set data.path to an existing file; relative paths start at the current "
                             "directory (../shared/datasets/... from the repository root)")
    return [path]


def read_records(path: Path) -> Iterator[tuple[str, object]]:
    """`(where, value)` for every record of one file, by its suffix."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"cannot tell the file type of '{path}'",
                        hint=f"use one of {', '.join(SUFFIXES)}")
    if kind == "parquet":
        yield from _parquet(path)
        return
    text = path.read_text(encoding="utf-8")
    if kind == "csv":
        yield from _csv(path, text)
    elif text.lstrip().startswith("["):
        yield from _json_array(path, text)
    else:
        yield from _jsonl(path, text)


def _jsonl(path: Path, text: str) -> Iterator[tuple[str, object]]:
    loads = json.loads
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", loads(line)
        except json.JSONDecodeError as exc:
            yield f"{path}:{number}", BadJson(f"invalid JSON ({exc.msg}, column {exc.colno})")


def _json_array(path: Path, text: str) -> Iterator[tuple[str, object]]:
    """Elements of a top-level JSON array, each with the line where it starts."""
    decoder = json.JSONDecoder()
    pos, line, counted = text.index("[") + 1, 1, 0
    end = len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end:
            raise DataError("the JSON array is not closed", where=f"{path}:{line}",
                            hint="end the file with ]")
        if text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg})", where=f"{path}:{exc.lineno}",
                            hint="fix the JSON syntax; a broken JSON array cannot be skipped row by "
                                 "row (JSONL can)") from None
        yield f"{path}:{line}", value


def _csv(path: Path, text: str) -> Iterator[tuple[str, object]]:
    import io

    reader = csv.DictReader(io.StringIO(text))
    start = 2
    for row in reader:
        yield f"{path}:{start}", {k: _maybe_json(v) for k, v in row.items() if k is not None}
        start = reader.line_num + 1


def _maybe_json(value):
    """CSV cells holding nested JSON (a messages list) are parsed; other cells stay strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parquet(path: Path) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield f"{path}:{number}", row


def read_hf(spec: str) -> Iterator[tuple[str, object]]:
    """Rows of `hf:ORG/NAME[:SPLIT]` through `datasets.load_dataset`.

    When the hub cannot be reached and offline mode is not set (`HF_HUB_OFFLINE=1` reads the
    local cache), this fails at once instead of after `datasets`' retries (about 25 s)."""
    import os

    name, _, split = spec.removeprefix("hf:").partition(":")
    split = split or "train"
    what = f"the Hugging Face dataset '{name}' (split {split}) could not be loaded"
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not offline and not hub_reachable():
        raise EnvironmentProblem(f"{what}: the hub is unreachable from this machine",
                                 hint="connect to the hub; or set HF_HUB_OFFLINE=1 to read a cached copy; or "
                                      "export the dataset to a local JSONL/Parquet file and set data.path to it")
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown or gated: one message for users
        raise EnvironmentProblem(
            f"{what} ({type(exc).__name__})",
            hint="connect to the hub or download the dataset once, or export it to a local "
                 "JSONL/Parquet file and set data.path to that file") from None
    for number, row in enumerate(dataset, start=1):
        yield f"{spec}:{number}", row


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint (`HF_ENDPOINT`) opens within the timeout."""
    import os
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
        return True
    except OSError:
        return False


def read_spec(spec: str) -> Iterator[tuple[str, object]]:
    """Records of every file a path spec names, in order."""
    if spec.startswith("hf:"):
        yield from read_hf(spec)
        return
    for path in resolve_files(spec):
        yield from read_records(path)
