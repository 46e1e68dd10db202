"""Two real processes on the CPU (gloo), launched through the product CLI with hardware=cpu_2proc.

Each strategy trains the same small model on the same 80 invoice rows for 6 steps with a global
batch of 8 (4 per rank), then the gathered final weights (`model/model.safetensors`, written by
rank 0 only) are reloaded in this one process and compared with a single-process run of the same
global batch. DDP's loss curve must match the single process within 1e-4; FSDP2 must really shard
(each rank logs its DTensor shards); ZeRO-2 and ZeRO-3 run through DeepSpeed over gloo.
Durations are printed; on two cores each run takes about 20-35 s, plus DeepSpeed's one-time op
compile (cached in the session's TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from conftest import run_module
from distributed_recipe import small_recipe

GLOBAL_BATCH = 8


@pytest.fixture(scope="module")
def scale(scale_root):
    root, env = scale_root
    return root, small_recipe(root), env


def launch(scale, name: str, *overrides: str) -> Path:
    root, base, env = scale
    run_dir = root / name
    started = time.time()
    result = run_module("ftrecipes.launch", *base, f"run_dir={run_dir}", *overrides, env=env, timeout=900)
    print(f"\n{name}: {time.time() - started:.1f} s")
    assert result.code == 0, result.out[-4000:] + result.err[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def single(scale) -> Path:
    """One process, the whole global batch per step: the reference."""
    return launch(scale, "single", "hardware=cpu", f"train.micro_batch_size={GLOBAL_BATCH}")


def two_processes(scale, strategy: str, *extra: str, name: str | None = None) -> Path:
    return launch(scale, name or strategy, "hardware=cpu_2proc", f"hardware.strategy={strategy}",
                  f"train.micro_batch_size={GLOBAL_BATCH // 2}", *extra)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The saved model, reloaded in this process the way users load it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model", dtype=torch.float32)
    return {k: v.detach() for k, v in model.state_dict().items()}


def check_run(run_dir: Path, single: Path) -> None:
    curve = losses(run_dir)
    steps = [s for s, _ in curve]
    assert steps == sorted(set(steps)) and steps[-1] == 6, f"rank 0 alone writes metrics.jsonl: {steps}"
    assert curve[-1][1] < curve[0][1], curve
    for rank in (0, 1):
        report = json.loads((run_dir / "logs" / f"exit-rank{rank}.json").read_text())
        assert report["code"] == 0, report
    mine, reference = weights(run_dir), weights(single)
    assert mine.keys() == reference.keys()
    worst = max((mine[k] - reference[k]).abs().max().item() for k in mine)
    assert worst < 1e-4, f"weights differ from the single-process run by {worst}"


def test_ddp_matches_the_single_process_loss_curve(scale, single):
    run_dir = two_processes(scale, "ddp")
    ddp, one = losses(run_dir), losses(single)
    for (step, a), (_, b) in list(zip(ddp, one))[:4]:
        assert abs(a - b) < 1e-4, f"step {step}: DDP {a} vs one process {b}"
    check_run(run_dir, single)


def test_fsdp2_really_shards_and_gathers_a_full_model(scale, single):
    run_dir = two_processes(scale, "fsdp2")
    shard_lines = {}
    for log in (run_dir / "logs" / "torchrun").glob("*/attempt_0/*/stdout.log"):
        found = re.search(r"fsdp2: rank (\d) of 2 holds ([\d,]+) of ([\d,]+) parameter values; (\d+) of (\d+) "
                          r"parameters are DTensor shards, e.g. (\S+) \((\d+), (\d+)\) -> \((\d+), (\d+)\)",
                          log.read_text())
        assert found, f"no shard line in {log}"
        shard_lines[int(found.group(1))] = found
    assert sorted(shard_lines) == [0, 1]
    for found in shard_lines.values():
        local, total = int(found.group(2).replace(",", "")), int(found.group(3).replace(",", ""))
        assert local <= total // 2 + 1024, "each rank holds about half of the parameters"
        assert found.group(4) == found.group(5), "every parameter is a DTensor"
        rows, cols, local_rows, local_cols = (int(found.group(i)) for i in range(7, 11))
        assert (local_rows, local_cols) == (rows // 2, cols), "sharded along the first dimension"
    check_run(run_dir, single)


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_deepspeed_zero_trains_and_saves_full_weights(scale, single, strategy):
    pytest.importorskip("deepspeed")
    # rank 0 evaluates alone after ZeRO-3 training: transformers' global ZeRO-3 flag must be gone
    evaluate = (["stages=[prepare,train,evaluate]", "evaluate.max_samples=4", "evaluate.max_new_tokens=8",
                 "evaluate.compare_base=false", "evaluate.review.enabled=false"] if strategy == "zero3" else [])
    run_dir = two_processes(scale, strategy, *evaluate)
    config = json.loads((run_dir / "deepspeed.json").read_text())
    assert config["zero_optimization"]["stage"] == int(strategy[-1])
    check_run(run_dir, single)
    if evaluate:
        assert json.loads((run_dir / "eval" / "summary.json").read_text())["tuned"]["n_samples"] == 4


@pytest.mark.slow
def test_qlora_under_zero3_trains_its_adapter(scale):
    """4-bit weights stored in the compute dtype (bnb_4bit_quant_storage), sharded with the rest."""
    pytest.importorskip("deepspeed")
    pytest.importorskip("bitsandbytes")
    run_dir = two_processes(scale, "zero3", "method=qlora", "method.compute_dtype=float32", name="qlora_zero3")
    curve = losses(run_dir)
    assert curve[-1][1] < curve[0][1], curve
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    log = next((run_dir / "logs" / "torchrun").glob("*/attempt_0/0/stdout.log")).read_text()
    assert "linear layers of the base are 4-bit nf4" in log


def rank0_logs(run_dir: Path) -> str:
    """Everything rank 0 printed, over every launch into `run_dir` (stdout and stderr)."""
    return "\n".join(p.read_text() for p in (run_dir / "logs" / "torchrun").glob("*/attempt_*/0/*.log"))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    name = "adapter/adapter_model.safetensors" if (run_dir / "adapter").is_dir() else "model/model.safetensors"
    return load_file(run_dir / name)


@pytest.mark.parametrize("strategy, method", [("zero2", "full"), ("zero3", "lora")])
def test_deepspeed_checkpoints_commit_every_ranks_shards_and_resume_bitwise(scale, strategy, method):
    """Periodic checkpoints under ZeRO hold DeepSpeed's per-rank shards. A crash after checkpoint 4
    (checkpoint 6 and the outputs gone) resumes from 4 to the same losses and weights; a crash
    between the last checkpoint and the final save ends from checkpoint 6 without training."""
    pytest.importorskip("deepspeed")
    from ftrecipes.reliability import checkpoint as ck

    name = f"{strategy}_{method}_resume"
    args = [f"method={method}", "train.checkpoint.interval_steps=2"]
    run_dir = two_processes(scale, strategy, *args, name=name)
    first_losses, first_weights = losses(run_dir), final_weights(run_dir)
    assert [s for s, _ in first_losses] == [1, 2, 3, 4, 5, 6]
    committed = ck.committed_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in committed] == ["checkpoint-6", "checkpoint-4"]
    newest = committed[0]
    assert ck.verify(newest) == [] and not (newest / "optimizer.pt").exists()
    assert (newest / "latest").read_text().strip() == "global_step6"
    listed = json.loads((newest / "manifest.json").read_text())["files"]
    for rank in (0, 1):  # each rank's optimizer shard is committed and hashed in the manifest
        assert f"global_step6/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in listed

    output = run_dir / ("adapter" if method == "lora" else "model")
    shutil.rmtree(newest)
    shutil.rmtree(output)
    resumed = two_processes(scale, strategy, *args, name=name)
    log = rank0_logs(resumed)
    assert "resuming from" in log and "checkpoint-4 (step 4)" in log
    assert losses(resumed) == first_losses
    again = final_weights(resumed)
    assert again.keys() == first_weights.keys() and all(torch.equal(again[k], first_weights[k]) for k in again)

    shutil.rmtree(output)
    finished = two_processes(scale, strategy, *args, name=name)
    log = rank0_logs(finished)
    assert "checkpoint-6 is already at train.max_steps=6; nothing left to train" in log
    once_more = final_weights(finished)
    assert all(torch.equal(once_more[k], first_weights[k]) for k in first_weights)
