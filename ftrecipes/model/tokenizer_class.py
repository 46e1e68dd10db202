"""The tokenizer class of a model folder, found without importing torch.

`AutoTokenizer` reads the model's config.json and imports its configuration module, which imports
torch: about 2 s per process, paid by every prepare run although tokenizing needs no torch. When
the folder's tokenizer_config.json names its class (`tokenizer_class`, what `save_pretrained`
writes) carries no remote code (`auto_map`), and the pair (declared class, config.json `model_type`) is in
`VERIFIED`, we take that class from transformers' top level directly. AutoTokenizer has
model-specific rules (a generic class on a qwen2 model becomes Qwen2Tokenizer, a declared
LlamaTokenizer with a ByteLevel tokenizer.json becomes TokenizersBackend, some hub classes are
known wrong), so only pairs that tests/test_tokenizer_class.py shows AutoTokenizer resolves to the
same class with equal encodings are listed; anything else goes through AutoTokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

# declared class -> config.json model types (None: no config.json) where AutoTokenizer keeps it:
# the generic fast tokenizer (our tiny model's) and the Qwen2/2.5/3 one.
_GENERIC = (None, "llama", "qwen3")
_QWEN = (None, "qwen2", "qwen3")
VERIFIED = {"TokenizersBackend": _GENERIC, "PreTrainedTokenizerFast": _GENERIC,
            "Qwen2Tokenizer": _QWEN, "Qwen2TokenizerFast": _QWEN}


def tokenizer_class(path: str, trust_remote_code: bool = False):
    """The class whose `from_pretrained(path)` loads the tokenizer at `path`."""
    import transformers

    named = _named_class(Path(path)) if not trust_remote_code else None
    for name in (named, named[: -len("Fast")] if named and named.endswith("Fast") else None):
        cls = getattr(transformers, name, None) if name else None
        if isinstance(cls, type) and hasattr(cls, "from_pretrained"):
            return cls
    from transformers import AutoTokenizer

    return AutoTokenizer


def _named_class(folder: Path) -> str | None:
    config = folder / "tokenizer_config.json"
    if not (folder / "tokenizer.json").is_file() or not config.is_file():
        return None
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return None
    name = values.get("tokenizer_class")
    if values.get("auto_map") or name not in VERIFIED:
        return None
    model_type = None
    if (folder / "config.json").is_file():
        try:
            model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        except ValueError:
            return None
    return name if model_type in VERIFIED[name] else None
