"""DeepSpeed's checkpoint layout in the commit protocol, and loading its shards without pickle code
(`ftrecipes.reliability.deepspeed_state`). Real DeepSpeed classes and torch's safe unpickler; the
end-to-end save and resume under ZeRO-2/3 is in tests/test_distributed_train.py."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from ftrecipes.reliability import checkpoint as ck
from ftrecipes.reliability import deepspeed_state
from ftrecipes.reliability.resume import recipe_fingerprint, resume_diff

deepspeed = pytest.importorskip("deepspeed")


def deepspeed_folder(root, world_size: int, ranks_written: int):
    """What HF + DeepSpeed write for a ZeRO-2 checkpoint (file contents are small stand-ins)."""
    folder = root / "checkpoint-4"
    (folder / "global_step4").mkdir(parents=True)
    (folder / "latest").write_text("global_step4")
    torch.save({"module": {"w": torch.ones(2)}}, folder / "global_step4" / "mp_rank_00_model_states.pt")
    for rank in range(ranks_written):
        torch.save({"optimizer_state_dict": {"exp_avg": torch.zeros(2)}},
                   folder / "global_step4" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    for name in ["model.safetensors", "scheduler.pt", "trainer_state.json",
                 *ck.rng_files(world_size)]:
        (folder / name).write_bytes(b"x")
    return folder


class Payload:
    """Unpickling it runs `touch witness`: what a tampered shard could carry."""

    def __init__(self, witness):
        self.witness = witness

    def __reduce__(self):
        return os.system, (f"touch {self.witness}",)


def test_a_deepspeed_checkpoint_needs_every_ranks_shard_and_no_optimizer_pt(tmp_path):
    complete = deepspeed_folder(tmp_path / "a", world_size=2, ranks_written=2)
    assert ck.missing_files(complete, world_size=2) == []
    partial = deepspeed_folder(tmp_path / "b", world_size=2, ranks_written=1)
    problems = ck.missing_files(partial, world_size=2)
    assert problems == ["global_step4/zero_pp_rank_1_mp_rank_00_optim_states.pt is missing (rank 1's optimizer shard)"]
    with pytest.raises(ck.CheckpointError, match="rank 1's optimizer shard"):
        ck.commit(partial, tmp_path / "b" / "final" / "checkpoint-4", 4, {"seed": 1}, world_size=2)
    (complete / "latest").write_text("global_step9")
    assert ck.missing_files(complete, world_size=2) == ["latest names 'global_step9', but the folder global_step9/ "
                                                        "is missing or empty"]


def test_shards_with_deepspeeds_own_classes_load_and_code_is_refused(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    shard = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"zero_stage": ZeroStageEnum.gradients, "loss_scaler": LossScaler(1.0), "exp_avg": torch.ones(3)}, shard)
    loaded = deepspeed_state.load_shard(str(shard))
    assert loaded["zero_stage"] == ZeroStageEnum.gradients and torch.equal(loaded["exp_avg"], torch.ones(3))

    witness, evil = tmp_path / "executed", tmp_path / "evil_optim_states.pt"
    torch.save({"state": Payload(witness)}, evil)
    with pytest.raises(ck.CheckpointError, match="holds posix.system|holds os.system|does not unpickle"):
        deepspeed_state.load_shard(str(evil))
    assert not witness.exists()


def test_safe_loads_routes_deepspeeds_engine_loader_and_restores_it(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    original = TorchCheckpointEngine.load
    witness, evil = tmp_path / "executed", tmp_path / "shard.pt"
    torch.save([Payload(witness)], evil)
    with deepspeed_state.safe_loads():
        with pytest.raises(ck.CheckpointError):
            TorchCheckpointEngine().load(str(evil))
    assert TorchCheckpointEngine.load is original and not witness.exists()


@pytest.mark.parametrize("state", ["hidden", "absent"])
def test_safe_loads_leaves_a_run_without_deepspeed_alone(monkeypatch, state):
    """train.lean_imports hides DeepSpeed as None in sys.modules when no ZeRO strategy runs."""
    for name in [n for n in sys.modules if n == "deepspeed" or n.startswith("deepspeed.")]:
        monkeypatch.delitem(sys.modules, name)
    if state == "hidden":
        monkeypatch.setitem(sys.modules, "deepspeed", None)
    with deepspeed_state.safe_loads():
        pass
    assert sys.modules.get("deepspeed") is None


def test_a_zero_checkpoint_resumes_only_under_the_same_strategy():
    def recipe(strategy):
        return {"hardware": {"strategy": strategy, "accelerator": "cpu", "num_processes": 2, "nodes": 1},
                "seed": 1, "method": {"name": "full"}}

    zero2, zero3, ddp = (recipe_fingerprint(recipe(s)) for s in ("zero2", "zero3", "ddp"))
    assert zero2["hardware.strategy"] == "zero2" and "hardware.strategy" not in ddp
    assert any("hardware.strategy" in line for line in resume_diff(zero2, zero3))
    assert any("hardware.strategy" in line for line in resume_diff(zero2, ddp))
