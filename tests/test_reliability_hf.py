"""The checkpoint protocol inside a real Hugging Face Trainer (a tiny random Llama on CPU): HF saves
into the staging folder, the callback commits, retention keeps `train.checkpoint.keep`, and a
re-run after a SIGKILL resumes from the newest committed checkpoint, ending with the same weights,
bit for bit, as a run that was never interrupted. A kill in the middle of a save leaves an
uncommitted folder that never counts. SIGTERM saves at the current step and exits 6."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ftrecipes.config.resolve import resolve  # noqa: E402
from ftrecipes.reliability import checkpoint as ck  # noqa: E402
from ftrecipes.reliability import hf  # noqa: E402

STEPS = 6


class TermAt(transformers.TrainerCallback):
    """The scheduler's SIGTERM arriving during step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class KillAt(transformers.TrainerCallback):
    """SIGKILLs this process after step `step` ends, or inside the save of `step`, before the
    commit callback (which runs after this one) could commit it."""

    def __init__(self, step: int, during_save: bool):
        self.step, self.during_save = step, during_save

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and not self.during_save:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step and self.during_save:
            os.kill(os.getpid(), signal.SIGKILL)


class StallAt(transformers.TrainerCallback):
    """Step `step` never ends (a collective stuck, a step far longer than the grace period)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            time.sleep(120)


def train(run_dir: Path, *, resume: bool, kill: tuple[int, bool] | None = None, term: int | None = None,
          stall: int | None = None, grace_s: float | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    recipe = resolve(["recipe=quickstart", "train.checkpoint.interval_steps=2", "train.checkpoint.keep=2"]).recipe
    root = run_dir / "checkpoints"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))
    generator = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 16), generator=generator).tolist()]
    args = TrainingArguments(**hf.checkpoint_arguments(recipe, root), max_steps=STEPS, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], use_cpu=True, seed=0, hub_token="hf_SECRETsecret",
                             disable_tqdm=True)
    assert hf.scrub_secrets(args) == ["hub_token"]
    preemption = hf.preemption_callback(grace_s=grace_s)
    callbacks = ([KillAt(*kill)] if kill else []) + ([TermAt(term)] if term else []) + ([StallAt(stall)] if stall else [])
    callbacks += [preemption, hf.commit_callback(recipe, run_dir, root)]
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks)
    start = hf.resume_checkpoint(recipe, run_dir, root) if resume else None
    trainer.train(resume_from_checkpoint=start)
    hf.raise_if_preempted(preemption, trainer.state)
    return start, {k: v.detach().clone() for k, v in model.state_dict().items()}


def killed_run(run_dir: Path, step: int, during_save: bool) -> None:
    code = subprocess.run([sys.executable, __file__, "kill", str(run_dir), str(step), str(int(during_save))],
                          cwd=Path(__file__).parent, timeout=600).returncode
    assert code == -signal.SIGKILL, code


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    _, weights = train(run, resume=False)
    return run, weights


def test_commits_retention_and_no_secret_in_pickles(straight):
    root = straight[0] / "checkpoints"
    assert [p.name for p in ck.committed_checkpoints(root)] == ["checkpoint-6", "checkpoint-4"]  # keep=2
    assert all(ck.verify(p) == [] for p in ck.committed_checkpoints(root))
    assert not ck.hf_staging_dir(root).exists()
    assert b"hf_SECRETsecret" not in (root / "checkpoint-6" / "training_args.bin").read_bytes()


@pytest.mark.parametrize("step,during_save,resumes_from", [(5, False, "checkpoint-4"), (4, True, "checkpoint-2")])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, straight, step, during_save, resumes_from):
    killed_run(tmp_path, step, during_save)
    root = tmp_path / "checkpoints"
    if during_save:  # HF had written checkpoint-4 to the staging folder, but it never committed
        assert (ck.hf_staging_dir(root) / "checkpoint-4" / "optimizer.pt").is_file()
    assert ck.committed_checkpoints(root)[0].name == resumes_from
    start, resumed = train(tmp_path, resume=True)
    assert Path(start).name == resumes_from
    for name, tensor in straight[1].items():
        assert torch.equal(tensor, resumed[name]), name


def test_sigterm_saves_at_the_current_step_exits_6_and_resumes_bitwise(tmp_path, straight):
    proc = subprocess.run([sys.executable, __file__, "term", str(tmp_path), "3"], cwd=Path(__file__).parent,
                          timeout=600, capture_output=True, text=True)
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert "stopped by SIGTERM after step 3" in proc.stderr and "requeue" in proc.stderr
    assert "Traceback" not in proc.stderr
    root = tmp_path / "checkpoints"
    assert [p.name for p in ck.committed_checkpoints(root)] == ["checkpoint-3", "checkpoint-2"]
    start, resumed = train(tmp_path, resume=True)
    assert Path(start).name == "checkpoint-3"
    assert all(torch.equal(t, resumed[n]) for n, t in straight[1].items())


def test_past_the_grace_period_a_stuck_step_still_exits_6_and_resumes_from_the_last_commit(tmp_path, straight):
    started = time.time()
    proc = subprocess.run([sys.executable, __file__, "stall", str(tmp_path), "3"], cwd=Path(__file__).parent,
                          timeout=600, capture_output=True, text=True)
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert time.time() - started < 100  # not the 120 s stall: the 1 s grace period ended it
    assert "did not end within train.checkpoint.grace_s=1 s" in proc.stderr
    root = tmp_path / "checkpoints"
    assert [p.name for p in ck.committed_checkpoints(root)] == ["checkpoint-2"]
    start, resumed = train(tmp_path, resume=True)
    assert Path(start).name == "checkpoint-2"
    assert all(torch.equal(t, resumed[n]) for n, t in straight[1].items())


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, straight, capsys):
    subprocess.run(["cp", "-a", str(straight[0] / "checkpoints"), str(tmp_path / "checkpoints")], check=True)
    optimizer = tmp_path / "checkpoints" / "checkpoint-6" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optimizer.write_bytes(bytes(data))
    start, resumed = train(tmp_path, resume=True)
    assert Path(start).name == "checkpoint-4"
    err = capsys.readouterr().err
    assert "optimizer.pt does not match its sha256" in err and "older checkpoint" in err
    assert ck.verify(tmp_path / "checkpoints" / "checkpoint-6") == []  # step 6 saved again, replacing it
    assert all(torch.equal(t, resumed[n]) for n, t in straight[1].items())


if __name__ == "__main__":  # the runs that get killed (kill RUN_DIR STEP DURING_SAVE) or preempted (term RUN_DIR STEP)
    from ftrecipes.errors import report_errors

    if sys.argv[1] == "kill":
        train(Path(sys.argv[2]), resume=True, kill=(int(sys.argv[3]), sys.argv[4] == "1"))
    else:
        def preempted() -> None:
            step = int(sys.argv[3])
            if sys.argv[1] == "stall":  # SIGTERM during step 3, which then never ends; grace 1 s
                train(Path(sys.argv[2]), resume=True, term=step, stall=step, grace_s=1)
            else:
                train(Path(sys.argv[2]), resume=True, term=step)

        sys.exit(report_errors(preempted))
