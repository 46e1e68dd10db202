"""Benchmark of the prepare stage (not collected by pytest: the file name has no test_ prefix).

    .venv/bin/python tests/benchmarks/data_pipeline.py [--rows 50000]

Builds a corpus of >= 50k alpaca rows from ../shared/datasets (en, zh, identity) plus synthetic
variants (instruction and output of different rows recombined, with a numbered tag, so most rows
are distinct), trains a byte-level BPE tokenizer offline, then runs the prepare stage cold from the
command line (a fresh process and an empty cache) and prints a table from data/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"
WORKER_SWITCH = ("import sys, ftrecipes.worker as w; w.STAGES['prepare'] = 'ftrecipes.data.pipeline:run_prepare'; "
                 "from ftrecipes.launch import main; sys.exit(main(sys.argv[1:]))")


def corpus(n: int, seed: int = 0) -> list[dict]:
    base = []
    for name in ("alpaca_en_demo", "alpaca_zh_demo", "identity"):
        base += json.loads((SHARED / f"{name}.json").read_text())
    rng = random.Random(seed)
    rows = list(base)
    while len(rows) < n:
        a, b = rng.choice(base), rng.choice(base)
        rows.append({"instruction": f"[{len(rows)}] {a['instruction']}", "input": b["input"],
                     "output": f"{b['output']} (variant {rng.randrange(10**6)})"})
    return rows[:n]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent")
        return 0
    sys.path.insert(0, str(REPO))
    from ftrecipes.model.tiny import train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="ftr-bench-"))
    rows = corpus(args.rows)
    path = work / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tok = train_tokenizer([r["instruction"] + "\n" + r["output"] for r in rows[:3000]], 8192)
    model = work / "tokenizer"
    tok.save_pretrained(model)
    # a complete config, as a real model folder has: the plan counts it from its numbers
    (model / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
        "intermediate_size": 688, "vocab_size": len(tok), "max_position_embeddings": 4096,
        "tie_word_embeddings": True}))
    cmd = [sys.executable, "-c", WORKER_SWITCH, "data=quickstart", f"data.path={path}", "data.name=bench",
           f"data.max_seq_len={args.max_seq_len}", "model.source=local", f"model.path={model}",
           "model.architecture.max_position_embeddings=4096", "stages=[prepare]", f"run_dir={work / 'run'}"]
    env = {**os.environ, "FTRECIPES_CACHE": str(work / "cache")}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        return proc.returncode
    report = json.loads((work / "run" / "data" / "report.json").read_text())
    print(f"corpus: {args.rows} alpaca rows ({path.stat().st_size / 1e6:.1f} MB), {os.cpu_count()} CPU cores\n")
    print("| step | rows in | rows out | seconds | rows/s |\n|---|---|---|---|---|")
    for s in report["steps"]:
        rate = s["in"] / s["seconds"] if s["seconds"] else float("inf")
        print(f"| {s['step']} | {s['in']} | {s['out']} | {s['seconds']:.2f} | {rate:,.0f} |")
    steps = {s["step"]: s for s in report["steps"]}
    batches = report["tokenize_batches"]
    rates = np.array([r / t for r, _, t in batches if t > 0])
    rows_seen = np.cumsum([r for r, _, _ in batches])
    tail = rates[rows_seen[: len(rates)] > 0.95 * rows_seen[-1]] if len(rates) else rates
    tok_s = report["tokens"] / steps["tokenize"]["seconds"]
    near = steps.get("dedup_near")
    print("\n| metric | value | target |\n|---|---|---|")
    print(f"| tokenization | {tok_s:,.0f} tokens/s ({report['tokens']:,} tokens) | >= 1,000,000 tokens/s |")
    if near:
        print(f"| near-dup (MinHash LSH) | {near['in'] / near['seconds']:,.0f} docs/s | >= 10,000 docs/s |")
    print(f"| packing efficiency | {report['packing']['efficiency']:.2%} | >= 99% |")
    if len(rates):
        print(f"| tail rate (last 5% of rows / median batch) | {tail.mean() / np.median(rates):.0%} | >= 50% |")
    print(f"| whole prepare stage, cold, from the command line | {wall:.1f} s wall (stage {report['seconds']} s) | <= 20 s |")
    print(f"\nrun dir: {work / 'run'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
