"""Build the tiny quickstart base model locally, once, and cache it.

`build_tiny_model(recipe.model)` trains a byte-level BPE tokenizer, wraps it with a chat template,
builds a small decoder from `model.architecture`, pretrains it briefly on in-domain invoice text
(`ftrecipes.data.synth_invoices.pretrain_corpus`, next-token loss on every token), and saves it
with `save_pretrained`. Later stages load it back with `from_pretrained(path)`, the same code path
as a hub model.

The quickstart task reads fields out of a note, so the model must learn to look a token up in the
prompt and copy it. Two choices make that skill appear within a CPU budget of minutes instead of
after a long plateau:

- the tokenizer gives spaces their own token and keeps words, numbers up to 999 and years whole,
  so `Northwind` or `59` are the same token in the note, in a ledger line and in JSON;
- every attention layer starts with value and output projections that pass the attended token's
  embedding through unchanged (`_copy_prior`); with tied embeddings, attending to a token then
  already raises that token's logit, and training only has to learn where to look.

The base never sees the task's instruction or JSON schema, so its exact match on the task is 0.

Recipe keys (`recipes/model/tiny.yaml`):

- `model.architecture.family`: `llama`, `qwen2` or `qwen3` (Qwen3 always has q/k norms, so
  `qk_norm` must be true for qwen3 and false otherwise); the other architecture numbers map onto
  the transformers config of that family.
- `model.architecture.vocab_size`: the size of the embedding table; the BPE vocabulary (special
  tokens included) must fit in it.
- `model.build.corpus`: the pretraining corpus; `invoices` is the only one.
- `model.build.pretrain_steps` x `pretrain_batch_size` documents, each cut to `pretrain_seq_len`
  tokens; `learning_rate` (AdamW, linear warmup then cosine decay to 10%); `seed` (corpus, init).

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
BUILD_VERSION = f"tiny-v3/gen-{synth_invoices.GENERATOR_VERSION}"

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

# The pretraining corpus seed is far from the seed of the shipped SFT file (1234).
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
        missing = [name for name in ("config.json", "model.safetensors") if not (tmp / name).is_file()]
        if missing:
            raise RuntimeError(f"the tiny model build wrote no {', '.join(missing)} into {tmp}")
        if final.is_dir() and not (final / "config.json").is_file():
            _discard_incomplete(final)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _discard_incomplete(final: Path) -> None:
    """Moves a cached folder without config.json (left by an interrupted or older build) out of
    the way, so the fresh build can take its name."""
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}-incomplete-", dir=final.parent))
    try:
        os.rename(final, aside / "old")
    except OSError:  # another process replaced it meanwhile
        pass
    shutil.rmtree(aside, ignore_errors=True)


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
    n_docs = build.pretrain_steps * build.pretrain_batch_size
    docs = list(synth_invoices.pretrain_corpus(n_docs, build.seed + _CORPUS_SEED_OFFSET))
    tokenizer = train_tokenizer(docs[:6000], model_cfg.architecture.vocab_size)
    encoded = tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    ids = [[tokenizer.bos_token_id, *e.ids, tokenizer.eos_token_id][: build.pretrain_seq_len] for e in encoded]
    model = _init_model(model_cfg.architecture, tokenizer, build.seed)
    final_loss = _pretrain(model, ids, build, tokenizer.pad_token_id)
    # transformers 5 writes weights only on global rank 0 once a process group exists, but this
    # build is private to this process (each node of a multi-node run may need its own copy).
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "fingerprint": fingerprint(model_cfg),
        "build_version": BUILD_VERSION,
        "documents": len(ids),
        "final_loss": final_loss,
        "seconds": round(time.time() - started, 1),
    }
    (out / "ftrecipes_build.json").write_text(json.dumps(info, indent=2) + "\n")


# Spaces are tokens of their own, so a word is the same token after a space, a quote or an '=';
# years and numbers up to 999 stay whole, so an amount is one token to copy.
_PRE_TOKENIZER_PATTERN = r"20\d\d|\d{1,3}|[A-Za-z]+|\s|[^\sA-Za-z\d]+"
# Every number the task can ask for is in the vocabulary, however rare in the sample.
_NUMBERS = " ".join(str(n) for n in range(1000)) + " " + " ".join(str(y) for y in range(2000, 2100))


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE trained on `texts`, wrapped as a transformers tokenizer with CHAT_TEMPLATE."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRE_TOKENIZER_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()) + ROLE_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_NUMBERS] * 3 + list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
        **SPECIAL_TOKENS,
    )


def _init_model(arch, tokenizer, seed: int):
    import torch
    import transformers

    config_cls = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
    }[arch.family]
    if len(tokenizer) > arch.vocab_size:
        raise RecipeError(
            f"the tokenizer has {len(tokenizer)} tokens, more than model.architecture.vocab_size={arch.vocab_size}",
            hint=f"model.architecture.vocab_size={len(tokenizer)} or more",
        )
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
    _copy_prior(model)
    return model


def _copy_prior(model) -> None:
    """Starts every attention layer as a copier: values and outputs map channels to themselves.

    Head h's value projection reads hidden channels [g*d, (g+1)*d) of its key/value group g
    (d = head_dim) and its output projection writes them back to the same channels, averaged
    over the heads of the group. What a head attends to then reaches the residual stream as that
    token's own embedding, and with tied embeddings raises that token's logit. From a random
    init, this copying path forms only after a plateau longer than the CPU budget. Queries, keys
    and MLPs keep their random init, and training is free to change all of it.
    """
    import torch

    config = model.config
    hidden, n_heads, n_kv = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
    group = n_heads // n_kv
    for layer in model.get_decoder().layers:
        attn = layer.self_attn
        head_dim = attn.head_dim
        with torch.no_grad():
            value = torch.zeros_like(attn.v_proj.weight)
            rows = torch.arange(value.shape[0])
            value[rows, rows % hidden] = 1.0
            output = torch.zeros_like(attn.o_proj.weight)
            cols = torch.arange(output.shape[1])
            kv_rows = (cols // head_dim // group) * head_dim + cols % head_dim
            output[kv_rows % hidden, cols] = 1.0 / group
            attn.v_proj.weight.copy_(value)
            attn.o_proj.weight.copy_(output)
            if attn.v_proj.bias is not None:
                attn.v_proj.bias.zero_()


def _pretrain(model, docs: list[list[int]], build, pad_id: int) -> float:
    """Next-token training on every token of the documents; returns the last loss."""
    import torch
    from tqdm.auto import tqdm

    steps, batch = build.pretrain_steps, build.pretrain_batch_size
    optim = torch.optim.AdamW(model.parameters(), lr=build.learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 50)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return max(0.1, 0.5 * (1 + math.cos(math.pi * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(steps), desc="pretraining the tiny base", unit="step")
    for step in bar:
        ids, mask = _collate(docs[step * batch : (step + 1) * batch], pad_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
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


def _collate(docs: list[list[int]], pad_id: int):
    import torch

    width = max(len(doc) for doc in docs)
    ids = torch.full((len(docs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(docs), width), dtype=torch.long)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)] = torch.tensor(doc)
        mask[row, : len(doc)] = 1
    return ids, mask
