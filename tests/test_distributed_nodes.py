"""Multi-node rendezvous and failures, for real: torchrun processes on this machine, gloo.

- Two "nodes" on localhost: the launcher runs node 0 (c10d rendezvous on 127.0.0.1) and prints the
  command for node 1, which this test starts as a second process on the same run dir.
- A rank killed mid-run (SIGKILL) ends the whole job, non-zero, with the dead rank named.
- SLURM's preemption signal, sent to every process of the job (as `--signal=USR1@N` does): the
  ranks checkpoint at the same step, the job exits 6, and the same command resumes from there.
- A rank that hangs (SIGSTOP) ends the job once `hardware.timeout_s` passes on the others'
  collective, plus torchrun's 30 s grace before it kills the stopped worker: the job never hangs
  (marked slow: about 95 s).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO
from distributed_recipe import small_recipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict, module: str = "ftrecipes.launch") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_nodes_on_localhost_run_a_recipe_to_completion(scale_root):
    root, env = scale_root
    run_dir = root / "two_nodes"
    port = free_port()
    env = {**env, "MASTER_ADDR": "127.0.0.1"}
    started = time.time()
    node0 = start([*small_recipe(root), f"run_dir={run_dir}", "hardware=cpu_2proc", "hardware.nodes=2",
                   "hardware.cpu_processes=1", f"hardware.master_port={port}", "train.micro_batch_size=4"], env)
    wait_for(lambda: (run_dir / "recipe.resolved.yaml").is_file() or node0.poll() is not None, 120, "the run dir")
    node1 = start([str(run_dir)], {**env, "NODE_RANK": "1"}, module="ftrecipes.distributed.node")
    code1, out1, err1 = finish(node1)
    code0, out0, err0 = finish(node0)
    print(f"\ntwo nodes: {time.time() - started:.1f} s")
    assert code0 == 0, out0[-3000:] + err0[-3000:]
    assert code1 == 0, out1[-3000:] + err1[-3000:]
    assert f"NODE_RANK=1 MASTER_ADDR=127.0.0.1 python -m ftrecipes.distributed.node {run_dir}" in out0
    assert "--nnodes 2" in out0 and "--rdzv_backend c10d" in out0
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6
    assert (run_dir / "model" / "model.safetensors").is_file()
    for rank in (0, 1):
        assert json.loads((run_dir / "logs" / f"exit-rank{rank}.json").read_text())["code"] == 0


def worker_of_rank(parent: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(parent.pid).children(recursive=True):
        try:
            if "ftrecipes.worker" in " ".join(child.cmdline()) and child.environ().get("RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    return None


def trained_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"loss"' in line)


def long_run(root: Path, env: dict, name: str, timeout_s: int) -> tuple[subprocess.Popen, Path]:
    run_dir = root / name
    proc = start([*small_recipe(root), f"run_dir={run_dir}", "hardware=cpu_2proc", "train.max_steps=5000",
                  "train.micro_batch_size=4", f"hardware.timeout_s={timeout_s}"], env)
    wait_for(lambda: trained_steps(run_dir) >= 2 or proc.poll() is not None, 300, "two logged steps")
    assert proc.poll() is None, finish(proc)[2][-3000:]
    return proc, run_dir


@pytest.mark.parametrize("how", ["kill", pytest.param("hang", marks=pytest.mark.slow)])
def test_a_dead_or_stuck_rank_ends_the_job_with_the_rank_named(scale_root, how):
    root, env = scale_root
    timeout_s = 20
    proc, run_dir = long_run(root, env, f"rank_{how}", timeout_s)
    victim = worker_of_rank(proc, 1)
    assert victim is not None
    hit = time.time()
    victim.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    try:
        code, out, err = finish(proc, timeout=timeout_s + 90)
    finally:
        if how == "hang" and victim.is_running():
            victim.kill()
    took = time.time() - hit
    print(f"\n{how}: the job ended {took:.1f} s after rank 1 was stopped (exit {code})")
    assert code == 7, err[-3000:]
    assert "rank 1 died without reporting" in err, err[-3000:]
    # a kill ends the job at once (torchrun sees the dead worker); a hang after the others' collective
    # times out (timeout_s), plus torchrun's 30 s grace before it SIGKILLs the stopped worker
    assert took < (15 if how == "kill" else timeout_s + 30 + 20), took
    if how == "hang":
        report = json.loads((run_dir / "logs" / "exit-rank0.json").read_text())
        assert report["code"] == 7 and report["error"] == "DistributedTimeout", report


@pytest.mark.parametrize("strategy", ["ddp", "zero3"])
def test_the_schedulers_signal_to_every_process_checkpoints_all_ranks_and_resumes(scale_root, strategy):
    from ftrecipes.reliability import checkpoint as ck

    if strategy != "ddp":
        pytest.importorskip("deepspeed")
    root, env = scale_root
    run_dir = root / f"preempted_{strategy}"
    args = [*small_recipe(root), f"run_dir={run_dir}", "hardware=cpu_2proc", f"hardware.strategy={strategy}",
            "train.max_steps=40", "train.micro_batch_size=4", "train.checkpoint.interval_steps=1000"]
    proc = start(args, env)
    wait_for(lambda: trained_steps(run_dir) >= 2 or proc.poll() is not None, 300, "two logged steps")
    assert proc.poll() is None, finish(proc)[2][-3000:]
    # SLURM signals every process of the job step (its cgroup): the launcher, torchrun and both
    # workers (torchrun puts each worker in its own session, so a process-group signal would miss them)
    for process in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        process.send_signal(signal.SIGUSR1)
    code, out, err = finish(proc)
    assert code == 6, err[-3000:]
    assert "stopped by SIGUSR1 after step" in err and "Traceback" not in err.split("ftrecipes: the run failed")[-1]
    reports = [json.loads((run_dir / "logs" / f"exit-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["code"] for r in reports] == [6, 6], reports
    (newest,) = ck.committed_checkpoints(run_dir / "checkpoints")[:1]
    stopped_at = int(newest.name.split("-")[1])
    assert ck.verify(newest) == [] and 2 <= stopped_at < 40 and stopped_at == trained_steps(run_dir)

    again = start(args, env)
    code, out, err = finish(again)
    assert code == 0, err[-3000:]
    assert f"checkpoint-{stopped_at}" in out + err and "resuming from" in out + err
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 40 and (run_dir / "model" / "model.safetensors").is_file()
