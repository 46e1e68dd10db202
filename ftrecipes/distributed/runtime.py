"""What a worker process does differently when it is one rank of several (run by torchrun).

- `start(recipe)` joins the process group before any stage runs, with `hardware.timeout_s` as
  the timeout of every collective (gloo on the CPU, NCCL on GPUs). transformers passes
  `ddp_timeout` only on GPUs, and transformers' FSDP2 loading would otherwise open the group with
  its own two-hour timeout; opening it here makes one key rule them all. A rank that dies or
  hangs then ends the others within `timeout_s`.
- DeepSpeed on the CPU: accelerate 1.15 turns DeepSpeed off when `use_cpu` is set, and without it
  sees no backend and counts one process, so transformers' "auto" batch sizes disagree with
  DeepSpeed's world size. `start` therefore configures accelerate's state itself (DeepSpeed over
  gloo, the real world size) and `ftrecipes.distributed.trainer_args` tells the Trainer to use it.
- `runs_here(stage)`: prepare runs on every rank (rank 0 prepares, the others wait for its marker
  for `data.cache.wait_timeout_s`, the separate long timeout); train on every rank; evaluate and
  export on rank 0 only, after `end_training()` released the group.
- `write_exit_report(run_dir, code, error)`: `run_dir/logs/exit-rank<N>.json` with the exit code
  and error class of this rank, read by the launcher (`ftrecipes.distributed.failures`), since
  torchrun itself exits 1 whatever went wrong.

Environment (set by torchrun): RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

TRAIN_ON_EVERY_RANK = ("prepare", "train")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def start(recipe) -> None:
    """Joins the process group (`hardware.timeout_s`); a no-op for one process."""
    if world() <= 1:
        return
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    hw = recipe.hardware
    timeout = timedelta(seconds=int(hw.timeout_s))
    if dist.is_initialized():
        return
    if hw.accelerator == "cuda" and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo", timeout=timeout)
    if hw.strategy in ("zero1", "zero2", "zero3", "zero3_offload") and hw.accelerator == "cpu":
        _deepspeed_state_on_cpu(timeout)


def _deepspeed_state_on_cpu(timeout) -> None:
    """accelerate's shared state for DeepSpeed over gloo: the one its own setup cannot reach on a CPU."""
    from accelerate import PartialState

    from ftrecipes.distributed.trainer_args import require_deepspeed

    require_deepspeed()
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # read while the state is built, as transformers does
    try:
        PartialState(backend="gloo", timeout=timeout)
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def runs_here(stage: str) -> bool:
    """Whether `stage` runs on this rank: prepare and train everywhere, the rest on rank 0."""
    return stage in TRAIN_ON_EVERY_RANK or is_main()


def end_training() -> None:
    """Leaves the process group after training: rank 0 evaluates and exports on its own. Also
    clears transformers' global ZeRO-3 flag, which would otherwise make every later
    `from_pretrained` (evaluate, export) partition the weights under `deepspeed.zero.Init`."""
    import sys

    if "transformers.integrations.deepspeed" in sys.modules:
        sys.modules["transformers.integrations.deepspeed"].unset_hf_deepspeed_config()
    if world() <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def exit_report_path(run_dir: Path, global_rank: int) -> Path:
    return Path(run_dir) / "logs" / f"exit-rank{global_rank}.json"


def write_exit_report(run_dir: Path, code: int, error: BaseException | None) -> None:
    """`logs/exit-rank<N>.json`: this rank's exit code, error class and first message line."""
    from ftrecipes.errors import FtrecipesError, classify

    if error is not None and not isinstance(error, FtrecipesError):
        error = classify(error) or error  # the class the exit code stands for (a gloo timeout: DistributedTimeout)
    message = str(getattr(error, "message", "") or error or "").strip().splitlines()
    report = {"rank": rank(), "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "host": socket.gethostname(),
              "pid": os.getpid(), "code": int(code), "error": type(error).__name__ if error else None,
              "message": message[0][:500] if message else "", "time": time.time()}
    path = exit_report_path(run_dir, rank())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(report) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # the report helps the launcher's message; it must never replace the real failure
