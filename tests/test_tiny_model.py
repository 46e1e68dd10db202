"""The tiny base model: built once, cached atomically, loaded back with from_pretrained."""

from __future__ import annotations

import time

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftrecipes.config.resolve import resolve
from ftrecipes.errors import RecipeError
from ftrecipes.model import tiny

MICRO = [
    "model.architecture.hidden_size=32",
    "model.architecture.num_hidden_layers=1",
    "model.architecture.num_attention_heads=2",
    "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=16",
    "model.architecture.intermediate_size=64",
    "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=3",
    "model.build.pretrain_batch_size=4",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRECIPES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def contains(tokens: list[str], part: list[str]) -> bool:
    return any(tokens[i : i + len(part)] == part for i in range(len(tokens)))


def model_cfg(*overrides):
    return resolve([*MICRO, *overrides]).recipe.model


def test_second_build_reuses_the_cache(cache):
    cfg = model_cfg()
    first = tiny.build_tiny_model(cfg)
    assert first.parent == cache / "models" and first.name.startswith("tiny-")
    files = {p.name for p in first.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "ftrecipes_build.json"} <= files
    assert not any(name.endswith(".bin") for name in files)
    started = time.perf_counter()
    assert tiny.build_tiny_model(cfg) == first
    assert time.perf_counter() - started < 1.0
    assert [p.name for p in (cache / "models").iterdir()] == [first.name]  # no temp folders left


def test_fingerprint_follows_architecture_and_build():
    base = tiny.fingerprint(model_cfg())
    assert base == tiny.fingerprint(model_cfg())
    assert base != tiny.fingerprint(model_cfg("model.architecture.hidden_size=48"))
    assert base != tiny.fingerprint(model_cfg("model.build.seed=1"))
    assert base == tiny.fingerprint(model_cfg("model.attn_implementation=eager"))


def test_interrupted_build_leaves_nothing_to_reuse(cache, monkeypatch):
    def explode(cfg, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "_build_into", explode)
    with pytest.raises(KeyboardInterrupt):
        tiny.build_tiny_model(model_cfg())
    assert list((cache / "models").iterdir()) == []


def test_built_model_loads_and_chats(cache):
    path = tiny.build_tiny_model(model_cfg())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    assert model.config.model_type == "llama" and model.config.vocab_size == 1024
    assert tokenizer.pad_token and tokenizer.eos_token and tokenizer.bos_token
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Invoice INV-4821 from Acme Corp"}]
    completion = [{"role": "assistant", "content": '{"id": "INV-4821"}'}]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|bos|><|system|>Be brief.<|eos|><|user|>") and text.endswith("<|assistant|>")
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion, return_dict=True)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids  # what TRL's prompt-completion format needs
    assert full_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(full_ids[len(prompt_ids) :], skip_special_tokens=True) == '{"id": "INV-4821"}'
    # numbers and names are the same tokens wherever they appear, so copying them is learnable
    for answer, sentence in [('"4821"', "invoice INV-4821, thanks"), ('"Acme Corp"', "from Acme Corp, dated")]:
        assert contains(tokenizer.tokenize(sentence), tokenizer.tokenize(answer)[1:-1])


def test_qwen3_family_builds(cache):
    cfg = model_cfg("model.architecture.family=qwen3", "model.architecture.qk_norm=true")
    model = AutoModelForCausalLM.from_pretrained(tiny.build_tiny_model(cfg))
    assert model.config.model_type == "qwen3"


def test_qk_norm_must_match_the_family(cache):
    with pytest.raises(RecipeError, match="qk_norm"):
        tiny.build_tiny_model(model_cfg("model.architecture.qk_norm=true"))
