"""Cross-field rules for the speed keys: each refuses a choice this machine or preset cannot run.

Each rule is `(recipe, origins) -> list[Problem]`; every message names the key, the key or the
package it conflicts with, and the reason. The keys themselves are wired in
`ftrecipes.train.speed` (TrainingArguments) and `ftrecipes.model.load` (from_pretrained).

- `flash_attention_available`: `model.attn_implementation=flash_attention_2|flash_attention_3`
  needs `hardware.accelerator=cuda`, the package (`flash-attn` for 2, `flash-attn-3`'s
  `flash_attn_interface` for 3) and, unless `dry_run` (which may plan for another machine), a
  CUDA device that torch can see.
- `tf32_needs_gpu`: `train.tf32=true` with `hardware.accelerator=cpu` (TF32 is an NVIDIA
  tensor-core format; `auto` turns it on for CUDA only).
- `optimizer_available`: `train.optimizer=adamw_8bit|paged_*` needs bitsandbytes; the paged ones
  also need `hardware.accelerator=cuda` (they page through CUDA unified memory).
  `adamw_torch_fused` is allowed on CPU: torch >= 2.4 has a fused CPU kernel (measured to run
  here with torch 2.13).
- `checkpointing_variant`: `train.gradient_checkpointing=offload` with `hardware.accelerator=cpu`
  (the activations already live in host memory, and the pinned copy needs CUDA).
- `liger_available`: `train.liger_kernel=true` needs `hardware.accelerator=cuda` (its kernels are
  Triton GPU kernels) and the `liger-kernel` package (`pip install 'ftrecipes[liger]'`).

Package checks use `importlib.util.find_spec`, so validating a recipe imports neither torch nor
transformers unless a CUDA check is really needed.
"""

from __future__ import annotations

import importlib.util

from ftrecipes.config.problems import Problem
from ftrecipes.config.provenance import origin_of

FLASH_PACKAGES = {"flash_attention_2": ("flash_attn", "pip install flash-attn --no-build-isolation"),
                  "flash_attention_3": ("flash_attn_interface", "build flash-attn-3 from the hopper/ folder of "
                                        "Dao-AILab/flash-attention (H100/H200 only)")}
BITSANDBYTES_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")


def _problem(path: str, message: str, origins: dict[str, str], hint: str) -> Problem:
    return Problem(path, message, origin_of(path, origins), hint)


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


def cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def flash_attention_available(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    attn = recipe["model"].get("attn_implementation", "sdpa")
    if attn not in FLASH_PACKAGES:
        return []
    key, accelerator = "model.attn_implementation", recipe["hardware"]["accelerator"]
    if accelerator != "cuda":
        return [_problem(key, f"model.attn_implementation={attn} needs a CUDA GPU, but hardware.accelerator="
                         f"{accelerator}: FlashAttention has no CPU kernel", origins,
                         "use model.attn_implementation=sdpa (the default), or a GPU preset (hardware=1x_h100)")]
    module, how = FLASH_PACKAGES[attn]
    if not installed(module):
        return [_problem(key, f"model.attn_implementation={attn} needs the '{module}' package, which is not "
                         "installed", origins, f"{how}; or use model.attn_implementation=sdpa")]
    if not recipe.get("dry_run") and not cuda_visible():
        return [_problem(key, f"model.attn_implementation={attn} with hardware.accelerator=cuda, but torch sees "
                         "no CUDA device on this machine", origins,
                         "run on a GPU machine, or plan only with dry_run=true")]
    return []


def tf32_needs_gpu(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    accelerator = recipe["hardware"]["accelerator"]
    if recipe["train"].get("tf32") is True and accelerator != "cuda":
        return [_problem("train.tf32", f"train.tf32=true needs an NVIDIA GPU (Ampere or newer), but "
                         f"hardware.accelerator={accelerator}", origins,
                         "use train.tf32=auto (on for CUDA, off elsewhere) or false")]
    return []


def optimizer_available(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    name, accelerator = recipe["train"].get("optimizer", "adamw_torch"), recipe["hardware"]["accelerator"]
    if name not in BITSANDBYTES_OPTIMIZERS:
        return []
    if name.startswith("paged_") and accelerator != "cuda":
        return [_problem("train.optimizer", f"train.optimizer={name} pages its states through CUDA unified "
                         f"memory, but hardware.accelerator={accelerator}", origins,
                         "use train.optimizer=adamw_8bit (bitsandbytes runs it on CPU too) or adamw_torch_fused")]
    if not installed("bitsandbytes"):
        return [_problem("train.optimizer", f"train.optimizer={name} needs bitsandbytes, which is not installed",
                         origins, "pip install 'ftrecipes[qlora]' (bitsandbytes), or use train.optimizer=adamw_torch_fused")]
    return []


def checkpointing_variant(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    accelerator = recipe["hardware"]["accelerator"]
    if recipe["train"].get("gradient_checkpointing") == "offload" and accelerator != "cuda":
        return [_problem("train.gradient_checkpointing", "train.gradient_checkpointing=offload moves saved "
                         f"activations from the GPU to pinned host memory, but hardware.accelerator={accelerator} "
                         "keeps them in host memory already", origins,
                         "use train.gradient_checkpointing=true (non-reentrant recompute) or false")]
    return []


def liger_available(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    if not recipe["train"].get("liger_kernel"):
        return []
    accelerator = recipe["hardware"]["accelerator"]
    if accelerator != "cuda":
        return [_problem("train.liger_kernel", f"train.liger_kernel=true runs Triton GPU kernels, but "
                         f"hardware.accelerator={accelerator}", origins,
                         "set train.liger_kernel=false on CPU, or use a GPU preset (hardware=1x_h100)")]
    if not installed("liger_kernel"):
        return [_problem("train.liger_kernel", "train.liger_kernel=true needs the liger-kernel package, which is "
                         "not installed", origins, "pip install 'ftrecipes[liger]', or set train.liger_kernel=false")]
    return []


SPEED_RULES = (flash_attention_available, tf32_needs_gpu, optimizer_available, checkpointing_variant,
               liger_available)
