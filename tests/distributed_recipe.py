"""The small recipe the multi-process tests share: a 2-layer model of width 64, 80 invoice rows."""

from __future__ import annotations

from pathlib import Path

SMALL = [
    "recipe=quickstart", "method=full", "stages=[prepare,train]",
    "model.architecture.hidden_size=64", "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32", "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024", "model.build.pretrain_steps=10", "model.build.pretrain_batch_size=8",
    "train.max_steps=6", "train.eval_interval=100", "logging.log_interval=1", "logging.progress_bars=false",
]


def small_recipe(root: Path) -> list[str]:
    """SMALL plus a data file of 80 rows written under `root`."""
    from ftrecipes.data import synth_invoices

    data = root / "invoices.jsonl"
    if not data.is_file():
        synth_invoices.write_jsonl(synth_invoices.sft_rows(80, seed=3), data)
    return [*SMALL, f"data.path={data}"]
