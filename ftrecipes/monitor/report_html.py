"""`run_dir/report.html`: one self-contained page (inline SVG and CSS, images as data URIs) that
opens from disk without a server.

Sections: the run summary, health warnings, loss and validation-loss curves, learning rate,
throughput and memory curves, the evaluation summary (`eval/summary.json`, with expert scores when
present), the data report (`data/report.json` and `data/lengths.png`) and the resolved recipe.
Regenerate it for any run dir with `python -m ftrecipes.monitor.report_html RUN_DIR`.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path

from ftrecipes.monitor.svg import line_chart

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top;font-size:.9em}th{background:#f4f4f4}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em;margin:.5em 0}.ok{color:#287a28}
.charts{display:flex;flex-wrap:wrap;gap:1em}.empty{color:#888}"""


def _esc(value) -> str:
    return html.escape(str(value))


def _table(pairs, header: tuple | None = None, cls: str = "") -> str:
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in pairs)
    return f'<table class="{cls}">{head}{body}</table>'


def json_table(value, depth: int = 0) -> str:
    """Nested dicts as nested tables, lists of scalars inline, long lists summarised."""
    if isinstance(value, dict):
        return _table([(_esc(k), json_table(v, depth + 1)) for k, v in value.items()])
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return _esc(", ".join(str(v) for v in value[:50]) + (" ..." if len(value) > 50 else ""))
        return "".join(json_table(v, depth + 1) for v in value[:20]) + ("..." if len(value) > 20 else "")
    if isinstance(value, float):
        return _esc(f"{value:.6g}")
    return _esc(value)


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    return [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def _charts(rows: list[dict]) -> str:
    charts = [
        line_chart({"train loss": _series(rows, "loss"), "validation loss": _series(rows, "eval_loss")}, "Loss", "loss"),
        line_chart({"learning rate": _series(rows, "learning_rate")}, "Learning rate", "lr"),
        line_chart({"tokens/s": _series(rows, "tokens_per_s")}, "Throughput (non-padding tokens/s)", "tokens/s"),
        line_chart({"current": _series(rows, "memory_gb"), "peak": _series(rows, "memory_peak_gb")}, "Memory", "GB"),
    ]
    if any("mfu" in r for r in rows):
        charts.append(line_chart({"MFU": _series(rows, "mfu")}, "Model FLOPs utilization", "MFU"))
    return '<div class="charts">' + "".join(charts) + "</div>"


def _data_section(run_dir: Path) -> str:
    path = run_dir / "data" / "report.json"
    if not path.is_file():
        return '<p class="empty">no data report (the prepare stage did not run)</p>'
    rep = json.loads(path.read_text())
    steps = [(_esc(s["step"]), s["in"], s["out"], _esc(", ".join(f"{k} {v}" for k, v in s["removed"].items()) or "-"),
              f"{s['seconds']:.2f}") for s in rep.get("steps", [])]
    out = [_table(steps, ("step", "rows in", "rows out", "removed (by reason)", "seconds"))]
    facts = {"rows in": rep.get("rows_in"), "rows out": rep.get("rows_out"), "splits": rep.get("splits"),
             "bad rows": rep.get("bad_rows"), "redactions": rep.get("redactions"),
             "duplicates": {k: v for k, v in (rep.get("duplicates") or {}).items() if k != "largest_clusters"},
             "token lengths": rep.get("token_lengths"), "packing": rep.get("packing")}
    out.append(json_table(facts))
    checklist = rep.get("checklist")
    if checklist:
        out.append("<h3>Compliance checklist</h3>" + json_table(checklist))
    png = run_dir / "data" / "lengths.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode()
        out.append(f'<p><img alt="token length histogram" src="data:image/png;base64,{data}"></p>')
    return "".join(out)


def render(run_dir: Path, summary: dict) -> str:
    from ftrecipes.monitor.summary import read_jsonl, summary_lines

    rows = read_jsonl(run_dir / "metrics.jsonl")
    warnings = summary.get("warnings") or []
    warn_html = "".join(f'<div class="warn"><b>{_esc(w["check"])}</b> (step {w["step"]}): {_esc(w["message"])}'
                        f'<br>advice: {_esc(w["advice"])}</div>' for w in warnings) or '<p class="ok">no warnings</p>'
    eval_path = run_dir / "eval" / "summary.json"
    evaluation = json_table(json.loads(eval_path.read_text())) if eval_path.is_file() else \
        '<p class="empty">no evaluation (the evaluate stage did not run)</p>'
    recipe_path = run_dir / "recipe.resolved.yaml"
    recipe_text = recipe_path.read_text() if recipe_path.is_file() else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ftrecipes run {_esc(run_dir.name)}</title>'
            f"<style>{_CSS}</style></head><body><h1>ftrecipes run {_esc(run_dir.name)}</h1>"
            f'<h2 id="summary">Summary</h2>{_table([(_esc(k), _esc(v)) for k, v in summary_lines(summary)], cls="summary")}'
            f'<h2 id="health">Health</h2>{warn_html}'
            f'<h2 id="curves">Training curves</h2>{_charts(rows)}'
            f'<h2 id="evaluation">Evaluation</h2>{evaluation}'
            f'<h2 id="data">Data report</h2>{_data_section(run_dir)}'
            f'<h2 id="recipe">Resolved recipe</h2><pre>{_esc(recipe_text)}</pre></body></html>\n')


def write_report(run_dir: Path, summary: dict) -> Path:
    out = Path(run_dir) / "report.html"
    out.write_text(render(Path(run_dir), summary), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "recipe.resolved.yaml").is_file():
        print("usage: python -m ftrecipes.monitor.report_html RUN_DIR   (a run dir with recipe.resolved.yaml)",
              file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        print(f"{summary_path} is missing: the run has not finished", file=sys.stderr)
        return 2
    print(write_report(run_dir, json.loads(summary_path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
