"""Sharded models: FSDP2 at load time, and the gathered weights every strategy saves.

FSDP2 (`hardware.strategy=fsdp2`) is transformers' own: `from_pretrained(distributed_config=...)`
applies torch's `fully_shard` to every decoder block and the root while loading, so each rank
reads and keeps only its shard (DTensor parameters); the Trainer then neither wraps the model in
DDP nor shards it again. This is also the path that really shards on the CPU: accelerate's FSDP
plugin (`TrainingArguments.fsdp`) silently falls back to DDP there.

`fsdp2_config(recipe)` maps the FSDP2 settings (`launch/fsdp2.yaml`, or `hardware.fsdp_config`;
the run dir's `fsdp2.yaml` is a copy for reading) onto transformers' `DistributedConfig`:

- `offload_params: true` -> CPU offload of parameters, gradients and optimizer state;
- `reshard_after_forward: false` -> decoder blocks keep their gathered weights between forward
  and backward (ZeRO-2-like: more memory, less traffic);
- `fsdp_plan` -> per-module overrides of the model's own plan;
- `hardware.mixed_precision=bf16` -> bf16 compute and fp32 gradient reduction.

`weights_to_save(trainer)` is called on every rank before saving (the gathers are collective):
ZeRO-3 gathers the 16-bit weights onto rank 0 (`stage3_gather_16bit_weights_on_model_save`,
which the shipped zero3 configs set); ZeRO-1/2 and DDP hold full weights already; an FSDP2 model's
own `save_pretrained` gathers a full state dict onto rank 0 when every rank calls it.
"""

from __future__ import annotations


def wants_sharded_load(recipe) -> bool:
    from ftrecipes.distributed.runtime import world

    return recipe.hardware.strategy == "fsdp2" and world() > 1


def fsdp2_config(recipe):
    """transformers' `DistributedConfig` for FSDP2 over every rank of the run."""
    from transformers.distributed import DistributedConfig

    from ftrecipes.distributed.engine import fsdp_config
    from ftrecipes.distributed.runtime import world

    settings = fsdp_config(recipe.hardware, recipe.train.gradient_checkpointing)
    plan = dict(settings.get("fsdp_plan") or {})
    if settings.get("reshard_after_forward") is False:
        plan.setdefault("model.layers.*", "keep_full_weight")
    return DistributedConfig(
        fsdp_size=world(),
        fsdp_plan=plan or None,
        fsdp_cpu_offload=bool(settings.get("offload_params", False)),
        fsdp_mixed_precision=recipe.hardware.accelerator == "cuda" and recipe.hardware.mixed_precision == "bf16",
    )


def weights_to_save(trainer) -> dict | None:
    """A state dict to save instead of the model's own (ZeRO: gathered on rank 0), or None."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return None


def describe(model) -> str:
    """This rank's share: parameter values held locally, and one shard's global -> local shape."""
    from torch.distributed.tensor import DTensor

    from ftrecipes.distributed.runtime import rank, world

    params = list(model.named_parameters())
    shards = [(name, p) for name, p in params if isinstance(p, DTensor)]
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for _, p in params)
    total = sum(p.numel() for _, p in params)
    example = (f", e.g. {shards[0][0]} {tuple(shards[0][1].shape)} -> {tuple(shards[0][1].to_local().shape)}"
               if shards else "")
    return (f"fsdp2: rank {rank()} of {world()} holds {local:,} of {total:,} parameter values; "
            f"{len(shards)} of {len(params)} parameters are DTensor shards{example}")


def save_arguments(trainer) -> dict:
    """`save_pretrained` keywords for this rank: `is_main_process` (only rank 0 writes) and, under
    DeepSpeed, the gathered `state_dict`."""
    from ftrecipes.distributed.runtime import is_main

    args: dict = {"is_main_process": is_main()}
    weights = weights_to_save(trainer)
    if weights is not None:
        args["state_dict"] = weights
    return args
