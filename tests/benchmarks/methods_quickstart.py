"""Every method on the quickstart task: held-out exact match against full fine-tuning.

    .venv/bin/python tests/benchmarks/methods_quickstart.py [--methods full lora ...] [--lr lora=5e-3]

Runs `python -m ftrecipes.launch recipe=quickstart method=NAME` from the command line for each
method (one process each, the same tiny base, prepared data and seed), then prints a table from
each run's `eval/summary.json` and `stages.json`: held-out exact match and token F1 of the tuned
model, perplexity, the trainable fraction, the learning rate used, train seconds, and exact match
as a fraction of full fine-tuning's. Not collected by pytest (no test_ prefix).

The learning rates are those each method needs on this 660K-parameter base (`LEARNING_RATES`,
measured with this script); `--lr NAME=VALUE` overrides one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LEARNING_RATES = {
    "full": "1e-3", "lora": "5e-3", "dora": "5e-3", "qlora": "5e-3", "loha": "5e-3",
    "adalora": "1e-2", "ia3": "3e-2", "prompt_tuning": "3e-2", "p_tuning": "1e-2", "p_tuning_v2": "1e-2",
}


def run_method(name: str, learning_rate: str, root: Path, extra: list[str], compare_base: bool) -> dict:
    run_dir = root / name
    cmd = [sys.executable, "-m", "ftrecipes.launch", "recipe=quickstart", f"method={name}",
           f"method.learning_rate={learning_rate}", "logging.progress_bars=false",
           "evaluate.review.enabled=false", "stages=[prepare,train,evaluate]", f"run_dir={run_dir}",
           f"evaluate.compare_base={str(compare_base).lower()}", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-1500:]
        return {"method": name, "lr": learning_rate, "error": f"exit {proc.returncode}: {tail}"}
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    stages = json.loads((run_dir / "stages.json").read_text())
    return {"method": name, "lr": learning_rate, "wall": wall, "base": summary.get("base"),
            "tuned": summary["tuned"], "train": stages["train"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=list(LEARNING_RATES))
    parser.add_argument("--lr", action="append", default=[], help="NAME=VALUE")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("extra", nargs="*", help="more recipe overrides for every run")
    args = parser.parse_args()
    rates = {**LEARNING_RATES, **dict(item.split("=", 1) for item in args.lr)}
    root = args.root or Path(tempfile.mkdtemp(prefix="ftr-methods-"))
    os.environ.setdefault("WANDB_MODE", "offline")
    results = []
    for name in args.methods:
        print(f"running {name} (lr {rates[name]}) ...", flush=True)
        results.append(run_method(name, rates[name], root, args.extra, compare_base=not results))  # base once
        print(json.dumps({k: v for k, v in results[-1].items() if k != "train"}, default=str), flush=True)
    full = next((r for r in results if r["method"] == "full" and "error" not in r), None)
    print(f"\nquickstart task, {os.cpu_count()} CPU cores, run dirs under {root}\n")
    print("| method | lr | exact match | % of full | token F1 | perplexity | trainable | train s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | {r['lr']} | failed: {r['error'][-200:]!r} | | | | | | |")
            continue
        tuned, train = r["tuned"], r["train"]
        ratio = f"{tuned['exact_match'] / full['tuned']['exact_match']:.0%}" if full and full["tuned"]["exact_match"] else "n/a"
        print(f"| {r['method']} | {r['lr']} | {tuned['exact_match']:.2f} | {ratio} | {tuned.get('token_f1') or 0:.3f} "
              f"| {tuned['perplexity']:.3f} | {train['trainable_fraction']:.4%} "
              f"| {train['train_seconds']:.0f} | {r['wall']:.0f} |")
    if results and "error" not in results[0] and results[0].get("base"):
        base = results[0]["base"]
        print(f"| (untuned base) | | {base['exact_match']:.2f} | | {base.get('token_f1') or 0:.3f} | {base['perplexity']:.2f} | | | |")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
