"""CPU training throughput: a hand-written TRL script against ftrecipes, side by side.

    python tests/benchmarks/train_throughput.py                # 3 repeats, prints one table
    python tests/benchmarks/train_throughput.py --repeats 5 --json out.json

Configurations, each its own process, on the same tiny Llama (hidden 64, 2 layers, built once),
the same prepared alpaca rows (../shared/datasets/alpaca_en_demo.json, train split), sequence 512,
micro-batch 4, one epoch, LoRA r8 alpha 16, lr 1e-3 cosine with 3% warmup, seed 42:

- (a) `baseline`: TRL's SFTTrainer as a user writes it (this file's `baseline_worker`): padding,
  TRL/transformers defaults, bf16 and gradient checkpointing off (CPU).
- (b) `ftrecipes`: `python -m ftrecipes.launch` with its defaults (packing off).
- (c) `ftrecipes_fast`: every speed key that runs on this CPU: `objective.packing=true`
  (position_ids restart per sample; `ftrecipes.train.packed_rows`),
  `train.optimizer=adamw_torch_fused`, sdpa attention (the default). The CPU keys that are on by
  default serve (b) and (c) alike: `train.lm_head_loss=auto` (dense), `train.cpu_lora_kernels`,
  `train.cpu_reuse_freed_memory`, `train.lean_imports`.
  Not used on CPU: tf32, Liger and flash-attention (CUDA only, refused by validation), and
  `train.torch_compile` (inductor's CPU compile took minutes here, longer than the whole run).

What is measured, from rows the trainer logs every step (ftrecipes: run_dir/metrics.jsonl; the
baseline writes the same rows with a callback). The parent polls the file, so every timestamp
is taken the same way for all three:

- tokens/s: non-padding input tokens (transformers' `include_num_input_tokens_seen="non_padding"`)
  between the first and the last logged step, over the wall time between those rows.
- step time: the median gap between consecutive step rows.
- peak memory: the maximum RSS of the process tree (`wait4`'s `ru_maxrss`).
- efficiency: real tokens / token slots the model computes, estimated from the rows' lengths:
  padded runs pad each batch of 4 to its longest row (mean over 200 random orders); packed runs
  fill sequences of 512 (best-fit decreasing, as TRL and `ftrecipes.data.pack` do).
- final loss: the mean of the last 10 logged step losses (packing runs fewer, fuller steps over
  the same tokens, so its curve has fewer points).
- to step 1: from the parent's timestamp just before it starts the command to the arrival of the
  first step's row. It includes interpreter start, imports, recipe validation, model and tokenizer
  load, LoRA, trainer setup and the first step. It excludes data preparation, as the target asks:
  ftrecipes' prepare stage runs once beforehand (the baseline reads that same prepared split), and
  one untimed warm-up run of each ftrecipes configuration (`train.max_steps=1`) lets TRL tokenize
  (and pack) the rows, which later runs over the same data reuse
  (`ftrecipes.train.tokenized_cache`). The warm-up's own time to step 1 (tokenizing in-process)
  is printed under the table.
- data prep in run: seconds spent preparing data inside the timed run. The baseline's SFTTrainer
  tokenizes its rows every run (timed around TRL's `_prepare_dataset`, measurement only); the
  ftrecipes runs show 0.0 when their log says the tokenized rows came from the cache.

The machine is shared and small; the table gives medians over the repeats. No assertion here:
docs/performance.md holds a measured table and says which targets held.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "alpaca_en_demo.json"
SEQ, MICRO, RANK, LR = 512, 4, 8, 1e-3
MODEL = [
    "model.architecture.hidden_size=64", "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32", "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024", "model.build.pretrain_steps=40", "model.build.pretrain_batch_size=16",
]
COMMON = [
    *MODEL, "data=alpaca_en_demo", f"data.path={DATA}", f"data.max_seq_len={SEQ}", "method=lora",
    f"method.r={RANK}", f"method.lora_alpha={2 * RANK}", f"method.learning_rate={LR}", "train.epochs=1",
    f"train.micro_batch_size={MICRO}", "train.gradient_accumulation_steps=1", "logging.log_interval=1",
    "logging.progress_bars=false", "seed=42",
]
FAST = ["objective.packing=true", "train.optimizer=adamw_torch_fused"]
CONFIGS = ("baseline", "ftrecipes", "ftrecipes_fast")


# --- (a) the hand-written baseline, run as its own process -------------------------------------

def baseline_worker(settings_file: str) -> None:
    """A plain TRL script: the model, LoRA (or none: full), SFTConfig with defaults plus the run's
    hyperparameters. `settings_file` is JSON: model, train_file, metrics, seq, micro, lr, rank
    (null: full fine-tuning), cpu. On a GPU TRL's own defaults stay (bf16, gradient checkpointing)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    s = json.loads(Path(settings_file).read_text())

    class Rows(TrainerCallback):  # the same rows ftrecipes writes to metrics.jsonl
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                import torch

                peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
                with open(s["metrics"], "a") as f:
                    f.write(json.dumps({"step": state.global_step, **logs, "memory_peak_gb": peak}) + "\n")

    rows = [json.loads(line) for line in Path(s["train_file"]).read_text().splitlines()]
    data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(s["model"])
    model = AutoModelForCausalLM.from_pretrained(s["model"], dtype="auto")
    on_cpu = {"bf16": False, "gradient_checkpointing": False, "use_cpu": True} if s["cpu"] else {}
    config = SFTConfig(
        output_dir=str(Path(s["metrics"]).parent / "out"), num_train_epochs=1, per_device_train_batch_size=s["micro"],
        learning_rate=s["lr"], lr_scheduler_type="cosine", warmup_steps=0.03, max_length=s["seq"], seed=42,
        max_steps=s.get("max_steps") or -1, logging_steps=1, save_strategy="no", report_to=[],
        include_num_input_tokens_seen="non_padding",  # measurement only (the same counter ftrecipes logs)
        **on_cpu,  # TRL's defaults would refuse bf16 on the CPU
    )
    lora = None
    if s["rank"]:
        lora = LoraConfig(r=s["rank"], lora_alpha=2 * s["rank"], lora_dropout=0.05, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    prepare, spent = SFTTrainer._prepare_dataset, []

    def timed_prepare(self, *args, **kwargs):  # measurement only: how long TRL's preparation takes
        started = time.perf_counter()
        try:
            return prepare(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    SFTTrainer._prepare_dataset = timed_prepare
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora, callbacks=[Rows()])
    with open(s["metrics"], "a") as f:
        f.write(json.dumps({"data_prep_s": sum(spent)}) + "\n")
    trainer.train()


def baseline_command(settings: dict, folder: Path) -> list[str]:
    """The command that runs `baseline_worker` with `settings` (written to `folder/settings.json`)."""
    path = folder / "baseline-settings.json"
    path.write_text(json.dumps(settings))
    return [sys.executable, str(Path(__file__).resolve()), "--worker", str(path)]


# --- the parent: prepare once, run each configuration, poll its rows ----------------------------

def launch(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "ftrecipes.launch", *COMMON, *overrides]


def run_timed(command: list[str], metrics_file: Path, env: dict, log: Path) -> dict:
    """Starts `command`, notes when each step row of `metrics_file` appears, returns the raw record."""
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    arrivals: dict[int, float] = {}
    rows: list[dict] = []
    while True:
        # wait4 rather than proc.poll(): it reaps the child and returns its rusage (peak RSS)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        done = pid != 0
        if metrics_file.is_file():
            lines = metrics_file.read_text().splitlines()
            now = time.time()
            for line in lines[len(rows):]:
                try:
                    row = json.loads(line)
                except ValueError:
                    break  # a line still being written
                rows.append(row)
                if "loss" in row and not any(k.startswith("eval_") for k in row):
                    arrivals.setdefault(row["step"], now)
        if done:
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({proc.returncode}); see {log}")
    steps = [r for r in rows if "loss" in r and not any(k.startswith("eval_") for k in r)]
    prep = [r["data_prep_s"] for r in rows if "data_prep_s" in r]
    if not prep and "train: tokenized rows from" in log.read_text():
        prep = [0.0]  # ftrecipes reused the warm-up's tokenized rows
    return {"started": started, "arrivals": arrivals, "steps": steps,
            "peak_rss_mb": usage.ru_maxrss / 1024, "data_prep_s": sum(prep) if prep else None}


def summarise(record: dict, efficiency: float) -> dict:
    steps, arrivals = record["steps"], record["arrivals"]
    order = sorted(arrivals)
    first, last = order[0], order[-1]
    seen = {r["step"]: r.get("num_input_tokens_seen") for r in steps}
    tokens = seen[last] - seen[first]
    gaps = [arrivals[b] - arrivals[a] for a, b in zip(order, order[1:]) if b == a + 1]
    losses = [r["loss"] for r in steps]
    return {"tokens_per_s": tokens / (arrivals[last] - arrivals[first]), "step_s": statistics.median(gaps),
            "peak_rss_mb": record["peak_rss_mb"], "efficiency": efficiency,
            "final_loss": statistics.mean(losses[-10:]), "steps": last,
            "to_first_step_s": arrivals[first] - record["started"], "tokens": seen[last],
            "data_prep_s": record["data_prep_s"]}


def efficiencies(train_file: Path, model_path: str) -> dict[str, float]:
    """Estimated real/computed token ratios for padded batches of MICRO and for packing into SEQ."""
    import random

    import numpy as np
    from transformers import AutoTokenizer

    from ftrecipes.data.pack import best_fit_decreasing

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    lengths = [min(SEQ, len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)))
               for r in rows]
    rng, padded = random.Random(0), []
    for _ in range(200):
        order = lengths[:]
        rng.shuffle(order)
        batches = [order[i:i + MICRO] for i in range(0, len(order), MICRO)]
        padded.append(sum(order) / sum(max(b) * len(b) for b in batches))
    bins = best_fit_decreasing(np.asarray(lengths), SEQ)
    return {"padded": statistics.mean(padded), "packed": sum(lengths) / (len(bins) * SEQ)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--json", type=Path, help="also write the raw and median numbers here")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every configuration (default: torch's "
                        "choice, all cores); on a machine shared with other jobs, 1 keeps OpenMP workers from spinning")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (run dirs, logs)")
    parser.add_argument("--worker", metavar="SETTINGS_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        baseline_worker(args.worker)
        return 0
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent (the benchmark needs the shared alpaca demo)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="ftbench-"))
    env = {**os.environ, "FTRECIPES_CACHE": str(work / "cache"), "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    # as an installed package runs: with its bytecode cache (pip writes one for site-packages; a
    # PYTHONDONTWRITEBYTECODE=1 shell would make every run recompile ftrecipes, ~0.5 s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    prepared = work / "prepared"
    print(f"preparing the data and building the tiny base once (work folder {work}) ...", flush=True)
    subprocess.run(launch("stages=[prepare]", f"run_dir={prepared}"), cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(REPO))
    os.environ["FTRECIPES_CACHE"] = env["FTRECIPES_CACHE"]
    from ftrecipes.config.resolve import resolve
    from ftrecipes.model.load import resolve_model_path

    model_path = resolve_model_path(resolve(COMMON).recipe)  # built and cached by the prepare run
    train_file = prepared / "data" / "train.jsonl"
    eff = efficiencies(train_file, model_path)
    cold = {}  # untimed warm-up: TRL tokenizes (and packs) the rows once per configuration
    for name in [n for n in args.only if n != "baseline"]:
        run_dir = work / f"{name}-warmup"
        shutil.copytree(prepared, run_dir, ignore=shutil.ignore_patterns("metrics.jsonl"))
        command = launch("stages=[train]", f"run_dir={run_dir}", "train.max_steps=1",
                         *(FAST if name == "ftrecipes_fast" else []))
        record = run_timed(command, run_dir / "metrics.jsonl", env, work / f"{name}-warmup.log")
        cold[name] = min(record["arrivals"].values()) - record["started"]
    raw: dict[str, list[dict]] = {name: [] for name in args.only}
    arrivals: dict[str, list[dict]] = {name: [] for name in args.only}  # for --json: each step's arrival
    for repeat in range(args.repeats):
        for name in args.only:  # interleaved, so drift in the machine's load hits all alike
            run_dir = work / f"{name}-{repeat}"
            if name == "baseline":
                run_dir.mkdir()
                metrics = run_dir / "metrics.jsonl"
                command = baseline_command({"model": model_path, "train_file": str(train_file), "metrics": str(metrics),
                                            "seq": SEQ, "micro": MICRO, "lr": LR, "rank": RANK, "cpu": True}, run_dir)
            else:
                shutil.copytree(prepared, run_dir, ignore=shutil.ignore_patterns("metrics.jsonl"))
                metrics = run_dir / "metrics.jsonl"
                command = launch("stages=[train]", f"run_dir={run_dir}", *(FAST if name == "ftrecipes_fast" else []))
            record = run_timed(command, metrics, env, work / f"{name}-{repeat}.log")
            result = summarise(record, eff["packed" if name == "ftrecipes_fast" else "padded"])
            raw[name].append(result)
            arrivals[name].append({step: t - record["started"] for step, t in record["arrivals"].items()})
            print(f"  {name} #{repeat + 1}: {result['tokens_per_s']:,.0f} tok/s, step {result['step_s'] * 1000:.0f} ms, "
                  f"first step at {result['to_first_step_s']:.1f} s, loss {result['final_loss']:.3f}", flush=True)
    medians = {name: {k: (statistics.median(r[k] for r in runs) if all(r[k] is not None for r in runs) else None)
                      for k in runs[0]} for name, runs in raw.items()}
    print_table(medians, args.repeats, args.threads)
    if cold:
        print("first run over new data (the warm-up: TRL tokenizes in-process): "
              + ", ".join(f"{name} {seconds:.1f} s to step 1" for name, seconds in cold.items()))
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "median": medians, "arrivals_s": arrivals,
                                         "warmup_to_first_step_s": cold}, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def print_table(medians: dict, repeats: int, threads: int | None) -> None:
    base = medians.get("baseline", {}).get("tokens_per_s")
    print(f"\nmedians of {repeats} runs (seq {SEQ}, micro-batch {MICRO}, LoRA r{RANK}, 1 epoch, "
          f"{threads or 'default'} threads)")
    head = ("config", "tok/s", "step ms", "steps", "peak RSS MB", "efficiency", "final loss", "to step 1 s",
            "data prep in run s", "vs (a)")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, m in medians.items():
        ratio = f"{m['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"| {name} | {m['tokens_per_s']:,.0f} | {m['step_s'] * 1000:.0f} | {m['steps']:.0f} | "
              f"{m['peak_rss_mb']:,.0f} | {m['efficiency']:.0%} | {m['final_loss']:.3f} | "
              f"{m['to_first_step_s']:.1f} | {_seconds(m['data_prep_s'])} | {ratio} |")


def _seconds(value) -> str:
    return "?" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
