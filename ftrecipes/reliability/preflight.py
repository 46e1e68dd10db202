"""Checks before training starts: enough disk for the checkpoints, and no secrets in pickles.

- `check_disk(path, bytes_needed)`: fails early (OutOfResources, exit 5) with the numbers.
- `checkpoint_bytes(recipe, plan)`: the size of one checkpoint from the plan's parameter counts:
  the weights saved (all parameters in `model.dtype` for `method=full`, else the trainable
  adapter parameters in fp32, as peft saves them) plus the optimizer states (`train.optimizer`:
  AdamW 8 bytes per trainable parameter, 8-bit AdamW 2, SGD 0, Adafactor factored) plus 1 MiB
  for the RNG, scheduler and trainer state files. Under a ZeRO strategy DeepSpeed's shards also
  hold an fp32 master copy of the trainable parameters, and under ZeRO-1/2 its engine file holds
  the module's weights once more.
- `check_checkpoint_space(recipe, root, plan)`: `check_disk` for `train.checkpoint.keep` + 1
  checkpoints (the ones kept plus the one being written).
- `check_plan_fits(plan)`: OutOfResources when the memory plan does not fit the device preset
  (the plan's own computed fixes become the hint).
- `scrub_tokens(args)`: clears every `*_token` field (hub_token, ...) and other credentials of a
  TrainingArguments-like object or dict before it is pickled (HF writes `training_args.bin`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

from ftrecipes.errors import OutOfResources

SMALL_FILES = 1 << 20
# Fields that end in _token but name a tokenizer's special token, not a credential (TRL configs).
SPECIAL_TOKENS = frozenset({"pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token",
                            "mask_token"})
SECRET = re.compile(r"(_token|_api_key|_secret|_password)$|^(token|api_key|secret|password)$")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(path: Path, bytes_needed: int, *, what: str = "this run") -> int:
    """Raises OutOfResources when the filesystem of `path` has less than `bytes_needed` free.
    Returns the free bytes otherwise."""
    free = free_bytes(path)
    if free < bytes_needed:
        raise OutOfResources(
            f"not enough disk space under {path}: {what} needs about {human_bytes(bytes_needed)}, "
            f"{human_bytes(free)} is free",
            hint="free space, point run_dir at a larger disk, or lower train.checkpoint.keep")
    return free


def _plain(recipe) -> dict:
    if isinstance(recipe, dict):
        return recipe
    from omegaconf import OmegaConf

    return OmegaConf.to_container(recipe, resolve=True)


def checkpoint_bytes(recipe, plan: dict | None = None) -> int:
    """Estimated bytes of one checkpoint (see the module docstring). `plan` is `build_plan`'s
    result; without it the parameters are counted from `model.architecture`."""
    from ftrecipes.distributed.trainer_args import ZERO
    from ftrecipes.plan import memory, params

    plain = _plain(recipe)
    if plan is not None:
        p = plan["parameters"]
        counts = params.ParamCounts(p["total"], p["embedding"], p["trainable"], 0)
    else:
        counts = params.count(plain["model"]["architecture"], plain["method"])
    if plain["method"]["name"] == "full":
        weights = counts.total * memory.DTYPE_BYTES[plain["model"]["dtype"]]
    else:
        weights = counts.trainable * 4
    extra = 0
    strategy = plain.get("hardware", {}).get("strategy")
    if strategy in ZERO:  # DeepSpeed's shards (ftrecipes.reliability.deepspeed_state)
        extra = counts.trainable * 4 + (weights if strategy in ("zero1", "zero2") else 0)
    return int(weights + extra + memory.optimizer_bytes(plain, counts) + SMALL_FILES)


def check_checkpoint_space(recipe, root: Path, plan: dict | None = None) -> int:
    """Fails early unless `root` has room for `train.checkpoint.keep` + 1 checkpoints."""
    plain = _plain(recipe)
    keep = plain.get("train", {}).get("checkpoint", {}).get("keep", 2)
    one = checkpoint_bytes(plain, plan)
    return check_disk(root, one * (keep + 1),
                      what=f"{keep} kept checkpoints plus the one being written ({human_bytes(one)} each)")


def check_plan_fits(plan: dict) -> None:
    """Raises OutOfResources (exit 5) when `build_plan`'s memory per device is over the preset's
    90% headroom; the hint lists the plan's suggestions (their override text) that would fit."""
    if plan.get("fits") is not False:
        return
    fixes = [f"{s['change']} ({s['overrides']})" for s in plan.get("suggestions", [])[:3]]
    raise OutOfResources(
        f"the plan needs {plan['memory_total_gib']:.1f} GiB per device, over 90% of the "
        f"{plan['device_memory_gib']:.0f} GiB of the hardware preset",
        hint="; or ".join(fixes) if fixes else "use a larger GPU preset or more nodes (dry_run=true shows the plan)")


def scrub_tokens(args) -> list[str]:
    """Sets every credential-like field of `args` to None, in place; returns their names.

    Credentials are fields named `*_token` (hub_token, ...), `*_api_key`, `*_secret` and
    `*_password`; tokenizer special tokens (`pad_token`, `eos_token`, ...) are kept. Call it on
    TrainingArguments / TRL configs before the trainer pickles them (`training_args.bin`); the
    hub client reads HF_TOKEN from the environment instead.
    """
    if isinstance(args, dict):
        names = list(args)
    else:
        names = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) else []
        names += [n for n in vars(args) if n not in names] if hasattr(args, "__dict__") else []
    cleared = []
    for name in names:
        if not SECRET.search(name) or name in SPECIAL_TOKENS:
            continue
        value = args[name] if isinstance(args, dict) else getattr(args, name, None)
        if value is None:
            continue
        if isinstance(args, dict):
            args[name] = None
        else:
            object.__setattr__(args, name, None)
        cleared.append(name)
    return cleared
