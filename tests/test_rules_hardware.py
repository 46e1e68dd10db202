"""Validation rules for hardware combinations: each refusal exits 2 and names both keys."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


def refused(*overrides: str) -> str:
    result = run_cli(*overrides, "dry_run=true")
    assert result.code == 2, result.out[-2000:] + result.err
    assert "Traceback" not in result.err
    return result.err


def test_qlora_shards_under_zero3_with_its_storage_dtype_and_prints_the_deepspeed_json():
    result = run_cli("recipe=qwen32b_qlora", "hardware=8x_h100", "dry_run=true")
    assert result.code == 0, result.err
    assert "# deepspeed.json (written to the run dir at launch)" in result.out
    assert "torchrun --nproc_per_node 8 --standalone" in result.out


@pytest.mark.parametrize("overrides,keys", [
    (["hardware.strategy=fsdp2"], ["method.name=qlora", "hardware.strategy=fsdp2"]),
    (["method.quant_type=int8"], ["method.quant_type=int8", "hardware.strategy=zero3"]),
    (["model.dtype=float32"], ["method.compute_dtype=bfloat16", "model.dtype=float32", "bnb_4bit_quant_storage"]),
])
def test_qlora_with_sharding_needs_its_quantized_storage(overrides, keys):
    err = refused("recipe=qwen32b_qlora", "hardware=8x_h100", *overrides)
    for key in keys:
        assert key in err, key


def test_one_engine_per_run(tmp_path):
    own = tmp_path / "fsdp.yaml"
    own.write_text("offload_params: true\n")
    err = refused("hardware=8x_h100", "hardware.strategy=zero2", f"hardware.fsdp_config={own}")
    assert "hardware.fsdp_config" in err and "hardware.strategy=zero2" in err
    ds = tmp_path / "ds.json"
    ds.write_text("{}")
    err = refused("hardware=8x_h100", "hardware.strategy=fsdp2", f"hardware.deepspeed_config={ds}")
    assert "hardware.deepspeed_config" in err and "hardware.strategy=fsdp2" in err
    err = refused("hardware=8x_h100", "hardware.strategy=fsdp2", "hardware.mixed_precision=fp16")
    assert "hardware.mixed_precision=fp16" in err and "hardware.strategy=fsdp2" in err


def test_a_deepspeed_file_must_agree_with_the_batch_and_world_size(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_batch_size": 32, "train_micro_batch_size_per_gpu": "auto",
                              "zero_optimization": {"stage": 3}}))
    err = refused("hardware=8x_h100", "hardware.strategy=zero3", f"hardware.deepspeed_config={ds}",
                  "train.micro_batch_size=2", "train.gradient_accumulation_steps=1")
    assert "train_batch_size=32" in err and "world size 8 gives 16" in err and "train.micro_batch_size=2" in err
    assert "stage3_gather_16bit_weights_on_model_save" in err  # ZeRO-3 would save no weights


def test_offload_needs_the_host_ram_of_the_preset():
    ok = run_cli("model=llama3_1_70b", "method=full", "hardware=8x_a100_80g", "hardware.strategy=zero3_offload",
                 "dry_run=true")
    assert ok.code == 0, ok.err
    err = refused("model=llama3_1_70b", "method=full", "hardware=8x_a100_80g", "hardware.strategy=zero3_offload",
                  "hardware.host_memory_gb=512")
    assert "hardware.strategy=zero3_offload" in err and "hardware.host_memory_gb=512" in err


def test_bf16_needs_hardware_with_bf16():
    err = refused("hardware=1x_a100_80g", "hardware.bf16=false", "model.dtype=float16")
    assert "hardware.mixed_precision=bf16 needs bf16" in err and "hardware.bf16 is false" in err
    assert run_cli("hardware=1x_a100_80g", "hardware.bf16=false", "hardware.mixed_precision=fp16",
                   "model.dtype=float16", "dry_run=true").code == 0
