"""Reliability through the product CLI (real `python -m ftrecipes.launch` processes, a small tiny
model, LoRA SFT with dropout, shuffling, warmup + cosine and gradient accumulation 2):

- SIGTERM mid-step exits 6 with a committed checkpoint at that step, and the same command run
  again resumes and ends bit for bit where an uninterrupted run ends (weights and every loss);
- an inf gradient at step k exits 4 before the optimizer step, naming the step and the rank, and
  the checkpoints kept are at or before k;
- the numerics guard itself (skip mode, a batch with no supervised token) on a bare Trainer.

The test-only hooks (the signal, the inf gradient) come from tests/instrumented_launch.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftrecipes.config.resolve import resolve
from ftrecipes.data import synth_invoices
from ftrecipes.model.load import resolve_model_path
from ftrecipes.reliability import checkpoint as ck

HERE = Path(__file__).resolve().parent
SMALL = [
    "recipe=quickstart", "model.architecture.hidden_size=64", "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32", "model.architecture.intermediate_size=128", "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=40", "model.build.pretrain_batch_size=16", "logging.progress_bars=false",
    "stages=[prepare,train]", "train.micro_batch_size=4", "train.gradient_accumulation_steps=2", "train.max_steps=8",
    "train.checkpoint.interval_steps=2", "logging.log_interval=1",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The tiny base built once (in this process, threads restored), and the invoice rows."""
    root = tmp_path_factory.mktemp("reliability")
    synth_invoices.write_jsonl(synth_invoices.sft_rows(96, seed=5), root / "invoices.jsonl")
    saved, threads = os.environ.get("FTRECIPES_CACHE"), torch.get_num_threads()
    os.environ["FTRECIPES_CACHE"] = str(root / "cache")
    try:
        resolve_model_path(resolve(SMALL).recipe)
    finally:
        torch.set_num_threads(threads)
        os.environ.pop("FTRECIPES_CACHE") if saved is None else os.environ.__setitem__("FTRECIPES_CACHE", saved)
    return root


def launch(workdir: Path, run_dir: Path, *overrides: str, hooks: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (with FTR_TEST_HOOKS, through tests/instrumented_launch.py)."""
    env = {**os.environ, "FTRECIPES_CACHE": str(workdir / "cache"), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    program = ["-m", "ftrecipes.launch"]
    if hooks:
        env["FTR_TEST_HOOKS"] = json.dumps(hooks)
        program = [str(HERE / "instrumented_launch.py")]
    return subprocess.run([sys.executable, *program, *SMALL, f"data.path={workdir / 'invoices.jsonl'}",
                           f"run_dir={run_dir}", *overrides], cwd=HERE.parent, env=env, capture_output=True,
                          text=True, timeout=900)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if "loss" in row]


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def straight(workdir):
    run_dir = workdir / "straight"
    result = launch(workdir, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_sigterm_mid_step_exits_6_with_that_step_committed_and_resumes_bitwise(workdir, straight):
    run_dir = workdir / "preempted"
    result = launch(workdir, run_dir, hooks={"term_at": 3})
    assert result.returncode == 6, result.stderr[-3000:]
    assert "stopped by SIGTERM after step 3" in result.stderr and "Traceback" not in result.stderr
    root = run_dir / "checkpoints"
    newest = ck.committed_checkpoints(root)[0]
    assert newest.name == "checkpoint-3" and ck.verify(newest) == []
    assert not (run_dir / "adapter").exists()  # the final save happens only when training finishes

    again = launch(workdir, run_dir)  # the requeued job: the very same command
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr and "checkpoint-3" in again.stderr
    assert losses(run_dir) == losses(straight) and len(losses(straight)) == 8
    want, got = weights(straight), weights(run_dir)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_an_inf_gradient_at_step_k_exits_4_and_keeps_the_checkpoints_before_it(workdir):
    run_dir = workdir / "diverged"
    result = launch(workdir, run_dir, hooks={"inf_grad_at": 5})
    assert result.returncode == 4, result.stderr[-3000:]
    assert "training diverged at step 5" in result.stderr and "rank 0" in result.stderr
    assert "gradient norm was not finite" in result.stderr and "Traceback" not in result.stderr
    committed = ck.committed_checkpoints(run_dir / "checkpoints")
    assert committed and all(ck.step_of(p) <= 5 for p in committed)
    assert committed[0].name == "checkpoint-4" and ck.verify(committed[0]) == []
    assert f"The last committed checkpoint, {committed[0]}, is kept" in result.stderr
    assert not (run_dir / "adapter").exists()
    assert [step for step, _ in losses(run_dir)] == [1, 2, 3, 4]  # step 5 never completed
