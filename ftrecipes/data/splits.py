"""Reading the splits that the prepare stage writes to `run_dir/data/`.

`{train,validation,test}.jsonl` hold one internal row a line (docs/data.md); for SFT a row is
`{"messages": [{"role": ..., "content": ...}, ...]}`. The train and evaluate stages read them here.
"""

from __future__ import annotations

import json
from pathlib import Path

SPLITS = ("train", "validation", "test")


def read_split(run_dir: Path, name: str) -> list[dict]:
    """The rows of one split (`[]` when the file is absent or empty)."""
    path = Path(run_dir) / "data" / f"{name}.jsonl"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
