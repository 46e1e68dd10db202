"""prepare -> train -> evaluate -> export on a smaller tiny model, for real (no mocks).

One session-scoped run (under a minute on two CPU cores) feeds every test here. The quickstart's
accuracy bar (`python -m ftrecipes.launch recipe=quickstart`, a few minutes) is not checked here.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftrecipes.config.resolve import resolve
from ftrecipes.data import synth_invoices
from ftrecipes.data.pipeline import run_prepare
from ftrecipes.evaluate.heldout import run_evaluate
from ftrecipes.export.merge import run_export
from ftrecipes.model.load import resolve_model_path
from ftrecipes.train.sft import run_train

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
    "train.max_steps=24",
    "train.micro_batch_size=8",
    "train.eval_interval=12",
    "evaluate.max_samples=16",
    "evaluate.batch_size=8",
    "evaluate.max_new_tokens=48",
    "logging.log_interval=4",
    "logging.progress_bars=false",
]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    saved = os.environ.get("FTRECIPES_CACHE")
    os.environ["FTRECIPES_CACHE"] = str(root / "cache")
    data = root / "invoices.jsonl"
    synth_invoices.write_jsonl(synth_invoices.sft_rows(200, seed=3), data)
    recipe = resolve([*SMALL, f"data.path={data}"]).recipe
    run_dir = root / "run"
    results = {}
    try:
        for name, stage in [("prepare", run_prepare), ("train", run_train), ("evaluate", run_evaluate), ("export", run_export)]:
            results[name] = stage(recipe, run_dir)
        yield recipe, run_dir, results
    finally:
        if saved is None:
            os.environ.pop("FTRECIPES_CACHE", None)
        else:
            os.environ["FTRECIPES_CACHE"] = saved


def test_prepare_writes_chat_rows(run):
    _, run_dir, results = run
    assert results["prepare"]["splits"] == {"train": 160, "validation": 20, "test": 20}
    row = json.loads((run_dir / "data" / "train.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


def test_loss_decreases_and_metrics_are_logged(run):
    _, run_dir, results = run
    train = results["train"]
    assert train["steps"] == 24
    assert train["last_loss"] < train["first_loss"]
    assert 0 < train["trainable_params"] < train["total_params"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 4, 8, 12, 16, 20, 24]
    assert all({"epoch", "learning_rate", "grad_norm"} <= r.keys() for r in steps)
    assert [r["step"] for r in rows if "eval_loss" in r] == [12, 24]


def test_adapter_and_merged_model_agree(run):
    recipe, run_dir, _ = run
    adapter_files = {p.name for p in (run_dir / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter_files
    assert not any(f.endswith(".bin") for f in adapter_files)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    ids = tokenizer("Invoice INV-4821 from Acme Corp, dated 2024-03-15.", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(recipe), use_safetensors=True)
    with torch.no_grad():
        base_logits = base(ids).logits
        tuned_logits = PeftModel.from_pretrained(base, run_dir / "adapter")(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(run_dir / "model", use_safetensors=True)
        merged_logits = merged(ids).logits
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)
    torch.testing.assert_close(merged_logits, tuned_logits, atol=1e-4, rtol=1e-4)


def test_evaluation_summary_and_samples(run):
    _, run_dir, results = run
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary == results["evaluate"]
    for name in ("base", "tuned"):
        assert 0.0 <= summary[name]["exact_match"] <= 1.0
        assert summary[name]["perplexity"] > 1.0
        assert summary[name]["n_samples"] == 16
    assert summary["tuned"]["perplexity"] < summary["base"]["perplexity"]
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16
    assert {"prompt", "reference", "base", "tuned", "base_match", "tuned_match"} <= samples[0].keys()
    assert sum(s["tuned_match"] for s in samples) / 16 == summary["tuned"]["exact_match"]


def test_export_reports_the_merged_folder(run):
    _, run_dir, results = run
    assert results["export"]["model"] == str(run_dir / "model")
    assert "model.safetensors" in results["export"]["written"]
    assert "tokenizer.json" in results["export"]["written"]
