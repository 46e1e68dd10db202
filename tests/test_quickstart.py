"""The quickstart exactly as a newcomer runs it: `python -m ftrecipes.launch recipe=quickstart`.

One real process, an empty model cache (so the tiny base is built and pretrained too), the shipped
invoice data, LoRA SFT through TRL, held-out scoring and the merge. A few minutes on two CPU cores;
the duration is printed, never asserted (speed lives in tests/benchmarks/).
"""

from __future__ import annotations

import json
import time

import pytest
from safetensors.torch import load_file

from conftest import run_module


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    started = time.time()
    result = run_module(
        "ftrecipes.launch", "recipe=quickstart", f"run_dir={root / 'run'}", "logging.progress_bars=false",
        env={"FTRECIPES_CACHE": str(root / "cache")}, timeout=1200,
    )
    print(f"\nquickstart first run: {time.time() - started:.0f} s")
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    return root / "run", result


def test_tuned_beats_base_by_the_margin(quickstart):
    run_dir, result = quickstart
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    base, tuned = summary["base"], summary["tuned"]
    print(f"exact match base {base['exact_match']:.3f} -> tuned {tuned['exact_match']:.3f}; "
          f"perplexity {base['perplexity']:.1f} -> {tuned['perplexity']:.3f}")
    assert tuned["exact_match"] >= base["exact_match"] + 0.60
    assert tuned["perplexity"] < base["perplexity"]
    assert "exact_match" in result.out and "tuned" in result.out  # the printed table


def test_run_dir_holds_everything_needed_to_reproduce(quickstart):
    run_dir, _ = quickstart
    for name in ("recipe.resolved.yaml", "lock.json", "metrics.jsonl", "README.md", "plan.json",
                 "eval/summary.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "model/config.json", "model/model.safetensors"):
        assert (run_dir / name).is_file(), name
    losses = [row["loss"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if "loss" in row]
    assert losses[-1] < losses[0] / 10
    merged = load_file(run_dir / "model" / "model.safetensors")
    assert merged and not any("lora" in key for key in merged)
