"""Bitwise resume under SIGKILL at random moments, through the product CLI (slow: about 25 processes).

A small tiny-model LoRA SFT run with dropout, shuffling, warmup + cosine, gradient accumulation 2
and an epoch boundary is SIGKILLed at least 20 times: after a random step plus a random delay,
or the moment HF's staging folder appears (inside a save, before the commit). After each kill the
same command is started again and auto-resumes. At the end:

- the final weights are `torch.equal` to an uninterrupted run's, and so is every logged loss;
- every process saw, for each step it ran, exactly the sample ids the uninterrupted run saw, and
  each resumed process started right after its checkpoint's step: the ids before and after each
  kill form the uninterrupted sequence;
- no kill left a checkpoint that counts but does not verify.

Marked slow (about 5.5 min on 2 cores): in the full run and CI, left out by `-m "not slow"`; alone:
`scripts/test.sh -m slow tests/test_reliability_kills.py`. Seed the kill times with
FTR_KILL_SEED (printed) to replay a failure.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ftrecipes.reliability import checkpoint as ck
from test_reliability_product import SMALL, launch, losses, weights, workdir  # noqa: F401 - fixture

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
KILLS = 20
# a checkpoint every step, so that every kill after a step lets the next process move on
RUN = ["train.micro_batch_size=2", "train.max_steps=60", "train.epochs=4", "train.checkpoint.interval_steps=1",
       "stages=[train]"]


def start(workdir: Path, run_dir: Path, ids: Path) -> subprocess.Popen:
    env = {**os.environ, "FTRECIPES_CACHE": str(workdir / "cache"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "FTR_TEST_HOOKS": json.dumps({"record_ids": str(ids)})}
    args = [*SMALL, f"data.path={workdir / 'invoices.jsonl'}", f"run_dir={run_dir}", *RUN]
    return subprocess.Popen([sys.executable, str(HERE / "instrumented_launch.py"), *args], cwd=HERE.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def records(ids: Path) -> list[dict]:
    if not ids.is_file():
        return []
    out = []
    for line in ids.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # the line a kill tore
            pass
    return out


def wait_and_kill(proc: subprocess.Popen, run_dir: Path, ids: Path, rng: random.Random, in_save: bool) -> str:
    """SIGKILLs `proc` inside a save, or after a random step of its own plus a random delay;
    returns what happened ('finished' when it ended first)."""
    staging = ck.hf_staging_dir(run_dir / "checkpoints")
    started = time.time()  # a staged folder from before (a killed save) is not this process's save
    resumed = newest_step(run_dir)
    target = resumed + rng.randint(2, 4)
    while proc.poll() is None:
        if in_save:
            if staged_since(staging, started):
                time.sleep(rng.uniform(0, 0.05))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return "save"
            time.sleep(0.002)
            continue
        if any(r["pid"] == proc.pid and r["step"] >= target for r in records(ids)):
            time.sleep(rng.uniform(0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "step"
        time.sleep(0.02)
    return "finished"


def staged_since(staging: Path, started: float) -> bool:
    """Whether a save of this process has begun (a `checkpoint-*` folder in HF's staging folder)."""
    try:
        return any(created(p) >= started for p in staging.glob("checkpoint-*"))
    except FileNotFoundError:  # the run clears the staging folder when it starts and after commits
        return False


def created(path: Path) -> float:
    try:
        return path.stat().st_ctime
    except FileNotFoundError:  # committed (moved) or cleared meanwhile
        return 0.0


def newest_step(run_dir: Path) -> int:
    found = ck.committed_checkpoints(run_dir / "checkpoints")
    return ck.step_of(found[0]) if found else 0


def by_step(rows: list[dict]) -> dict[int, list]:
    out: dict[int, list] = {}
    for row in rows:
        out.setdefault(row["step"], []).append(row["ids"])
    return out


def test_twenty_sigkills_at_random_moments_resume_bitwise(workdir, tmp_path):  # noqa: F811
    seed = int(os.environ.get("FTR_KILL_SEED", random.randrange(1 << 30)))
    print(f"\nFTR_KILL_SEED={seed}")
    rng = random.Random(seed)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    prepared = launch(workdir, straight, "stages=[prepare]")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    shutil.copytree(straight, killed)
    reference = tmp_path / "straight.ids"
    proc = start(workdir, straight, reference)
    assert proc.wait() == 0, proc.stderr.read()[-3000:]
    want = by_step(records(reference))

    ids, kills, in_save, starts = tmp_path / "killed.ids", [], 0, []
    while len(kills) < KILLS:
        starts.append(newest_step(killed))
        proc = start(workdir, killed, ids)
        outcome = wait_and_kill(proc, killed, ids, rng, in_save=len(kills) % 3 == 2)
        if outcome == "finished":
            pytest.fail(f"the run finished after {len(kills)} kills; raise train.max_steps")
        staged = list(ck.hf_staging_dir(killed / "checkpoints").glob("checkpoint-*"))
        in_save += any(not (killed / "checkpoints" / p.name / ck.MANIFEST).is_file() for p in staged)
        kills.append((proc.pid, outcome, newest_step(killed)))
        for folder in ck.committed_checkpoints(killed / "checkpoints"):
            assert ck.verify(folder) == [], (folder, ck.verify(folder))
    starts.append(newest_step(killed))
    proc = start(workdir, killed, ids)
    assert proc.wait() == 0, proc.stderr.read()[-3000:]
    print(f"{len(kills)} kills ({in_save} inside a save): {kills}")

    assert in_save >= 1
    got = records(ids)
    pids = list(dict.fromkeys(r["pid"] for r in got))
    for pid in pids:  # every step a process ran saw the uninterrupted run's samples, in its order
        mine = by_step([r for r in got if r["pid"] == pid])
        assert all(mine[step] == want[step][:len(mine[step])] for step in mine), pid
    firsts = [min(r["step"] for r in got if r["pid"] == pid) for pid in pids]
    # each process that trained started right after the checkpoint it resumed from
    assert set(firsts) <= {s + 1 for s in starts}
    sequence = []  # what each process contributed up to the next one's resume point, then the last one
    resume_points = [f - 1 for f in firsts[1:]] + [max(want)]
    for pid, until in zip(pids, resume_points):
        sequence += [r["ids"] for r in got if r["pid"] == pid and r["step"] <= until]
    assert sequence == [r["ids"] for r in records(reference)]

    assert losses(killed) == losses(straight)
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
