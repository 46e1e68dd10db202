"""The end of every run: `run_dir/summary.json`, a console table and `report.html`.

`finish_run(recipe, run_dir, seconds, failed=None)` runs after the stages (and after a failed
one, so a broken run still gets its report). The table gives the run dir, best validation loss,
its perplexity against the language's threshold (`logging.health.perplexity_max`,
`logging.health.language`), non-padding tokens/s, peak memory, wall time and cost
(wall time x devices x `hardware.price_per_gpu_hour`, in `hardware.currency`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ftrecipes.monitor import health
from ftrecipes.plan.memory import world_size


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _language(recipe, run_dir: Path) -> str:
    chosen = recipe.logging.health.language
    if chosen != "auto":
        return chosen
    rows = read_jsonl(run_dir / "data" / "train.jsonl")[:500]
    texts = [m["content"] for r in rows for m in r.get("messages", []) if isinstance(m.get("content"), str)]
    texts += [r["text"] for r in rows if isinstance(r.get("text"), str)]
    return health.detect_language(texts)


def build_summary(recipe, run_dir: Path, seconds: float, failed: str | None = None) -> dict:
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = [r["eval_loss"] for r in rows if isinstance(r.get("eval_loss"), (int, float))]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    peaks = [r["memory_peak_gb"] for r in rows if r.get("memory_peak_gb") is not None]
    shares = [r["memory_percent"] for r in rows if r.get("memory_percent") is not None]
    hw = recipe.hardware
    devices = world_size(hw)  # GPUs, or CPU processes (`hardware.cpu_processes`) x nodes
    best = min(evals) if evals else None
    thresholds = dict(recipe.logging.health.perplexity_max)
    warnings = json.loads((run_dir / "health.json").read_text()) if (run_dir / "health.json").is_file() else []
    return {
        "run_dir": str(run_dir),
        "status": f"failed in {failed}" if failed else "completed",
        "steps": max((r["step"] for r in rows), default=0),
        "first_loss": next((r["loss"] for r in rows if "loss" in r), None),
        "last_loss": next((r["loss"] for r in reversed(rows) if "loss" in r), None),
        "best_eval_loss": best,
        "perplexity": health.perplexity_verdict(best, _language(recipe, run_dir), thresholds),
        "tokens_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
        "peak_memory_gb": max(peaks) if peaks else None,
        "peak_memory_percent": max(shares) if shares else None,
        "memory_device": next((r["memory_device"] for r in rows if r.get("memory_device")), None),
        "wall_seconds": round(seconds, 1),
        "cost": {"amount": round(seconds / 3600 * devices * float(hw.price_per_gpu_hour), 4),
                 "currency": hw.currency, "devices": devices, "price_per_device_hour": hw.price_per_gpu_hour},
        "warnings": warnings,
    }


def _fmt(value, unit: str = "", digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def summary_lines(s: dict) -> list[tuple[str, str]]:
    ppl = s["perplexity"]
    verdict = "-" if not ppl else (f"{ppl['perplexity']:.3g} ({'under' if ppl['ok'] else 'ABOVE'} the "
                                   f"{ppl['language']} threshold {ppl['threshold']:g})")
    memory = _fmt(s["peak_memory_gb"], " GB")
    if s["peak_memory_percent"] is not None:
        memory += f" ({s['peak_memory_percent']:.1f}% of {'the GPU' if s['memory_device'] == 'cuda' else 'host RAM'})"
    cost = s["cost"]
    return [("run dir", s["run_dir"]), ("status", s["status"]), ("steps", str(s["steps"])),
            ("loss", f"{_fmt(s['first_loss'])} -> {_fmt(s['last_loss'])}"),
            ("best validation loss", _fmt(s["best_eval_loss"])), ("perplexity", verdict),
            ("tokens/s (non-padding)", _fmt(s["tokens_per_s"], digits=6)), ("peak memory", memory),
            ("wall time", f"{s['wall_seconds']:.1f} s"),
            ("cost", f"{cost['amount']:.4g} {cost['currency']} ({cost['devices']} device(s) x "
                     f"{cost['price_per_device_hour']:g}/h)"),
            ("warnings", str(len(s["warnings"])) + ("" if not s["warnings"] else ": " + ", ".join(
                w["check"] for w in s["warnings"])))]


def print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="run summary", show_header=False)
    for key, value in summary_lines(s):
        table.add_row(key, value)
    Console(width=120).print(table)


def finish_run(recipe, run_dir: Path, seconds: float, failed: str | None = None) -> dict:
    from ftrecipes.monitor.report_html import write_report

    summary = build_summary(recipe, run_dir, seconds, failed)
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(Path(run_dir), summary)
    print_summary(summary)
    print(f"report: {Path(run_dir) / 'report.html'}")
    return summary
