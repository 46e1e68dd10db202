"""DeepSpeed's own checkpoint layout inside a committed checkpoint, and loading it without pickle code.

Under `hardware.strategy=zero1|zero2|zero3|zero3_offload` HF's Trainer saves the optimizer through
DeepSpeed (`engine.save_checkpoint`), not as `optimizer.pt`:

    checkpoint-40/
      latest                                      the tag, e.g. "global_step40"
      global_step40/
        mp_rank_00_model_states.pt                engine state (+ the module under ZeRO-1/2)
        zero_pp_rank_<r>_mp_rank_00_optim_states.pt      one per rank (bf16_ prefix under bf16 ZeRO-1)
        zero_pp_rank_<r>_mp_rank_00_model_states.pt      one per rank under ZeRO-3
      model.safetensors (or adapter_model.safetensors)  the gathered weights, scheduler.pt, rng_state_<r>.pth, ...

`missing(folder, names, world_size)` is what `checkpoint.missing_files` asks of such a folder, so
the commit protocol refuses one that lacks a rank's shard. `safe_loads()` makes DeepSpeed's
loader (`TorchCheckpointEngine.load`, `torch.load(weights_only=False)`) unpickle with
`weights_only=True` and only the DeepSpeed classes in `ALLOWED_GLOBALS`: a shard that holds
anything else (code) is refused with a message, never executed. `train_with_checkpoints` wraps
training in it whenever a ZeRO strategy runs.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from pathlib import Path
from typing import Iterator

from ftrecipes.reliability.checkpoint import CheckpointError

LATEST = "latest"
# what DeepSpeed 0.19 pickles into its shards besides tensors and builtins: the first three found
# with torch.serialization.get_unsafe_globals_in_checkpoint on fp32 ZeRO-2/3 checkpoints (CPU); the
# dynamic loss scaler is what fp16 runs keep in the same field (not seen here: no GPU)
ALLOWED_GLOBALS = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
)


def is_deepspeed(names: set[str]) -> bool:
    """Whether a checkpoint's relative file names are DeepSpeed's layout (its `latest` file)."""
    return LATEST in names


def missing(folder: Path, names: set[str], world_size: int) -> list[str]:
    """What a DeepSpeed resume needs but `names` (relative paths under `folder`) lacks."""
    tag = (Path(folder) / LATEST).read_text(encoding="utf-8").strip()
    inside = {name.split("/", 1)[1] for name in names if name.startswith(f"{tag}/")}
    if not inside:
        return [f"{LATEST} names {tag!r}, but the folder {tag}/ is missing or empty"]
    problems = []
    if not any(n.endswith("_model_states.pt") for n in inside):
        problems.append(f"{tag}/mp_rank_00_model_states.pt is missing")
    for rank in range(max(world_size, 1)):
        shard = re.compile(rf"^(bf16_)?zero_pp_rank_{rank}_mp_rank_\d+_optim_states\.pt$")
        if not any(shard.match(n) for n in inside):
            problems.append(f"{tag}/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt is missing (rank {rank}'s "
                            "optimizer shard)")
    return problems


def _allowed_classes() -> list:
    classes = []
    for dotted in ALLOWED_GLOBALS:
        module, _, name = dotted.rpartition(".")
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # another DeepSpeed release: what it lacks is not needed
            continue
    return classes


def load_shard(path: str, map_location=None):
    """`torch.load` of one DeepSpeed shard with `weights_only=True` and `ALLOWED_GLOBALS` only."""
    import pickle

    import torch

    with torch.serialization.safe_globals(_allowed_classes()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"GLOBAL (\S+)", str(error))
            what = found.group(1) if found else "an object torch's safe loader refuses"
            raise CheckpointError(
                f"{path}: the DeepSpeed shard holds {what}, which ftrecipes does not unpickle (only tensors, "
                "builtins and ftrecipes.reliability.deepspeed_state.ALLOWED_GLOBALS)",
                hint="if the file comes from your own run, a DeepSpeed release outside the tested range saved "
                     "that class: install deepspeed>=0.19.8,<0.20, or add the name to ALLOWED_GLOBALS in "
                     "ftrecipes/reliability/deepspeed_state.py; otherwise start fresh with a new run_dir",
            ) from None


@contextlib.contextmanager
def safe_loads() -> Iterator[None]:
    """Within the block, DeepSpeed's torch checkpoint engine loads through `load_shard`. A process
    that has not imported DeepSpeed (no ZeRO strategy: the Trainer imports it when it is configured),
    or where `train.lean_imports` hid it, is left alone: runs without ZeRO never import it."""
    if sys.modules.get("deepspeed") is None:  # not imported, or hidden (None) by train.lean_imports
        yield
        return
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    original = TorchCheckpointEngine.load

    def load(self, path, map_location=None):
        return load_shard(path, map_location)

    TorchCheckpointEngine.load = load
    try:
        yield
    finally:
        TorchCheckpointEngine.load = original
