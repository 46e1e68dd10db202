"""Reuses TRL's tokenized (and packed) SFT datasets across runs with the same data and settings.

SFTTrainer tokenizes the rows, builds the labels, packs and shuffles them every time it is built:
our rows reach it as an in-memory `Dataset`, which `datasets` never caches. That is about 1 s
for the 999 alpaca demo rows on 2 cores and minutes for a large set, paid again by every run of a
sweep, a retry or a resume over the same prepared data. Like Axolotl's `dataset_prepared_path`
and LLaMA-Factory's `tokenized_path`, this keeps the result: the first run saves what TRL built
to `$FTRECIPES_CACHE/tokenized/<key>/{train,validation}` (Arrow, memory-mapped on load); a later
run with the same key hands those to SFTTrainer with `dataset_kwargs.skip_prepare_dataset`.

The key hashes everything TRL's preparation reads: the sha256 of the prepared
`run_dir/data/{train,validation}.jsonl`, the tokenizer (its full definition, chat template and
special tokens), every SFTConfig field that TrainingArguments does not have (max_length, packing,
its strategy, completion_only_loss, dataset_text_field, eos_token, ...), the seed (TRL shuffles
with it) and the versions of TRL, datasets, transformers and tokenizers. Anything else a run
changes (learning rate, method, batch size, optimizer) reuses the same entry.

Recipe key: `data.cache.enabled` (the same switch as the prepared-data cache). Only rank 0
writes, into a temporary folder renamed into place, so a concurrent reader never sees half an
entry; any problem reading or writing the cache falls back to TRL's own preparation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ftrecipes import paths
from ftrecipes.data.cache import file_sha256, tokenizer_hash

CACHE_VERSION = "sft-tokenized-v1"
SPLITS = ("train", "validation")


def _versions() -> dict:
    found = {}
    for name in ("trl", "datasets", "transformers", "tokenizers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def preparation_settings(args) -> dict:
    """The SFTConfig fields TRL's dataset preparation may read: all of SFTConfig's own fields
    (those TrainingArguments lacks), plus the seeds."""
    from transformers import TrainingArguments

    shared = {field.name for field in dataclasses.fields(TrainingArguments)}
    own = {field.name: getattr(args, field.name) for field in dataclasses.fields(args)
           if field.name not in shared}
    return {**own, "seed": args.seed, "data_seed": args.data_seed}


def cache_key(recipe, run_dir: Path, args, tokenizer) -> str | None:
    """The entry's key, or None when `data.cache.enabled` is off or the tokenizer has no
    `tokenizers` definition to hash."""
    if not recipe.data.cache.enabled:
        return None
    files = {}
    for split in SPLITS:
        path = Path(run_dir) / "data" / f"{split}.jsonl"
        files[split] = file_sha256(path) if path.is_file() else None
    try:
        tokenizer_id = tokenizer_hash(tokenizer)
    except AttributeError:  # a tokenizer without a `tokenizers` backend: nothing to key it by
        return None
    blob = {"version": CACHE_VERSION, "files": files, "tokenizer": tokenizer_id,
            "settings": preparation_settings(args), "packages": _versions()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def entry_folder(key: str) -> Path:
    return paths.cache_dir() / "tokenized" / key[:24]


def load(key: str | None, has_eval: bool):
    """`(train, validation or None)` saved under `key`, or None when there is no complete entry.

    The caller passes them to SFTTrainer with `dataset_kwargs={"skip_prepare_dataset": True}`.
    """
    if key is None:
        return None
    folder = entry_folder(key)
    if not (folder / "key").is_file():
        return None
    from datasets import load_from_disk

    try:
        if (folder / "key").read_text().strip() != key:
            return None
        train = load_from_disk(str(folder / "train"))
        validation = load_from_disk(str(folder / "validation")) if has_eval else None
    except (OSError, ValueError):
        return None
    return train, validation


def save(key: str | None, train, validation) -> Path | None:
    """Saves TRL's prepared datasets under `key` (rank 0 only); the folder, or None."""
    from ftrecipes.distributed import runtime

    if key is None or not runtime.is_main() or (entry_folder(key) / "key").is_file():
        return None
    if not all(hasattr(data, "save_to_disk") for data in (train, validation) if data is not None):
        return None  # an IterableDataset has nothing to save
    folder = entry_folder(key)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        train.save_to_disk(str(partial / "train"))
        if validation is not None:
            validation.save_to_disk(str(partial / "validation"))
        (partial / "key").write_text(key + "\n")  # last: marks the entry complete
        os.replace(partial, folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # a read-only or full cache only costs the time
        return None
    return folder
