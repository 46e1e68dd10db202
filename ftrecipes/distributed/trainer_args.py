"""The TRL/Trainer arguments that come from `hardware.*`: timeout, DeepSpeed, logging across ranks.

`distributed_arguments(recipe, run_dir)` is merged last into every objective's TRL config (by
`ftrecipes.train.common.training_arguments`):

- `ddp_timeout`: `hardware.timeout_s` (the worker already opened the process group with it, see
  `ftrecipes.distributed.runtime`; this keeps transformers' own record in step);
- `log_on_each_node=False`: ranks share one run dir, so only global rank 0 logs;
- `hardware.strategy=zero1|zero2|zero3|zero3_offload`: `deepspeed`, the config dict from the run
  dir's `deepspeed.json` (written by the launcher from `launch/<strategy>.json` or
  `hardware.deepspeed_config`); "auto" values are filled by transformers from `train.*`. On the
  CPU `use_cpu` must be off (accelerate disables DeepSpeed otherwise) and the Trainer uses the
  accelerate state that `runtime.start` configured (`use_configured_state`).
- `fsdp2` needs nothing here: transformers shards the model while loading it
  (`ftrecipes.distributed.sharding`), and its Trainer then leaves the model unwrapped.
- periodic checkpoints (`train.checkpoint.*`) work under the ZeRO strategies: DeepSpeed writes
  the optimizer as per-rank shards, which the commit protocol checks
  (`ftrecipes.reliability.deepspeed_state`) and a re-run resumes. Under `fsdp2` they are turned
  off, with a note: transformers refuses optimizer checkpoints for a model it sharded at load
  time. The final model is saved as usual; resuming `fsdp2` from a checkpoint is not supported yet.

Raises `EnvironmentProblem` when a ZeRO strategy runs without DeepSpeed installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftrecipes.errors import require

ZERO = ("zero1", "zero2", "zero3", "zero3_offload")


def require_deepspeed(strategy: str = "zero*") -> None:
    require("deepspeed", extra="deepspeed", purpose=f"hardware.strategy={strategy}")


def deepspeed_dict(recipe, run_dir: Path) -> dict:
    """The run's DeepSpeed config: `run_dir/deepspeed.json`, else the one the recipe names."""
    path = Path(run_dir) / "deepspeed.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from ftrecipes.distributed.engine import deepspeed_config

    return deepspeed_config(recipe.hardware)


def distributed_arguments(recipe, run_dir: Path) -> dict:
    """Trainer keyword arguments for `hardware.strategy`, `hardware.timeout_s` and the world size."""
    hw = recipe.hardware
    args: dict = {"ddp_timeout": int(hw.timeout_s), "log_on_each_node": False}
    if hw.strategy == "fsdp2":
        args["save_strategy"] = "no"
        from ftrecipes.distributed.runtime import is_main

        if is_main():
            print(f"ftrecipes: note: hardware.strategy={hw.strategy} saves no periodic checkpoints "
                  "(train.checkpoint.* is not applied; resuming it is not supported yet); the final "
                  "model is saved", flush=True)
    if hw.strategy in ZERO:
        require_deepspeed(hw.strategy)
        args["deepspeed"] = deepspeed_dict(recipe, run_dir)
        if hw.accelerator == "cpu":
            args["use_cpu"] = False
            from ftrecipes.distributed.runtime import world

            if world() > 1:
                args["accelerator_config"] = {"use_configured_state": True}
    return args
