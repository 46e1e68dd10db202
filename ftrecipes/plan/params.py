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


def trainable(arch, method, total: int) -> int:
    name = method["name"]
    if name == "full":
        return total
    if name in LORA_FAMILY:
        targets = method["target_modules"]
        names = LINEAR_NAMES if targets == "all-linear" else [t for t in targets if t in LINEAR_NAMES]
        shapes = linear_shapes(arch)
        per_layer = sum(method["r"] * (shapes[n][0] + shapes[n][1]) for n in names)
        saved = sum(arch["vocab_size"] * arch["hidden_size"] for m in method.get("modules_to_save", [])
                    if m in ("embed_tokens", "lm_head"))
        return arch["num_hidden_layers"] * per_layer + saved
    raise KeyError(f"no parameter rule for method '{name}'")


def human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
