"""Find the base model of a recipe and load it with its tokenizer.

Every model, the tiny built one included, goes through `from_pretrained(path)`.

Recipe keys:

- `model.source`: `build` (the tiny model, built and cached by `ftrecipes.model.tiny`), `hub`
  (`model.path` is a Hugging Face id at `model.revision`, read from the local cache or
  downloaded), or `local` (`model.path` is a folder written by `save_pretrained`).
- `model.dtype`: `float32`, `bfloat16` or `float16`.
- `model.attn_implementation`: passed to `from_pretrained` (`sdpa`, `eager`, `flash_attention_2`).
- `trust_remote_code`: passed to `from_pretrained` for the model and the tokenizer.
- `method.name`: a method registered with `quantized_base` (`qlora`) loads the base through
  bitsandbytes (`method.quant_type`, `method.double_quant`, `method.compute_dtype`; see
  `ftrecipes.methods.quantized`), on the device of `hardware.accelerator`, and checks that its
  layers really are quantized.

Raises `EnvironmentProblem` when a local folder is missing, or a hub model is neither cached nor
downloadable, or bitsandbytes is missing or cannot run on the hardware; the message says what is
missing and how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftrecipes.errors import EnvironmentProblem, RecipeError

# Used only for a base model whose tokenizer has no chat template (a console note says so).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] + ':\n' + message['content'] + '\n\n' }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}"
)


def resolve_model_path(recipe) -> str:
    """The folder or hub id that `from_pretrained` should read for `recipe.model`."""
    model = recipe.model
    if model.source == "build":
        from ftrecipes.model.tiny import build_tiny_model

        return str(build_tiny_model(model, trust_remote_code=recipe.trust_remote_code))
    if model.source == "local":
        return str(_local_folder(model.path))
    if model.source == "hub":
        return _hub_model(model.path, model.revision)
    raise RecipeError(
        f"model.source '{model.source}' is unknown", hint="use build, hub or local"
    )


def _local_folder(path: str | None) -> Path:
    if not path:
        raise RecipeError("model.source=local needs model.path", hint="model.path=/path/to/model")
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise EnvironmentProblem(
            f"the local model folder '{folder}' does not exist or has no config.json",
            hint="point model.path at a folder written by save_pretrained (config.json, "
            "*.safetensors, tokenizer files)",
        )
    return folder


def _hub_model(repo_id: str | None, revision: str | None) -> str:
    if not repo_id:
        raise RecipeError("model.source=hub needs model.path", hint="model.path=org/name")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from ftrecipes.data.readers import hub_reachable

    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return repo_id
    hint = (
        f"connect to the network (and set HF_TOKEN for gated models), or download it once with "
        f"`hf download {repo_id}`, or use model.source=local model.path=/path/to/{repo_id.split('/')[-1]}"
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise EnvironmentProblem(f"model '{repo_id}' is not in the local Hugging Face cache and {why}", hint=hint)
    try:
        hf_hub_download(repo_id, "config.json", revision=revision)
    except Exception as exc:  # unknown repo, gated repo, network error: all end the same way for users
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise EnvironmentProblem(
            f"model '{repo_id}' could not be fetched from the hub ({type(exc).__name__}: {first_line})",
            hint=hint,
        ) from None
    return repo_id


def _revision(recipe, path: str) -> str | None:
    """`model.revision` applies to the hub id only, not to local folders such as run_dir/model."""
    return recipe.model.revision if recipe.model.source == "hub" and path == recipe.model.path else None


def torch_dtype(name: str):
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise RecipeError(f"model.dtype '{name}' is unknown", hint="use float32, bfloat16 or float16")
    return dtypes[name]


def load_tokenizer(recipe, path: str):
    """The tokenizer at `path`, with a pad token and a chat template."""
    from ftrecipes.model.tokenizer_class import tokenizer_class

    try:
        tokenizer = tokenizer_class(path, recipe.trust_remote_code).from_pretrained(
            path, revision=_revision(recipe, path), trust_remote_code=recipe.trust_remote_code
        )
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot load the tokenizer of '{path}': {exc}",
            hint="check that the model folder or cache has its tokenizer files",
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        print(f"ftrecipes: the tokenizer of '{path}' has no pad token; using eos as pad")
    if not tokenizer.chat_template:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        print(f"ftrecipes: the tokenizer of '{path}' has no chat template; using '### role:' turns")
    return tokenizer


def load_model_and_tokenizer(recipe, path: str | None = None, quantize: bool | None = None, shard: bool = False):
    """`(model, tokenizer)` for `recipe.model`, read from `path` (default: the resolved base).

    `quantize` (default: whether the method wants a quantized base) loads it through bitsandbytes;
    export passes False to merge an adapter into full-precision weights. `shard` (the train
    stage) loads each rank's FSDP2 shard when `hardware.strategy=fsdp2` runs on several ranks
    (`ftrecipes.distributed.sharding`).
    """
    from transformers import AutoModelForCausalLM

    from ftrecipes.methods import get

    path = str(path or resolve_model_path(recipe))
    quantize = get(recipe.method.name).quantized_base if quantize is None else quantize
    extra = {}
    if quantize:
        from ftrecipes.methods import quantized

        extra = {"quantization_config": quantized.quantization_config(recipe),
                 "device_map": quantized.device_map(recipe)}
    if shard:
        from ftrecipes.distributed import sharding

        if sharding.wants_sharded_load(recipe):
            extra.pop("device_map", None)  # the FSDP mesh places each shard
            extra["distributed_config"] = sharding.fsdp2_config(recipe)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            revision=_revision(recipe, path),
            dtype=torch_dtype(recipe.model.dtype),
            attn_implementation=recipe.model.attn_implementation,
            trust_remote_code=recipe.trust_remote_code,
            use_safetensors=True,
            **extra,
        )
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot load the model at '{path}': {exc}",
            hint="the folder or cache needs config.json and *.safetensors weights",
        ) from None
    if quantize:
        quantized.finish_load(model, recipe)
    if "distributed_config" in extra:
        print(sharding.describe(model), flush=True)  # one line per rank, in that rank's log
    tokenizer = load_tokenizer(recipe, path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_tuned(recipe, run_dir: Path, base=None, quantize: bool | None = None):
    """`(model, tokenizer)` after training: the base plus `run_dir/adapter/` for adapter methods
    (`base` may pass an already loaded `(model, tokenizer)`; `quantize` as in
    `load_model_and_tokenizer`), else `run_dir/model/`."""
    from ftrecipes.model.methods import ADAPTER_METHODS

    run_dir = Path(run_dir)
    if recipe.method.name in ADAPTER_METHODS:
        from peft import PeftModel

        adapter = run_dir / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise EnvironmentProblem(f"no trained adapter in {adapter}", hint="run the train stage first")
        model, tokenizer = base if base is not None else load_model_and_tokenizer(recipe, quantize=quantize)
        return PeftModel.from_pretrained(model, adapter), tokenizer
    folder = run_dir / "model"
    if not (folder / "config.json").is_file():
        raise EnvironmentProblem(f"no trained model in {folder}", hint="run the train stage first")
    return load_model_and_tokenizer(recipe, folder)
