"""The engine settings a run uses, rendered into its run dir before any worker starts.

`engine_files(recipe)` returns `{file name in the run dir: text}` for `hardware.strategy`:

- `zero1`, `zero2`, `zero3`, `zero3_offload`: `deepspeed.json`, the shipped `launch/<strategy>.json`
  ("auto" values are filled by transformers from the training arguments), or the recipe's own
  file when `hardware.deepspeed_config` names one;
- `fsdp2`: `fsdp2.yaml` (`launch/fsdp2.yaml`, or `hardware.fsdp_config`), with activation
  checkpointing taken from `train.gradient_checkpointing` (transformers applies the settings
  while loading the model: `ftrecipes.distributed.sharding`);
- `none`, `ddp`: nothing (DDP is the default of a multi-process Trainer).

Raises `RecipeError` when a named config file is missing, is not valid JSON/YAML, or (FSDP2) has
keys ftrecipes does not apply.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftrecipes.errors import RecipeError
from ftrecipes.paths import resource_dir

ZERO = ("zero1", "zero2", "zero3", "zero3_offload")


def _read(path: Path, key: str) -> str:
    if not path.is_file():
        raise RecipeError(f"{key}: the file '{path}' does not exist",
                          hint=f"point {key} at a file, or set it to null for the shipped default")
    return path.read_text(encoding="utf-8")


def deepspeed_config(hardware) -> dict:
    own = hardware.get("deepspeed_config")
    path = Path(own).expanduser() if own else resource_dir("launch") / f"{hardware['strategy']}.json"
    try:
        return json.loads(_read(path, "hardware.deepspeed_config"))
    except ValueError as exc:
        raise RecipeError(f"hardware.deepspeed_config: '{path}' is not valid JSON ({exc})",
                          hint="fix the file (DeepSpeed reads JSON)") from None


FSDP2_KEYS = ("reshard_after_forward", "offload_params", "activation_checkpointing", "fsdp_plan")


def fsdp_config(hardware, gradient_checkpointing: bool) -> dict:
    """The FSDP2 settings (see `ftrecipes.distributed.sharding`); an unknown key is refused."""
    import yaml

    own = hardware.get("fsdp_config")
    path = Path(own).expanduser() if own else resource_dir("launch") / "fsdp2.yaml"
    try:
        config = yaml.safe_load(_read(path, "hardware.fsdp_config")) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"hardware.fsdp_config: '{path}' is not valid YAML ({exc})", hint="fix the file") from None
    unknown = sorted(set(config) - set(FSDP2_KEYS))
    if unknown:
        raise RecipeError(f"hardware.fsdp_config: '{path}' has unknown keys {unknown}",
                          hint=f"use only {', '.join(FSDP2_KEYS)} (see launch/fsdp2.yaml)")
    config["activation_checkpointing"] = bool(gradient_checkpointing)
    return config


def engine_files(recipe) -> dict[str, str]:
    hw = recipe["hardware"]
    if hw["strategy"] in ZERO:
        return {"deepspeed.json": json.dumps(deepspeed_config(hw), indent=2) + "\n"}
    if hw["strategy"] == "fsdp2":
        import yaml

        return {"fsdp2.yaml": yaml.safe_dump(fsdp_config(hw, recipe["train"]["gradient_checkpointing"]), sort_keys=False)}
    return {}
