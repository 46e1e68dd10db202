"""GPU training throughput and MFU: the plain TRL script against ftrecipes, on real model shapes.

    bash tests/benchmarks/gpu_throughput.sh                 # on a GPU machine; appends to docs/benchmarks.md
    python tests/benchmarks/gpu_throughput.py --smoke       # the same plumbing on the CPU, tiny shapes

For each shape (random init from the architecture numbers of Qwen2.5-0.5B, Qwen2.5-1.5B and
Llama-3.2-1B; no download) and each method (LoRA r16, full fine-tuning), each configuration runs
in its own process on the shared alpaca demo at sequence 2048:

- (a) `baseline`: TRL's SFTTrainer as a user writes it (`train_throughput.baseline_worker`): padding,
  TRL's defaults on a GPU (bf16, gradient checkpointing);
- (b) `ftrecipes`: `python -m ftrecipes.launch hardware=1x_h100` with its defaults;
- (c) `ftrecipes_fast`: + packing, `adamw_torch_fused`, FlashAttention-2 and Liger when installed.

Columns: non-padding tokens/s (between the first and the last logged step), peak GPU memory
(`torch.cuda.max_memory_allocated`, GB of 1e9 bytes, as the run's metrics.jsonl), MFU, and the ratio against (a). MFU counts model FLOPs
per real token, `6N + 12 L d s` for full fine-tuning and `4N + 8 L d s` for LoRA (a frozen base
computes no weight gradients), N the parameters without embeddings, L layers, d hidden size,
s = 2048, against the preset's `hardware.peak_tflops_bf16` (989 for 1x_h100, dense).

The random-init models use a byte-level BPE trained on the demo rows (32k merges) with the real
vocabulary size in the config, so the LM head and its loss cost what they cost on the real model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as cpu  # noqa: E402  (run_timed, summarise, baseline_command)

REPO = cpu.REPO
SHAPES = {  # from each model's config.json on the hub
    "qwen2.5-0.5b": dict(family="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(family="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "llama3.2-1b": dict(family="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                        rope_theta=500000.0),
}
SMOKE_SHAPE = dict(family="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, vocab_size=4096, tie_word_embeddings=True)
CONFIGS = ("baseline", "ftrecipes", "ftrecipes_fast")


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def build_model(shape: dict, rows: list[dict], folder: Path) -> Path:
    """Random-init model of `shape` with a BPE tokenizer trained on `rows`, saved for from_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from ftrecipes.model.tiny import train_tokenizer

    texts = [m["content"] for r in rows for m in r["messages"]]
    tokenizer = train_tokenizer(texts, min(32_000, shape["vocab_size"]))
    arch = {k: v for k, v in shape.items() if k != "family"}
    config_class = Qwen2Config if shape["family"] == "qwen2" else LlamaConfig
    config = config_class(**arch, max_position_embeddings=32768, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if torch.cuda.is_available() else None)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def model_flops_per_token(shape: dict, seq: int, lora: bool) -> float:
    d, layers, ffn = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    head = d // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head
    per_layer = d * d * 2 + 2 * d * kv + 3 * d * ffn  # q, o, k, v, gate/up/down
    params = layers * per_layer + shape["vocab_size"] * d  # + the LM head (tied or not, it is a matmul)
    if lora:
        return 4 * params + 8 * layers * d * seq
    return 6 * params + 12 * layers * d * seq


def run_one(name: str, method: str, model_dir: Path, prepared: Path, work: Path, args, env) -> dict:
    run_dir = work / f"{model_dir.name}-{method}-{name}"
    steps = f"train.max_steps={args.steps}"
    if name == "baseline":
        run_dir.mkdir()
        metrics = run_dir / "metrics.jsonl"
        command = cpu.baseline_command({"model": str(model_dir), "train_file": str(prepared / "data" / "train.jsonl"),
                                        "metrics": str(metrics), "seq": args.seq, "micro": args.micro, "lr": args.lr,
                                        "rank": 16 if method == "lora" else None, "cpu": args.smoke,
                                        "max_steps": args.steps}, run_dir)
    else:
        shutil.copytree(prepared, run_dir, ignore=shutil.ignore_patterns("metrics.jsonl"))
        metrics = run_dir / "metrics.jsonl"
        command = [sys.executable, "-m", "ftrecipes.launch", *common(args, model_dir, method), "stages=[train]",
                   f"run_dir={run_dir}", steps, *(fast_overrides(args) if name == "ftrecipes_fast" else [])]
    record = cpu.run_timed(command, metrics, env, work / f"{run_dir.name}.log")
    result = cpu.summarise(record, efficiency=float("nan"))
    peaks = [r.get("memory_peak_gb") for r in record["steps"] if r.get("memory_peak_gb") is not None]
    result["peak_gpu_gb"] = max(peaks) if peaks else float("nan")
    return result


def common(args, model_dir: Path, method: str) -> list[str]:
    hardware = ["hardware=cpu"] if args.smoke else ["hardware=1x_h100"]
    rank = ["method.r=16", "method.lora_alpha=32"] if method == "lora" else []
    return [*hardware, "model.source=local", f"model.path={model_dir}", "model.name=bench", "data=alpaca_en_demo",
            f"data.path={cpu.DATA}", f"data.max_seq_len={args.seq}", f"method={method}", *rank,
            f"method.learning_rate={args.lr}", f"train.micro_batch_size={args.micro}",
            "train.gradient_accumulation_steps=1", "logging.log_interval=1", "logging.progress_bars=false", "seed=42",
            "evaluate.compare_base=false"]


def fast_overrides(args) -> list[str]:
    extra = ["objective.packing=true", "train.optimizer=adamw_torch_fused"]
    if not args.smoke and installed("flash_attn"):
        extra.append("model.attn_implementation=flash_attention_2")
    if not args.smoke and installed("liger_kernel"):
        extra.append("train.liger_kernel=true")
    return extra


def versions() -> str:
    from importlib.metadata import version

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    libs = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "peft") if installed(p))
    extras = ", ".join(f"{p} {version(p)}" for p in ("flash-attn", "liger-kernel") if installed(p.replace("-", "_")))
    return f"{device}; {libs}" + (f"; {extras}" if extras else "; no flash-attn, no liger-kernel")


def table(results: dict, args, peak_tflops: float) -> str:
    lines = [f"### {datetime.date.today()}: {versions()}", "",
             f"    python tests/benchmarks/gpu_throughput.py --steps {args.steps} --seq {args.seq} --micro {args.micro}",
             "", "| shape | method | config | tok/s | step ms | peak GPU GB | MFU | vs (a) |", "|---|---|---|---|---|---|---|---|"]
    for (shape, method), by_config in results.items():
        base = by_config.get("baseline", {}).get("tokens_per_s")
        for name, m in by_config.items():
            flops = model_flops_per_token(SMOKE_SHAPE if args.smoke else SHAPES[shape], args.seq, method == "lora")
            mfu = m["tokens_per_s"] * flops / (peak_tflops * 1e12)
            ratio = f"{m['tokens_per_s'] / base:.2f}x" if base else "-"
            lines.append(f"| {shape} | {method} | {name} | {m['tokens_per_s']:,.0f} | {m['step_s'] * 1000:.0f} | "
                         f"{m['peak_gpu_gb']:.1f} | {mfu:.1%} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--methods", nargs="*", choices=["lora", "full"], default=["lora", "full"])
    parser.add_argument("--only", nargs="*", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the plumbing only")
    parser.add_argument("--append", type=Path, help="append the table to this markdown file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.seq, args.micro, args.steps = ["smoke"], 256, 2, min(args.steps, 6)
    if not cpu.DATA.is_file():
        print(f"skipped: {cpu.DATA} is absent (the benchmark needs the shared alpaca demo)")
        return 0
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_throughput: torch sees no CUDA device; run it on a GPU machine, or --smoke on the CPU")
        return 3
    work = Path(tempfile.mkdtemp(prefix="ftgpu-"))
    env = {**os.environ, "FTRECIPES_CACHE": str(work / "cache"), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    rows = [json.loads(line) for line in cpu.DATA.read_text().splitlines()] if cpu.DATA.suffix == ".jsonl" \
        else json.loads(cpu.DATA.read_text())
    rows = [{"messages": [{"role": "user", "content": r.get("instruction", "") + "\n" + r.get("input", "")},
                          {"role": "assistant", "content": r.get("output", "")}]} for r in rows]
    results: dict = {}
    for shape in args.shapes:
        model_dir = build_model(SMOKE_SHAPE if args.smoke else SHAPES[shape], rows, work / shape)
        for method in args.methods:
            prepared = work / f"prepared-{shape}-{method}"
            subprocess.run([sys.executable, "-m", "ftrecipes.launch", *common(args, model_dir, method),
                            "stages=[prepare]", f"run_dir={prepared}"], cwd=REPO, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            for name in args.only:
                runs = []
                for i in range(args.repeats):
                    (work / f"r{i}").mkdir(exist_ok=True)
                    runs.append(run_one(name, method, model_dir, prepared, work / f"r{i}", args, env))
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                results.setdefault((shape, method), {})[name] = med
                print(f"  {shape} {method} {name}: {med['tokens_per_s']:,.0f} tok/s, step {med['step_s'] * 1000:.0f} ms",
                      flush=True)
    peak = 989.0 if not args.smoke else 1.0  # 1x_h100's hardware.peak_tflops_bf16; smoke: a placeholder
    text = table(results, args, peak)
    print("\n" + text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
