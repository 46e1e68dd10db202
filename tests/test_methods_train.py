"""Every method trains under SFT on a small tiny model, for real, through the launcher.

One module-scoped base and prepared split feed one test per method. Each test runs
`python -m ftrecipes.launch ... method=NAME stages=[train]` in-process (the worker writes
stages.json), then checks: the loss went down; the trainable fraction in stages.json is the one
the plan predicts and fits the method; the saved adapter (or model) reloads, beats the base on
held-out perplexity and generates; and export merges it (logits equal to the adapter model's
within 1e-4) or, for prompt-learning methods, keeps the adapter and says why.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from conftest import run_cli
from ftrecipes.config.resolve import resolve
from ftrecipes.data import synth_invoices
from ftrecipes.data.pipeline import run_prepare
from ftrecipes.evaluate.heldout import perplexity
from ftrecipes.export.merge import run_export
from ftrecipes.model.load import load_model_and_tokenizer, load_tuned
from ftrecipes.model.methods import apply_method
from ftrecipes.plan import params

SMALL = [
    "recipe=quickstart",
    "model.architecture.hidden_size=64",
    "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2",
    "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32",
    "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=40",
    "model.build.pretrain_batch_size=16",
    "train.max_steps=16",
    "train.micro_batch_size=8",
    "train.eval_interval=1000",  # no validation passes: speed
    "logging.log_interval=2",
    "logging.progress_bars=false",
]

# Learning rates that make 16 steps on this small base move the loss (measured; the quickstart's
# table in docs/methods.md has the ones for the real quickstart).
CASES = {
    "full": ["method.learning_rate=1e-3"],
    "lora": ["method.learning_rate=5e-3"],
    "dora": ["method.learning_rate=5e-3"],
    "qlora": ["method.learning_rate=5e-3"],
    "adalora": ["method.learning_rate=1e-2", "method.deltaT=1"],
    "ia3": ["method.learning_rate=3e-2"],
    "prompt_tuning": ["method.learning_rate=3e-2", "method.num_virtual_tokens=8"],
    "p_tuning": ["method.learning_rate=1e-2", "method.num_virtual_tokens=8"],
    "p_tuning_v2": ["method.learning_rate=3e-2", "method.num_virtual_tokens=8"],
    "loha": ["method.learning_rate=5e-3"],
}
MERGED = {"lora", "dora", "qlora", "adalora", "ia3", "loha"}
# (low, high) trainable fraction of all parameters, per method.
FRACTION = {"full": (1.0, 1.0), "lora": (0.05, 0.5), "dora": (0.05, 0.5), "qlora": (0.05, 0.5),
            "adalora": (0.05, 0.5), "ia3": (0.0, 0.01), "prompt_tuning": (0.0, 0.01),
            "p_tuning": (0.0, 0.15), "p_tuning_v2": (0.0, 0.05), "loha": (0.05, 0.5)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    saved = os.environ.get("FTRECIPES_CACHE")
    os.environ["FTRECIPES_CACHE"] = str(root / "cache")
    data = root / "invoices.jsonl"
    synth_invoices.write_jsonl(synth_invoices.sft_rows(200, seed=3), data)
    overrides = [*SMALL, f"data.path={data}"]
    run_prepare(resolve(overrides).recipe, root / "prepared")
    try:
        yield root, overrides
    finally:
        if saved is None:
            os.environ.pop("FTRECIPES_CACHE", None)
        else:
            os.environ["FTRECIPES_CACHE"] = saved


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("method", list(CASES))
def test_method_trains_reloads_and_exports(prepared, method):
    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip install 'ftrecipes[qlora]'")
    root, base_overrides = prepared
    run_dir = root / method
    shutil.copytree(root / "prepared" / "data", run_dir / "data")
    overrides = [*base_overrides, f"method={method}", *CASES[method], "stages=[train]", f"run_dir={run_dir}"]
    result = run_cli(*overrides)
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    recipe = resolve(overrides).recipe

    losses = _losses(run_dir)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses

    train = json.loads((run_dir / "stages.json").read_text())["train"]
    arch = recipe.model.architecture
    assert train["trainable_params"] == params.trainable(arch, recipe.method, params.count(arch, recipe.method).total)
    low, high = FRACTION[method]
    assert low <= train["trainable_fraction"] <= high
    assert train["trainable_fraction"] == pytest.approx(train["trainable_params"] / train["total_params"])

    base, tokenizer = load_model_and_tokenizer(recipe)
    rows = [json.loads(line) for line in (run_dir / "data" / "validation.jsonl").read_text().splitlines()][:8]
    base_ppl = perplexity(base, tokenizer, rows, 8, "base")
    tuned, tokenizer = load_tuned(recipe, run_dir)
    assert perplexity(tuned, tokenizer, rows, 8, "tuned") < base_ppl
    prompt = tokenizer.apply_chat_template(rows[0]["messages"][:1], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = tuned.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > prompt["input_ids"].shape[1]

    exported = run_export(recipe, run_dir)
    if method == "full":
        assert (run_dir / "model" / "model.safetensors").is_file() and not (run_dir / "adapter").exists()
    elif method in MERGED:
        _assert_merge_matches_adapter(recipe, run_dir, prompt["input_ids"])
    else:
        assert exported["written"] == [] and "cannot be merged" in exported["note"]
        assert not (run_dir / "model").exists()
    if method != "full":
        files = {p.name for p in (run_dir / "adapter").iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    if method == "adalora":
        _assert_rank_budget_shrank(recipe, run_dir, result.out)


def _assert_rank_budget_shrank(recipe, run_dir, printed):
    """The saved allocation: every matrix at most init_r, target_r on average, not all equal."""
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    ranks = [sum(keep) for keep in config["rank_pattern"].values()]
    init_r, target_r = recipe.method.init_r, recipe.method.target_r
    assert max(ranks) <= init_r and sum(ranks) == target_r * len(ranks)
    assert len(set(ranks)) > 1  # reallocated between matrices, not cut uniformly
    assert f"adalora mean rank {init_r:.1f} (step 0) -> {target_r:.1f}" in printed
    assert config["orth_reg_weight"] == recipe.method.orth_reg_weight


def _assert_merge_matches_adapter(recipe, run_dir, ids):
    from transformers import AutoModelForCausalLM

    # QLoRA merges into the full-precision base, so that is the adapter model to compare with.
    adapter_model, _ = load_tuned(recipe, run_dir, quantize=False)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "model", use_safetensors=True)
    assert not any(tag in n for n, _ in merged.named_parameters() for tag in ("lora", "ia3", "hada"))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter_model(ids).logits, atol=1e-4, rtol=0)


def test_prompt_tuning_text_init_starts_from_the_texts_embeddings(prepared):
    _, base_overrides = prepared
    text = "Extract the invoice fields as JSON."
    recipe = resolve([*base_overrides, "method=prompt_tuning", "method.init=text", f"method.init_text='{text}'"]).recipe
    base, tokenizer = load_model_and_tokenizer(recipe)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    virtual = apply_method(base, recipe).prompt_encoder["default"].embedding.weight
    expected = base.get_input_embeddings().weight[(ids * recipe.method.num_virtual_tokens)[: recipe.method.num_virtual_tokens]]
    torch.testing.assert_close(virtual, expected)
