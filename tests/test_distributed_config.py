"""Hardware presets, engine configs (DeepSpeed JSON, FSDP2) and the rendered launch commands."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("strategy,stage", [("zero1", 1), ("zero2", 2), ("zero3", 3), ("zero3_offload", 3)])
def test_dry_run_prints_the_deepspeed_json_it_will_use(strategy, stage):
    result = run_cli("recipe=qwen32b_qlora", "hardware=8x_h100", f"hardware.strategy={strategy}", "dry_run=true")
    assert result.code == 0, result.err
    text = result.out.split("# deepspeed.json (written to the run dir at launch)\n", 1)[1]
    config = json.loads(text[: text.index("\n}\n") + 2])
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == "auto" and config["bf16"]["enabled"] == "auto"
    if stage == 3:  # without it ZeRO-3 saves no model.safetensors
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    if strategy == "zero3_offload":
        assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
        assert config["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "torchrun --nproc_per_node 8 --standalone --log-dir" in result.out


def test_a_recipe_can_bring_its_own_deepspeed_json(tmp_path):
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 2, "marker": "ours"}}))
    result = run_cli("hardware=8x_h100", "hardware.strategy=zero2", f"hardware.deepspeed_config={own}", "dry_run=true")
    assert result.code == 0 and '"marker": "ours"' in result.out
    missing = run_cli("hardware=8x_h100", "hardware.strategy=zero2", f"hardware.deepspeed_config={tmp_path / 'no.json'}",
                      "dry_run=true")
    assert missing.code == 2 and "hardware.deepspeed_config" in missing.err and "Traceback" not in missing.err


def test_fsdp2_settings_follow_gradient_checkpointing():
    result = run_cli("hardware=8x_h100", "hardware.strategy=fsdp2", "train.gradient_checkpointing=true", "dry_run=true")
    assert result.code == 0
    block = result.out.split("# fsdp2.yaml (written to the run dir at launch)\n", 1)[1]
    assert "activation_checkpointing: true" in block and "reshard_after_forward: true" in block
    assert "offload_params: false" in block


def test_two_nodes_render_rendezvous_flags_and_an_sbatch_script():
    result = run_cli("recipe=qwen32b_qlora", "hardware=2n_8x_h100", "dry_run=true")
    assert result.code == 0
    command = ('torchrun --nproc_per_node 8 --nnodes 2 --node_rank "${NODE_RANK}" --rdzv_backend c10d '
               '--rdzv_id "${RUN_ID}" --rdzv_endpoint "${MASTER_ADDR}:29500" --rdzv_conf join_timeout=600 --log-dir ')
    assert command in result.out and "--tee 3 --local-ranks-filter 0 -m ftrecipes.worker" in result.out
    assert "NODE_RANK=1 MASTER_ADDR=${MASTER_ADDR} python -m ftrecipes.distributed.node /" in result.out
    sbatch = result.out.split("# slurm.sbatch (written to the run dir at launch)\n", 1)[1]
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --signal=USR1@300", "#SBATCH --requeue",
                 'scontrol requeue "$SLURM_JOB_ID"',
                 "NODE_RANK=$SLURM_NODEID exec python -m ftrecipes.distributed.node"):
        assert line in sbatch


def test_the_rendezvous_join_timeout_is_a_recipe_key():
    result = run_cli("recipe=qwen32b_qlora", "hardware=2n_8x_h100", "hardware.rendezvous_timeout_s=1800", "dry_run=true")
    assert result.code == 0 and "--rdzv_conf join_timeout=1800 --log-dir" in result.out
    refused = run_cli("recipe=qwen32b_qlora", "hardware=2n_8x_h100", "hardware.rendezvous_timeout_s=0", "dry_run=true")
    assert refused.code == 2 and "hardware.rendezvous_timeout_s" in refused.err and "Traceback" not in refused.err


def test_cpu_presets_have_no_engine_files():
    result = run_cli("hardware=cpu_2proc", "dry_run=true")
    assert result.code == 0
    assert "torchrun --nproc_per_node 2 --standalone --log-dir" in result.out
    assert "deepspeed.json" not in result.out and "slurm.sbatch" not in result.out
