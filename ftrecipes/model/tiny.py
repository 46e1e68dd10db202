"""Build the tiny quickstart base model locally, once, and cache it.

`build_tiny_model(recipe.model)` trains a byte-level BPE tokenizer, wraps it with a chat template,
builds a small decoder from `model.architecture`, pretrains it briefly on in-domain invoice text
(`ftrecipes.data.synth_invoices.pretrain_corpus`), and saves it with `save_pretrained`. Later stages
load it back with `from_pretrained(path)`, the same code path as a hub model.

Recipe keys (`recipes/model/tiny.yaml`):

- `model.architecture.family`: `llama`, `qwen2` or `qwen3` (Qwen3 always has q/k norms, so
  `qk_norm` must be true for qwen3 and false otherwise); the other architecture numbers map onto
  the transformers config of that family.
- `model.architecture.vocab_size`: the BPE vocabulary size, special tokens included.
- `model.build.corpus`: the pretraining corpus; `invoices` is the only one.
- `model.build.pretrain_steps`, `pretrain_batch_size`, `pretrain_seq_len`, `learning_rate`,
  `seed`: the pretraining run (AdamW, linear warmup then cosine decay).

The cache folder is `<cache_dir>/models/tiny-<fingerprint>/`, where the fingerprint hashes
`model.architecture`, `model.build` and `BUILD_VERSION`. It is built in a temporary folder and
renamed into place when complete, so an interrupted build is never reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from ftrecipes import paths
from ftrecipes.data import synth_invoices
from ftrecipes.errors import RecipeError

# Bump when this file changes what gets built; the generator has its own version.
BUILD_VERSION = f"tiny-v1/gen-{synth_invoices.GENERATOR_VERSION}"

SPECIAL_TOKENS = {
    "pad_token": "<|pad|>",
    "bos_token": "<|bos|>",
    "eos_token": "<|eos|>",
}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

# One turn is `<|role|>content<|eos|>`; the generation prompt is `<|assistant|>`. The prompt alone
# is a token prefix of prompt + completion, which TRL's prompt-completion format relies on.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# A pretraining corpus seed far from the seeds used for the shipped SFT file.
_CORPUS_SEED_OFFSET = 7_000_003


def fingerprint(model_cfg) -> str:
    """sha256 over the architecture, the build settings and BUILD_VERSION."""
    from omegaconf import OmegaConf

    blob = {
        "architecture": OmegaConf.to_container(model_cfg.architecture, resolve=True),
        "build": OmegaConf.to_container(model_cfg.build, resolve=True),
        "version": BUILD_VERSION,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def tiny_model_dir(model_cfg) -> Path:
    return paths.cache_dir() / "models" / f"tiny-{fingerprint(model_cfg)[:16]}"


def build_tiny_model(model_cfg, trust_remote_code: bool = False) -> Path:
    """Returns the folder of the built model, building it first when it is not cached.

    `trust_remote_code` is accepted for a uniform model-source interface; a tiny model has no
    remote code.
    """
    del trust_remote_code
    final = tiny_model_dir(model_cfg)
    if (final / "config.json").is_file():
        return final
    if model_cfg.build.corpus != "invoices":
        raise RecipeError(
            f"model.build.corpus '{model_cfg.build.corpus}' is unknown",
            hint="use model.build.corpus=invoices",
        )
    _check_family(model_cfg.architecture)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        _build_into(model_cfg, tmp)
        for path in [tmp, *tmp.iterdir()]:  # mkdtemp makes the folder private
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_family(arch) -> None:
    if arch.family not in ("llama", "qwen2", "qwen3"):
        raise RecipeError(
            f"model.architecture.family '{arch.family}' cannot be built locally",
            hint="use llama, qwen2 or qwen3",
        )
    if arch.qk_norm != (arch.family == "qwen3"):
        raise RecipeError(
            f"model.architecture.qk_norm={arch.qk_norm} does not exist for family '{arch.family}'",
            hint="qk_norm is true for qwen3 and false for llama and qwen2",
        )


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _build_into(model_cfg, out: Path) -> None:
    import torch

    torch.set_num_threads(_threads())
    build = model_cfg.build
    started = time.time()
    tokens_needed = build.pretrain_steps * build.pretrain_batch_size * build.pretrain_seq_len
    docs = _corpus(build.seed, tokens_needed)
    tokenizer = train_tokenizer(docs[:4000], model_cfg.architecture.vocab_size)
    stream = _token_stream(tokenizer, docs)
    model = _init_model(model_cfg.architecture, tokenizer, build.seed)
    final_loss = _pretrain(model, stream, build)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "fingerprint": fingerprint(model_cfg),
        "build_version": BUILD_VERSION,
        "pretrain_tokens": build.pretrain_steps * build.pretrain_batch_size * build.pretrain_seq_len,
        "final_loss": final_loss,
        "seconds": round(time.time() - started, 1),
    }
    (out / "ftrecipes_build.json").write_text(json.dumps(info, indent=2) + "\n")


def _corpus(seed: int, tokens_needed: int) -> list[str]:
    # Documents average about 70 tokens; 30% extra avoids repeating the corpus.
    n_docs = max(1000, int(tokens_needed / 70 * 1.3))
    return list(synth_invoices.pretrain_corpus(n_docs, seed + _CORPUS_SEED_OFFSET))


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE with single-digit tokens, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values()) + ROLE_TOKENS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
    )


def _token_stream(tokenizer, docs: list[str]) -> list[int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    stream: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False):
        stream.append(bos)
        stream.extend(enc.ids)
        stream.append(eos)
    return stream


def _init_model(arch, tokenizer, seed: int):
    import torch
    import transformers

    config_cls = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
    }[arch.family]
    if len(tokenizer) > arch.vocab_size:
        raise RecipeError(f"the tokenizer has {len(tokenizer)} tokens, more than model.architecture.vocab_size")
    kwargs = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=arch.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(arch.rope_theta)},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch.family != "qwen2":  # Qwen2 derives head_dim and always has q/k/v biases
        kwargs.update(head_dim=arch.head_dim, attention_bias=arch.attention_bias)
    config = config_cls(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _pretrain(model, stream: list[int], build) -> float:
    """Next-token training on packed windows of the token stream; returns the last loss."""
    import torch
    from tqdm.auto import tqdm

    seq, batch, steps = build.pretrain_seq_len, build.pretrain_batch_size, build.pretrain_steps
    windows = torch.tensor(stream[: (len(stream) // seq) * seq]).view(-1, seq)
    gen = torch.Generator().manual_seed(build.seed)
    order = torch.randperm(len(windows), generator=gen)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=build.learning_rate,
        betas=(0.9, 0.95),
    )
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(steps), desc="pretraining tiny base", unit="step")
    for step in bar:
        idx = order[(torch.arange(batch) + step * batch) % len(order)]
        ids = windows[idx]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return loss_value
