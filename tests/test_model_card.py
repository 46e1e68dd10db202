"""The model card from a real tiny tuned run's files: recipe, data hashes, evaluation, limitations."""

from __future__ import annotations

import hashlib
import json
import shutil

from tiny_tuned_run import tuned_run  # noqa: F401 - the session fixture

from ftrecipes.export.model_card import write_model_card


def test_model_card_records_recipe_data_evaluation_and_limitations(tuned_run):  # noqa: F811
    _, run_dir = tuned_run
    card = write_model_card(run_dir, run_dir / "model").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    for section in ("## Model", "## Training data", "## Training", "## Evaluation", "## Limitations", "## Use",
                    "## Reproduce"):
        assert section in card
    assert "merged weights: the adapter folded into the base" in card
    for split in ("train", "validation", "test"):
        digest = hashlib.sha256((run_dir / "data" / f"{split}.jsonl").read_bytes()).hexdigest()
        assert f"| `data/{split}.jsonl` | `{digest}` |" in card
    for path, digest in json.loads((run_dir / "lock.json").read_text())["data_files"].items():
        assert f"| `{path}` | `{digest}` |" in card
    tuned = json.loads((run_dir / "eval" / "summary.json").read_text())["tuned"]
    assert f"| tuned | {tuned['exact_match']:.3f} [" in card
    assert "The held-out scores come from 16 rows drawn from the same source" in card
    assert "tiny demonstration model" in card
    assert hashlib.sha256((run_dir / "recipe.resolved.yaml").read_bytes()).hexdigest() in card
    adapter_card = write_model_card(run_dir, run_dir / "adapter").read_text()
    assert "library_name: peft" in adapter_card and "AutoPeftModelForCausalLM" in adapter_card


def test_model_card_at_export_time_reads_training_from_metrics(tuned_run, tmp_path):  # noqa: F811
    """The export stage runs before the worker writes summary.json: the card uses metrics.jsonl."""
    _, run_dir = tuned_run
    early = tmp_path / "run"
    shutil.copytree(run_dir, early, ignore=shutil.ignore_patterns("model", "adapter", "summary.json"))
    card = write_model_card(early, tmp_path / "out").read_text()
    losses = [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert f"24 steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}" in card and "wall time" not in card
