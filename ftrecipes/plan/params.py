"""Exact parameter counts from the architecture numbers in `model.architecture` (no weights read).

Covers decoder-only Llama / Qwen2 / Qwen3 blocks: attention projections (with Qwen2's q/k/v bias
and Qwen3's per-head q/k norms), a SwiGLU MLP, RMSNorms, embeddings and an untied or tied LM head.
Trainable counts follow `method.*` and match what peft creates (tests/test_methods_rules.py):

- `full`: everything.
- `lora`, `qlora`: r * (in + out) per targeted linear layer, plus any `modules_to_save`; `dora`
  adds a magnitude vector (out) per targeted layer.
- `adalora`: init_r * (in + out + 1) per targeted layer (P, Q and the singular values); the
  budget later masks ranks but the tensors keep their size.
- `ia3`: one vector per targeted layer, of its output width (its input width for
  `feedforward_modules`).
- `prompt_tuning`: num_virtual_tokens * hidden. `p_tuning`: that plus the MLP encoder
  (hidden -> e -> e -> hidden, with biases; e = encoder_hidden_size or hidden).
- `p_tuning_v2`: num_virtual_tokens * layers * 2 * kv, where kv = num_key_value_heads * head_dim
  (peft's width for keys and values); with `prefix_projection`, num_virtual_tokens * kv plus the
  MLP kv -> e -> layers * 2 * kv (e = encoder_hidden_size or kv).
- any other registered method (one added without a rule here): the method function is applied to
  the architecture built on the meta device, and its trainable tensors are measured. Exact, but it
  imports torch, transformers and peft, so such dry runs are slower (docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_FAMILY = ("lora", "qlora", "dora")
PROMPT_METHODS = ("prompt_tuning", "p_tuning", "p_tuning_v2")


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


def _targets(method) -> list[str]:
    targets = method["target_modules"]
    return list(LINEAR_NAMES) if targets == "all-linear" else [t for t in targets if t in LINEAR_NAMES]


def _linear(i: int, o: int) -> list[tuple[int, int]]:
    """A linear layer's weight and bias."""
    return [(o, i), (o, 1)]


def _prompt_matrices(arch, method) -> list[tuple[int, int]]:
    h, layers, n = arch["hidden_size"], arch["num_hidden_layers"], method["num_virtual_tokens"]
    if method["name"] == "prompt_tuning":
        return [(n, h)]
    if method["name"] == "p_tuning":
        e = method.get("encoder_hidden_size") or h
        return [(n, h), *_linear(h, e), *_linear(e, e), *_linear(e, h)]
    kv = arch["num_key_value_heads"] * arch["head_dim"]
    if not method.get("prefix_projection"):
        return [(n, layers * 2 * kv)]
    e = method.get("encoder_hidden_size") or kv
    return [(n, kv), *_linear(kv, e), *_linear(e, layers * 2 * kv)]


def trainable_matrices(arch, method) -> list[tuple[int, int]]:
    """(rows, cols) of every trainable tensor; vectors are (n, 1). Adafactor's state needs shapes."""
    layers, h, vocab = arch["num_hidden_layers"], arch["hidden_size"], arch["vocab_size"]
    shapes = linear_shapes(arch)
    name = method["name"]
    if name == "full":
        per_layer = [(o, i) for i, o in shapes.values()] + [(h, 1), (h, 1)]
        heads = [(vocab, h)] * (1 if arch["tie_word_embeddings"] else 2)
        return per_layer * layers + heads + [(h, 1)]
    if name in LORA_FAMILY:
        r = method["r"]
        per_layer = [m for n in _targets(method) for m in ((r, shapes[n][0]), (shapes[n][1], r))]
        if name == "dora":
            per_layer += [(shapes[n][1], 1) for n in _targets(method)]
        saved = [(vocab, h) for m in method.get("modules_to_save", []) if m in ("embed_tokens", "lm_head")]
        return per_layer * layers + saved
    if name == "adalora":
        r = method["init_r"]
        per_layer = [m for n in _targets(method) for m in ((r, shapes[n][0]), (shapes[n][1], r), (r, 1))]
        return per_layer * layers
    if name == "ia3":
        feedforward = set(method["feedforward_modules"])
        per_layer = [(shapes[n][0] if n in feedforward else shapes[n][1], 1)
                     for n in method["target_modules"] if n in shapes]
        return per_layer * layers
    if name in PROMPT_METHODS:
        return _prompt_matrices(arch, method)
    return _measured_on_meta(arch, method)


def _measured_on_meta(arch, method) -> list[tuple[int, int]]:
    """Trainable tensor shapes of a method with no rule above, measured on a meta-device model."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftrecipes.methods import get

    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
              "intermediate_size", "vocab_size", "tie_word_embeddings")
    # Architectures read from a local config.json may carry no family; adapters see the same
    # linear layers in every supported family, so llama's layout measures them.
    config = AutoConfig.for_model(arch.get("family") or "llama", **{k: arch[k] for k in fields})
    with torch.device("meta"):
        model = get(method["name"]).apply(AutoModelForCausalLM.from_config(config), OmegaConf.create(method), 1000)
    return [(p.shape[0], p[0].numel() if p.dim() > 1 else 1) for p in model.parameters() if p.requires_grad]


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
