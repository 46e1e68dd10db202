"""The speed keys (docs/performance.md): refusals exit 2 naming the key and the reason, each key
reaches TrainingArguments, and every CPU-available choice trains to the baseline's loss.

The training runs are real (tiny model, a few steps on the quickstart rows, no mocks); the
baseline is `attn_implementation=sdpa`, `optimizer=adamw_torch`, no checkpointing, no compile.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SMALL_MODEL, private_model_cache, run_cli
from ftrecipes.config.resolve import resolve

SMALL = [*SMALL_MODEL, "logging.progress_bars=false"]


def refused(*overrides: str) -> str:
    result = run_cli(*overrides, "dry_run=true")
    assert result.code == 2, result.out[-2000:] + result.err
    assert "Traceback" not in result.err
    return result.err


@pytest.mark.parametrize("overrides,names", [
    (["model.attn_implementation=flash_attention_2"],
     ["model.attn_implementation=flash_attention_2", "hardware.accelerator=cpu", "no CPU kernel", "sdpa"]),
    (["model.attn_implementation=flash_attention_3"],
     ["model.attn_implementation=flash_attention_3", "hardware.accelerator=cpu"]),
    (["train.tf32=true"], ["train.tf32=true", "hardware.accelerator=cpu"]),
    (["train.optimizer=paged_adamw_8bit"], ["train.optimizer=paged_adamw_8bit", "hardware.accelerator=cpu"]),
    (["train.gradient_checkpointing=offload"],
     ["train.gradient_checkpointing=offload", "hardware.accelerator=cpu"]),
    (["train.liger_kernel=true"], ["train.liger_kernel=true", "hardware.accelerator=cpu", "Triton"]),
])
def test_a_choice_the_cpu_cannot_run_is_refused_naming_both_keys(overrides, names):
    err = refused(*overrides)
    for name in names:
        assert name in err, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_flash_attention_on_a_gpu_preset_names_the_missing_package_or_device():
    err = refused("hardware=1x_h100", "model.attn_implementation=flash_attention_2")
    from ftrecipes.config.rules_speed import installed

    if installed("flash_attn"):
        # dry_run may plan for another machine, so only a real launch checks the device
        assert run_cli("hardware=1x_h100", "model.attn_implementation=flash_attention_2").code == 2
    else:
        assert "model.attn_implementation=flash_attention_2" in err and "'flash_attn' package" in err
        assert "pip install flash-attn" in err


def test_liger_on_a_gpu_preset_says_how_to_install_it():
    from ftrecipes.config.rules_speed import installed

    if installed("liger_kernel"):
        pytest.skip("liger-kernel is installed here")
    err = refused("hardware=1x_h100", "train.liger_kernel=true")
    assert "train.liger_kernel=true" in err and "pip install 'ftrecipes[liger]'" in err


def test_unknown_values_fail_the_schema():
    assert "attn_implementation" in refused("model.attn_implementation=flash")
    assert "gradient_checkpointing" in refused("train.gradient_checkpointing=sometimes")
    assert "lm_head_loss" in refused("train.lm_head_loss=fused")


def test_defaults_are_the_safe_fast_ones():
    recipe = resolve([]).recipe
    assert recipe.train.lm_head_loss == "auto"
    assert recipe.model.attn_implementation == "sdpa"
    assert (recipe.train.torch_compile, recipe.train.tf32, recipe.train.liger_kernel) == (False, "auto", False)
    assert recipe.train.gradient_checkpointing is False


def test_each_key_reaches_the_trainer_arguments(tmp_path):
    from ftrecipes.train.common import training_arguments
    from ftrecipes.train.sft import sft_config

    config = sft_config(resolve(["train.optimizer=adamw_torch_fused", "train.gradient_checkpointing=true",
                                 "train.torch_compile=true"]).recipe, tmp_path, has_eval=False)
    assert config.optim == "adamw_torch_fused" and config.torch_compile
    assert config.activation_checkpointing and config.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert config.tf32 is None and not config.use_liger_kernel  # auto: untouched on CPU
    reentrant = sft_config(resolve(["train.gradient_checkpointing=reentrant"]).recipe, tmp_path, has_eval=False)
    assert reentrant.activation_checkpointing_kwargs == {"use_reentrant": True}
    # GPU presets: the dict only (TrainingArguments itself checks for a GPU on tf32 / liger)
    gpu = training_arguments(resolve(["hardware=1x_h100", "train.gradient_checkpointing=offload"]).recipe,
                             tmp_path, has_eval=False)
    assert gpu["tf32"] is True
    assert gpu["activation_checkpointing_kwargs"] == {"use_reentrant": False, "offload": True}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache (tiny base, prepared data) for the training runs below."""
    with private_model_cache(tmp_path_factory.mktemp("speed-cache"), SMALL) as root:
        yield root


def losses(tmp_path, name: str, overrides: list[str]) -> list[float]:
    from ftrecipes.data.pipeline import run_prepare
    from ftrecipes.train.stage import run_train

    run_dir = tmp_path / name
    recipe = resolve([*SMALL, "train.max_steps=4", "train.micro_batch_size=4", "logging.log_interval=1",
                      "train.warmup_ratio=0", "method.learning_rate=5e-3", *overrides]).recipe
    run_prepare(recipe, run_dir)
    run_train(recipe, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row and not any(k.startswith("eval_") for k in row)]


# (overrides, relative tolerance on every logged loss). Exact-math variants agree to float32
# rounding; 8-bit AdamW quantizes the optimizer states, so its later steps drift a little.
# train.cpu_reuse_freed_memory acts in a process of our own only, not in this test process
# (test_process_tuning.py checks it through glibc's counters).
# train.torch_compile is left out: inductor's CPU compile of the forward and backward took
# minutes here on 2 cores (test_each_key_reaches_the_trainer_arguments checks its wiring).
CPU_COMBINATIONS = {
    "eager": (["model.attn_implementation=eager"], 1e-4),
    "checkpointing": (["train.gradient_checkpointing=true"], 1e-4),
    "checkpointing_reentrant": (["train.gradient_checkpointing=reentrant"], 1e-4),
    "fused_adamw": (["train.optimizer=adamw_torch_fused"], 1e-4),
    "adamw_8bit": (["train.optimizer=adamw_8bit"], 2e-2),
    # the baseline's auto is dense on the CPU; TRL's chunked kernel must give the same losses
    "lm_head_chunked": (["train.lm_head_loss=chunked"], 1e-4),
    # PEFT's own LoRA modules: torch's dropout draws other masks (test_cpu_lora.py compares the two
    # without dropout, to 1e-4)
    "peft_lora_modules": (["train.cpu_lora_kernels=false"], 2e-2),
}


@pytest.fixture(scope="module")
def baseline(cache, tmp_path_factory) -> list[float]:
    got = losses(tmp_path_factory.mktemp("speed-baseline"), "baseline", [])
    assert len(got) == 4
    return got


@pytest.mark.parametrize("name", list(CPU_COMBINATIONS))
def test_every_cpu_choice_trains_like_the_baseline(baseline, tmp_path, name):
    overrides, tolerance = CPU_COMBINATIONS[name]
    got = losses(tmp_path, name, overrides)
    assert got == pytest.approx(baseline, rel=tolerance), (name, got, baseline)


def test_packed_training_with_one_attention_call_per_sample_matches_the_masked_path(cache, tmp_path):
    """Packed sdpa runs `ftrecipes.train.packed_attention`; eager builds transformers' masked path."""
    packed = ["objective.packing=true"]
    fast = losses(tmp_path, "packed_sdpa", packed)
    masked = losses(tmp_path, "packed_eager", [*packed, "model.attn_implementation=eager"])
    assert len(fast) == 4 and fast == pytest.approx(masked, rel=1e-4), (fast, masked)
