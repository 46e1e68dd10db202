"""Adding results to `eval/summary.json` after the evaluate stage wrote it, and refreshing
`report.html`, which renders that file (`ftrecipes.monitor.report_html`).

The lm-eval bridge adds `lm_eval`, the expert review adds `expert_review`; each owns its key, and
the held-out scores (`base`, `tuned`, `split`) are left as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def merge_eval_summary(run_dir: Path, key: str, value) -> dict:
    """Sets `key` in `run_dir/eval/summary.json` (created when absent); returns the whole summary."""
    path = Path(run_dir) / "eval" / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    summary[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file
    return summary


def refresh_report(run_dir: Path) -> Path | None:
    """Rewrites `run_dir/report.html` from `summary.json` when the run has finished (else None:
    the worker writes the report at the end of the run, and it will include the new key)."""
    from ftrecipes.monitor.report_html import write_report

    run_summary = Path(run_dir) / "summary.json"
    if not run_summary.is_file():
        return None
    return write_report(Path(run_dir), json.loads(run_summary.read_text(encoding="utf-8")))
