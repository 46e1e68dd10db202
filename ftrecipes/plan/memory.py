"""Memory per device, itemized, and whether it fits the hardware preset with 10% headroom.

Keys that matter: model.dtype, model.architecture.*, model.attn_implementation, method.* (which
parameters train; a 4-bit base for qlora), data.max_seq_len, train.micro_batch_size,
train.gradient_checkpointing, train.optimizer, hardware.accelerator / strategy / gpus_per_node /
nodes / gpu_memory_gb / mixed_precision.

Formulas (bytes):
- weights: parameters x dtype bytes. LLM.int8 stores linear layers at 1 byte plus an fp32 scale
  per output row. A 4-bit NF4 or FP4 base stores its linear layers at 4 bits
  plus quantization constants: one fp32 absmax per 64 weights (0.5 bit), or with double
  quantization an 8-bit absmax per 64 plus one fp32 per 256 blocks (0.127 bit). Embeddings,
  norms and the LM head stay in the 16-bit compute dtype.
- full fine-tuning: fp32 weights train with fp32 gradients; 16-bit weights train in mixed
  precision with 16-bit gradients and an fp32 master copy (4 bytes). Either way 16 bytes per
  parameter with AdamW before activations (ZeRO paper, section 3.1).
- adapters (LoRA family): peft keeps adapter weights in fp32, so 4 (weights) + 4 (gradients).
- optimizer states per trainable parameter: AdamW 8 (fp32 m and v), 8-bit AdamW 2, SGD 0 (no
  momentum), Adafactor 4 x (rows + cols) per matrix (factored second moment).
- sharding over the world size N: ZeRO-1 the optimizer, ZeRO-2 also gradients, ZeRO-3 and FSDP2
  also weights. ZeRO-3 with offload keeps optimizer states and parameters in host RAM; the GPU
  holds two gathered layers at a time.
- activations per layer (Korthikanti et al. 2022, eq. 2, no tensor parallelism):
  s*b*h*(34 + 5*a*s/h) bytes with 16-bit activations; the 5*a*s/h term is the attention score,
  softmax and dropout matrices, which fused kernels (sdpa on GPU, flash attention) never store.
  With gradient checkpointing each layer keeps only its 2*s*b*h input, plus one layer's full
  activations during recomputation. fp32 activations double this.
- logits and loss: b*s*vocab*(a + 4 + 4): the logits in the activation dtype, their fp32 copy
  for the loss and its gradient (a 150k vocabulary makes this large).
- overhead: a 1 GiB CUDA context plus 10% for allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftrecipes.plan.params import ParamCounts, linear_shapes, trainable_matrices

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FUSED_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3")
HEADROOM = 0.90
CUDA_CONTEXT = 1.0 * GIB
FRAGMENTATION = 0.10
OPTIMIZER_STATE_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,
                         "adamw_8bit": 2, "paged_adamw_8bit": 2, "sgd": 0}
QUANT_CONSTANT_BITS = {True: 8 / 64 + 32 / (64 * 256), False: 32 / 64}


@dataclass(frozen=True)
class MemoryEstimate:
    items: dict[str, float]  # GiB per device
    capacity_gib: float | None  # None on CPU
    host_gib: float = 0.0  # offloaded states per node, in host RAM
    notes: tuple[str, ...] = field(default_factory=tuple)

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


def optimizer_bytes(recipe, params: ParamCounts) -> float:
    name = recipe["train"].get("optimizer", "adamw_torch")
    if name == "adafactor":
        return 4.0 * sum(rows + cols if cols > 1 else rows
                         for rows, cols in trainable_matrices(recipe["model"]["architecture"], recipe["method"]))
    return OPTIMIZER_STATE_BYTES[name] * params.trainable


def weight_bytes(recipe, params: ParamCounts) -> float:
    method, model = recipe["method"], recipe["model"]
    if method["name"] == "qlora" and method.get("quant_type") == "int8":
        rows = sum(o for _, o in linear_shapes(model["architecture"]).values()) * model["architecture"]["num_hidden_layers"]
        base = params.linear * 1 + rows * 4 + (params.total - params.linear) * 2  # int8 + fp32 scale per row
    elif method["name"] == "qlora":
        bits = 4 + QUANT_CONSTANT_BITS[bool(method.get("double_quant", True))]
        base = params.linear * bits / 8 + (params.total - params.linear) * 2
    else:
        base = params.total * DTYPE_BYTES[model["dtype"]]
    return base + (0 if method["name"] == "full" else params.trainable * 4)


def training_state_bytes(recipe, params: ParamCounts) -> tuple[float, float]:
    """(gradients, optimizer) bytes for the trainable parameters, unsharded."""
    optimizer = optimizer_bytes(recipe, params)
    if recipe["method"]["name"] != "full":
        return params.trainable * 4, optimizer
    if recipe["model"]["dtype"] == "float32":
        return params.trainable * 4, optimizer
    return params.trainable * 2, optimizer + params.trainable * 4  # fp32 master weights


def activation_bytes(recipe) -> tuple[float, float]:
    """(activations, logits) bytes for one micro-batch on one device."""
    model, train, hw = recipe["model"], recipe["train"], recipe["hardware"]
    arch = model["architecture"]
    s, b, h = recipe["data"]["max_seq_len"], train["micro_batch_size"], arch["hidden_size"]
    a, layers = arch["num_attention_heads"], arch["num_hidden_layers"]
    sixteen_bit = model["dtype"] != "float32" or hw["mixed_precision"] != "no"
    scale = 1.0 if sixteen_bit else 2.0
    fused = model["attn_implementation"] in FUSED_ATTENTION and hw["accelerator"] == "cuda"
    per_layer = s * b * h * (34 + (0 if fused else 5 * a * s / h)) * scale
    if train.get("gradient_checkpointing"):
        activations = layers * 2 * s * b * h * scale + per_layer
    else:
        activations = layers * per_layer
    logits = b * s * arch["vocab_size"] * (2 * scale + 4 + 4)
    return activations, logits


def estimate(recipe, params: ParamCounts) -> MemoryEstimate:
    hw = recipe["hardware"]
    world, strategy = max(world_size(hw), 1), hw["strategy"]
    weights = weight_bytes(recipe, params)
    grads, optimizer = training_state_bytes(recipe, params)
    host, notes = 0.0, []
    if strategy in ("zero1", "zero2", "zero3", "zero3_offload", "fsdp2"):
        optimizer /= world
    if strategy in ("zero2", "zero3", "zero3_offload", "fsdp2"):
        grads /= world
    if strategy in ("zero3", "fsdp2"):
        weights /= world
    if strategy == "zero3_offload":
        per_node = world // hw["nodes"]
        host = (optimizer + weights / world) * per_node
        arch = recipe["model"]["architecture"]
        layer_params = sum(i * o for i, o in linear_shapes(arch).values())
        weights = 2 * layer_params * DTYPE_BYTES[recipe["model"]["dtype"]]
        optimizer = 0.0
        notes.append("ZeRO-3 offload: optimizer states and parameters live in host RAM")
    if recipe["train"].get("optimizer", "").startswith("paged_"):
        notes.append("paged optimizer: its states can page to host RAM under memory pressure")
    activations, logits = activation_bytes(recipe)
    subtotal = weights + grads + optimizer + activations + logits
    on_gpu = hw["accelerator"] == "cuda"
    items = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": activations,
             "logits": logits, "overhead": (CUDA_CONTEXT if on_gpu else 0.0) + FRAGMENTATION * subtotal}
    # Vendors' "80 GB" is 80 GiB of device memory (81920 MiB), so gpu_memory_gb is read as GiB.
    capacity = float(hw["gpu_memory_gb"]) if on_gpu and hw.get("gpu_memory_gb") else None
    return MemoryEstimate({k: v / GIB for k, v in items.items()}, capacity, host / GIB, tuple(notes))
