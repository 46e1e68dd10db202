"""A first estimate of memory per device, itemized, and whether it fits the hardware preset.

Keys that matter: model.dtype, model.architecture.*, method.* (LoRA family and 4-bit base),
data.max_seq_len, train.micro_batch_size, train.gradient_checkpointing, model.attn_implementation,
hardware.strategy / gpus_per_node / nodes / gpu_memory_gb.

Formulas (bytes):
- weights: params x dtype bytes; a 4-bit NF4 base stores its linear layers at 4 bits plus the
  quantization constants (about 0.127 bits per parameter with double quantization, 0.5 without);
- full fine-tuning with mixed-precision AdamW: 2 (grads) + 12 (fp32 master, m, v) per parameter,
  sharded over the world size by ZeRO stage (1: optimizer, 2: + grads, 3 / FSDP2: + weights);
- LoRA-family adapters train in fp32: 4 (weights) + 4 (grads) + 8 (m, v) per trainable parameter;
- activations per layer (Korthikanti et al. 2022): s*b*h*(34 + 5*a*s/h) with eager attention,
  s*b*h*34 when a fused kernel (sdpa / flash) never materializes the score matrix, and only the
  2*s*b*h layer input with gradient checkpointing (plus one layer recomputed at a time);
- logits and loss: b*s*vocab*(2 + 4 + 4) for the bf16 logits, their fp32 copy and its gradient;
- overhead: 1 GiB CUDA context plus 10% allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftrecipes.plan.params import ParamCounts

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FUSED_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3")
HEADROOM = 0.90


@dataclass(frozen=True)
class MemoryEstimate:
    items: dict[str, float]  # GiB per device
    capacity_gib: float | None  # None on CPU

    @property
    def total(self) -> float:
        return sum(self.items.values())

    @property
    def fraction(self) -> float | None:
        return self.total / self.capacity_gib if self.capacity_gib else None

    @property
    def fits(self) -> bool | None:
        return None if self.fraction is None else self.fraction < HEADROOM


def world_size(hardware) -> int:
    per_node = hardware["gpus_per_node"] if hardware["accelerator"] == "cuda" else hardware.get("cpu_processes", 1)
    return per_node * hardware["nodes"]


def estimate(recipe, params: ParamCounts) -> MemoryEstimate:
    model, method, hw, train = recipe["model"], recipe["method"], recipe["hardware"], recipe["train"]
    arch, world, strategy = model["architecture"], world_size(hw), hw["strategy"]
    dtype_bytes = DTYPE_BYTES[model["dtype"]]
    if method["name"] == "qlora":
        constants_bits = 0.127 if method.get("double_quant", True) else 0.5
        weights = params.linear * (4 + constants_bits) / 8 + (params.total - params.linear) * 2
    else:
        weights = params.total * dtype_bytes
    if method["name"] == "full":
        grads, optimizer = params.trainable * 2, params.trainable * 12
    else:
        weights += params.trainable * 4
        grads, optimizer = params.trainable * 4, params.trainable * 8
    shard = max(world, 1)
    if strategy in ("zero1", "zero2", "zero3", "zero3_offload", "fsdp2"):
        optimizer /= shard
    if strategy in ("zero2", "zero3", "zero3_offload", "fsdp2"):
        grads /= shard
    if strategy in ("zero3", "zero3_offload", "fsdp2"):
        weights /= shard
    if strategy == "zero3_offload":
        optimizer, weights = 0.0, weights / 4  # states and parameters live in host RAM; one layer at a time
    s, b, h = recipe["data"]["max_seq_len"], train["micro_batch_size"], arch["hidden_size"]
    a, layers = arch["num_attention_heads"], arch["num_hidden_layers"]
    act_bytes = 2 if hw["mixed_precision"] != "no" or model["dtype"] != "float32" else 4
    scale = act_bytes / 2
    per_layer = s * b * h * (34 + (0 if model["attn_implementation"] in FUSED_ATTENTION else 5 * a * s / h)) * scale
    if train.get("gradient_checkpointing"):
        activations = layers * 2 * s * b * h * scale + per_layer
    else:
        activations = layers * per_layer
    logits = b * s * arch["vocab_size"] * 10
    subtotal = weights + grads + optimizer + activations + logits
    on_gpu = hw["accelerator"] == "cuda"
    overhead = (GIB if on_gpu else 0) + 0.10 * subtotal
    items = {"weights": weights, "gradients": grads, "optimizer": optimizer,
             "activations": activations, "logits": logits, "overhead": overhead}
    capacity = hw.get("gpu_memory_gb") if on_gpu else None
    # Vendors' "80 GB" is 80 GiB of device memory (81920 MiB), so gpu_memory_gb is read as GiB.
    return MemoryEstimate({k: v / GIB for k, v in items.items()}, float(capacity) if capacity else None)
