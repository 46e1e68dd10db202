"""Cross-field rules for `hardware.*` with the method, the model and the engine files.

Each rule is `(recipe, origins) -> list[Problem]`, and every message names both keys involved:

- `qlora_with_sharding`: QLoRA under `hardware.strategy=zero3|zero3_offload` stores its 4-bit
  weights in `method.compute_dtype` (bitsandbytes' `bnb_4bit_quant_storage`, set by
  `ftrecipes.methods.quantized`) so they can be sharded with the rest of the model; that needs
  `model.dtype` equal to it and a 4-bit `method.quant_type`. Under `fsdp2` it is refused:
  transformers' load-time FSDP2 turns bitsandbytes' packed 4-bit parameters into plain DTensors
  (measured on CPU: 8 bits per weight stored, the quantization state lost).
- `one_engine`: a DeepSpeed strategy with `hardware.fsdp_config`, or `fsdp2` with
  `hardware.deepspeed_config`; FSDP2 with fp16 mixed precision (transformers' FSDP2 mixed
  precision is bf16 only).
- `deepspeed_file`: a recipe's own DeepSpeed JSON (`hardware.deepspeed_config`) whose numeric
  batch sizes disagree with `train.micro_batch_size` x `train.gradient_accumulation_steps` x the
  world size, or a ZeRO-3 file without `stage3_gather_16bit_weights_on_model_save` (the final
  save would hold no weights).
- `offload_fits_host_ram`: `zero3_offload` whose host-RAM share (the plan's optimizer states and
  parameters per node) exceeds 90% of `hardware.host_memory_gb` (not judged when it is null).
- `bf16_on_hardware`: `hardware.mixed_precision=bf16`, `model.dtype=bfloat16` or a bf16 QLoRA
  compute dtype on a preset with `hardware.bf16: false` (V100, T4 and older GPUs).

A missing or unreadable DeepSpeed file is left to the launcher, which reports it with its path.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftrecipes.config.problems import Problem
from ftrecipes.config.provenance import origin_of

SHARDED_QLORA = ("zero3", "zero3_offload")
ZERO = ("zero1", "zero2", "zero3", "zero3_offload")


def _problem(path: str, message: str, origins: dict[str, str], hint: str) -> Problem:
    return Problem(path, message, origin_of(path, origins), hint)


def qlora_with_sharding(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    method, strategy = recipe["method"], recipe["hardware"]["strategy"]
    if method["name"] != "qlora" or strategy not in (*SHARDED_QLORA, "fsdp2"):
        return []
    if strategy == "fsdp2":
        return [_problem("hardware.strategy", "method.name=qlora cannot run under hardware.strategy=fsdp2: transformers' "
                         "FSDP2 loading turns bitsandbytes' packed 4-bit weights into plain shards and loses their "
                         "quantization state", origins,
                         "use hardware.strategy=zero3 (4-bit weights stored in method.compute_dtype), or method=lora")]
    if method.get("quant_type") == "int8":
        return [_problem("method.quant_type", f"method.quant_type=int8 cannot be sharded by hardware.strategy={strategy}: "
                         "LLM.int8 weights have no float storage (bnb_4bit_quant_storage is 4-bit only)", origins,
                         "use method.quant_type=nf4, or hardware.strategy=zero2 / ddp")]
    compute, dtype = method.get("compute_dtype"), recipe["model"]["dtype"]
    if compute != dtype:
        return [_problem("method.compute_dtype", f"hardware.strategy={strategy} shards one dtype: the 4-bit weights are "
                         f"stored in method.compute_dtype={compute} (bnb_4bit_quant_storage) but model.dtype={dtype}",
                         origins, f"set model.dtype={compute} (or method.compute_dtype={dtype})")]
    return []


def one_engine(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    hw = recipe["hardware"]
    if hw["strategy"] in ZERO and hw.get("fsdp_config"):
        return [_problem("hardware.fsdp_config", f"hardware.fsdp_config is set, but hardware.strategy={hw['strategy']} "
                         "runs DeepSpeed: one engine shards a run", origins,
                         "drop hardware.fsdp_config, or set hardware.strategy=fsdp2")]
    if hw["strategy"] != "fsdp2":
        return []
    if hw.get("deepspeed_config"):
        return [_problem("hardware.deepspeed_config", "hardware.deepspeed_config is set, but hardware.strategy=fsdp2 "
                         "runs FSDP2: one engine shards a run", origins,
                         "drop hardware.deepspeed_config, or set hardware.strategy=zero3 (or zero1/zero2)")]
    if hw["mixed_precision"] == "fp16":
        return [_problem("hardware.mixed_precision", "hardware.mixed_precision=fp16 is not available with "
                         "hardware.strategy=fsdp2 (transformers' FSDP2 mixed precision is bf16)", origins,
                         "use hardware.mixed_precision=bf16, or a zero* strategy for fp16")]
    return []


def deepspeed_file(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    hw = recipe["hardware"]
    own = hw.get("deepspeed_config")
    if hw["strategy"] not in ZERO or not own:
        return []
    try:
        config = json.loads(Path(own).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # the launcher names the file and the reason
    from ftrecipes.plan.memory import world_size

    train, world = recipe["train"], world_size(hw)
    micro, accum = train["micro_batch_size"], train["gradient_accumulation_steps"]
    expected = {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accum,
                "train_batch_size": micro * accum * world}
    problems = []
    for key, value in expected.items():
        given = config.get(key, "auto")
        if given != "auto" and given != value:
            problems.append(_problem("hardware.deepspeed_config", f"{own} sets {key}={given}, but train.micro_batch_size="
                                     f"{micro} x train.gradient_accumulation_steps={accum} x world size {world} "
                                     f"gives {value}", origins, f'set "{key}": "auto" in the file (transformers fills '
                                     "it from train.*), or change train.* to match"))
    zero = config.get("zero_optimization", {})
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        problems.append(_problem("hardware.deepspeed_config", f"{own} runs ZeRO-3 (hardware.strategy={hw['strategy']}) "
                                 "without stage3_gather_16bit_weights_on_model_save: the final save would hold no "
                                 "weights", origins, 'add "stage3_gather_16bit_weights_on_model_save": true to '
                                 "zero_optimization"))
    return problems


def offload_fits_host_ram(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    hw = recipe["hardware"]
    if hw["strategy"] != "zero3_offload" or not hw.get("host_memory_gb"):
        return []
    from ftrecipes.plan import memory, params

    need = memory.estimate(recipe, params.count(recipe["model"]["architecture"], recipe["method"])).host_gib
    have = float(hw["host_memory_gb"])
    if need <= memory.HEADROOM * have:
        return []
    return [_problem("hardware.host_memory_gb", f"hardware.strategy=zero3_offload keeps {need:.0f} GiB per node in host "
                     f"RAM (optimizer states and parameters), over 90% of hardware.host_memory_gb={have:g}", origins,
                     "use hardware.strategy=zero3 (GPU memory), more nodes, or a method that trains fewer "
                     "parameters (method=lora)")]


def bf16_on_hardware(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    hw = recipe["hardware"]
    if hw.get("bf16", True):
        return []
    uses = [(path, value) for path, value in (("hardware.mixed_precision", hw["mixed_precision"]),
                                              ("model.dtype", recipe["model"]["dtype"]),
                                              ("method.compute_dtype", recipe["method"].get("compute_dtype")))
            if value in ("bf16", "bfloat16")]
    return [_problem(path, f"{path}={value} needs bf16, and hardware.bf16 is false for hardware={hw['name']}",
                     origins, "use fp16 (GPU) or float32, or a preset with bf16 (Ampere or newer)")
            for path, value in uses]


HARDWARE_RULES = (qlora_with_sharding, one_engine, deepspeed_file, offload_fits_host_ram, bf16_on_hardware)
