"""The tokenizer class found from tokenizer_config.json is the one AutoTokenizer picks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ftrecipes.model.tiny import train_tokenizer
from ftrecipes.model.tokenizer_class import VERIFIED, tokenizer_class

TEXTS = ["Invoice from Acme: total 120 USD, paid.", "<|user|>hello<|eos|> 2024-05-01", "发票 总额 300"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(TEXTS * 50, 400).save_pretrained(folder)
    return folder


def _set_class(folder, name, **extra):
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(tokenizer_class=name, **extra)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("name,model_type", [(n, t) for n, types in VERIFIED.items() for t in types])
def test_verified_classes_match_autotokenizer(saved, tmp_path, name, model_type):
    from transformers import AutoTokenizer  # noqa: F811 (also the sentinel for "not direct")

    folder = tmp_path / "m"
    folder.mkdir()
    for f in saved.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    _set_class(folder, name)
    if model_type:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert tokenizer_class(str(folder)) is not AutoTokenizer
    direct = tokenizer_class(str(folder)).from_pretrained(str(folder))
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert type(direct) is type(auto)
    assert direct.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()
    assert [direct(t)["input_ids"] for t in TEXTS] == [auto(t)["input_ids"] for t in TEXTS]
    assert direct.chat_template == auto.chat_template and direct.special_tokens_map == auto.special_tokens_map


def test_remote_code_and_unknown_classes_go_through_autotokenizer(saved, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "m"
    folder.mkdir()
    for f in saved.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    for unverified in ("NoSuchTokenizer", "LlamaTokenizerFast", "GPT2Tokenizer"):
        _set_class(folder, unverified)
        assert tokenizer_class(str(folder)) is AutoTokenizer
    for name, model_type in (("TokenizersBackend", "qwen2"), ("Qwen2Tokenizer", "mistral")):
        _set_class(folder, name)
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert tokenizer_class(str(folder)) is AutoTokenizer  # AutoTokenizer picks another class here
    (folder / "config.json").unlink()
    _set_class(folder, "Qwen2TokenizerFast", auto_map={"AutoTokenizer": ["x.Tok", None]})
    assert tokenizer_class(str(folder)) is AutoTokenizer
    _set_class(folder, "Qwen2TokenizerFast")
    assert tokenizer_class(str(folder), trust_remote_code=True) is AutoTokenizer


def test_loading_a_named_tokenizer_does_not_import_torch(saved):
    code = ("import sys; from ftrecipes.model.tokenizer_class import tokenizer_class; "
            f"tok = tokenizer_class({str(saved)!r}).from_pretrained({str(saved)!r}); "
            "print(len(tok('a b c')['input_ids']) > 0, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
