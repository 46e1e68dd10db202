"""Exact parameter counts from the architecture numbers in `model.architecture` (no weights read).

Covers decoder-only Llama / Qwen2 / Qwen3 blocks: attention projections (with Qwen2's q/k/v bias
and Qwen3's per-head q/k norms), a SwiGLU MLP, RMSNorms, embeddings and an untied or tied LM head.
Trainable counts follow `method.*`: everything for `full`; r * (in + out) per targeted linear layer
for the LoRA family, plus any `modules_to_save`.
"""

from __future__ import annotations

from dataclasses import dataclass

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_FAMILY = ("lora", "qlora")


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # input embeddings plus an untied LM head
    trainable: int
    linear: int  # weights of the per-layer linear projections (what 4-bit quantization covers)

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def linear_shapes(arch) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer in one decoder block."""
    h, hd = arch["hidden_size"], arch["head_dim"]
    q, kv, inter = arch["num_attention_heads"] * hd, arch["num_key_value_heads"] * hd, arch["intermediate_size"]
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}


def count(arch, method) -> ParamCounts:
    h, layers, vocab = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    shapes = linear_shapes(arch)
    linear = sum(i * o for i, o in shapes.values())
    bias = (shapes["q_proj"][1] + 2 * shapes["k_proj"][1]) if arch.get("attention_bias") else 0
    qk_norm = 2 * arch["head_dim"] if arch.get("qk_norm") else 0
    per_layer = linear + bias + qk_norm + 2 * h
    embedding = vocab * h * (1 if arch["tie_word_embeddings"] else 2)
    total = layers * per_layer + h + embedding
    return ParamCounts(total, embedding, trainable(arch, method, total), layers * linear)


def _lora_targets(method) -> list[str]:
    targets = method["target_modules"]
    return list(LINEAR_NAMES) if targets == "all-linear" else [t for t in targets if t in LINEAR_NAMES]


def trainable_matrices(arch, method) -> list[tuple[int, int]]:
    """(rows, cols) of every trainable tensor; vectors are (n, 1). Adafactor's state needs shapes."""
    layers, h, vocab = arch["num_hidden_layers"], arch["hidden_size"], arch["vocab_size"]
    shapes = linear_shapes(arch)
    if method["name"] == "full":
        per_layer = [(o, i) for i, o in shapes.values()] + [(h, 1), (h, 1)]
        heads = [(vocab, h)] * (1 if arch["tie_word_embeddings"] else 2)
        return per_layer * layers + heads + [(h, 1)]
    if method["name"] in LORA_FAMILY:
        r = method["r"]
        per_layer = [m for n in _lora_targets(method) for m in ((r, shapes[n][0]), (shapes[n][1], r))]
        saved = [(vocab, h) for m in method.get("modules_to_save", []) if m in ("embed_tokens", "lm_head")]
        return per_layer * layers + saved
    raise KeyError(f"no parameter rule for method '{method['name']}'")


def trainable(arch, method, total: int) -> int:
    if method["name"] == "full":
        return total
    return sum(rows * cols for rows, cols in trainable_matrices(arch, method))


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def count_from_config(folder, method) -> ParamCounts:
    """Counts a local model's parameters from its config.json on the meta device: no weights read.

    Imports torch and transformers, so only `model.source=local` plans take this path.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings()
    untied_head = outputs is not None and outputs.weight is not inputs
    embedding = inputs.numel() + (outputs.weight.numel() if untied_head else 0)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LINEAR_NAMES)
    arch = {"hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": getattr(config, "num_key_value_heads", config.num_attention_heads),
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
            "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False))}
    return ParamCounts(total, embedding, trainable(arch, method, total), linear)
