"""TRL's tokenized SFT rows are saved once and reused by later runs over the same data and settings
(`ftrecipes.train.tokenized_cache`, `data.cache.enabled`).

Real runs: a tiny base, the quickstart rows, TRL's SFTTrainer; no mocks.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import SMALL_MODEL, private_model_cache
from ftrecipes.config.resolve import resolve

SMALL = [*SMALL_MODEL, "logging.progress_bars=false", "train.max_steps=3", "train.micro_batch_size=4",
         "logging.log_interval=1", "train.warmup_ratio=0", "method.learning_rate=5e-3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with private_model_cache(tmp_path_factory.mktemp("tokenized-cache"), SMALL) as root:
        yield root


@pytest.fixture(scope="module")
def prepared(cache, tmp_path_factory):
    """A run dir holding the prepare stage's output, copied by each test."""
    from ftrecipes.data.pipeline import run_prepare

    folder = tmp_path_factory.mktemp("prepared") / "run"
    run_prepare(resolve(SMALL).recipe, folder)
    return folder


def train(prepared, run_dir, overrides=(), capsys=None) -> tuple[list[float], str]:
    from ftrecipes.train.stage import run_train

    shutil.copytree(prepared, run_dir)
    run_train(resolve([*SMALL, *overrides]).recipe, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out = capsys.readouterr().out if capsys else ""
    return [r["loss"] for r in rows if "loss" in r and not any(k.startswith("eval_") for k in r)], out


def test_a_second_run_reuses_the_tokenized_rows_and_trains_identically(cache, prepared, tmp_path, capsys):
    first, out = train(prepared, tmp_path / "first", ["objective.packing=true"], capsys)
    assert "tokenized rows saved to" in out and "tokenized rows from" not in out
    entries = list((cache / "tokenized").iterdir())
    assert len(entries) == 1 and (entries[0] / "key").is_file() and (entries[0] / "train").is_dir()

    # another learning rate: TRL's preparation does not read it, so the entry is reused
    second, out = train(prepared, tmp_path / "second", ["objective.packing=true", "method.learning_rate=5e-3"],
                        capsys)
    assert f"tokenized rows from {entries[0]}" in out
    assert len(first) == 3 and second == pytest.approx(first, rel=1e-5)

    # packing off changes what TRL builds: a new entry, and training still works
    unpacked, out = train(prepared, tmp_path / "unpacked", [], capsys)
    assert "tokenized rows saved to" in out and len(list((cache / "tokenized").iterdir())) == 2
    assert len(unpacked) == 3


def test_the_key_follows_what_trl_reads_and_nothing_else(cache, prepared, tmp_path):
    from ftrecipes.model.load import load_tokenizer, resolve_model_path
    from ftrecipes.train.sft import sft_config
    from ftrecipes.train.tokenized_cache import cache_key

    run_dir = tmp_path / "run"
    shutil.copytree(prepared, run_dir)

    def key(*overrides, tokenizer=None):
        recipe = resolve([*SMALL, *overrides]).recipe
        return cache_key(recipe, run_dir, sft_config(recipe, run_dir, has_eval=True),
                         tokenizer or load_tokenizer(recipe, resolve_model_path(recipe)))

    base = key()
    assert key("method.learning_rate=1e-4", "method.r=16", "train.micro_batch_size=2") == base
    for change in (["data.max_seq_len=128"], ["objective.packing=true"], ["seed=7"],
                   ["objective.completion_only_loss=false"]):
        assert key(*change) != base, change
    recipe = resolve(SMALL).recipe
    tokenizer = load_tokenizer(recipe, resolve_model_path(recipe))
    tokenizer.chat_template = tokenizer.chat_template + "{# another template #}"
    assert key(tokenizer=tokenizer) != base
    with (run_dir / "data" / "train.jsonl").open("a") as f:  # one more prepared row
        f.write(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "hello"}]}) + "\n")
    assert key() != base
    assert key("data.cache.enabled=false") is None


def test_an_incomplete_entry_is_ignored_and_disabled_caching_writes_nothing(cache, prepared, tmp_path, capsys):
    from ftrecipes.train.tokenized_cache import entry_folder, load

    assert load(None, has_eval=False) is None
    half = entry_folder("f" * 64)
    (half / "train").mkdir(parents=True)  # an interrupted writer leaves no key file
    assert load("f" * 64, has_eval=False) is None

    before = sorted(p.name for p in (cache / "tokenized").iterdir()) if (cache / "tokenized").is_dir() else []
    losses, out = train(prepared, tmp_path / "off", ["data.cache.enabled=false", "seed=11"], capsys)
    assert len(losses) == 3 and "tokenized rows" not in out
    assert sorted(p.name for p in (cache / "tokenized").iterdir()) == before
