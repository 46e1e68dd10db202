"""The export stage: write standalone weights that `from_pretrained` loads without peft.

- an adapter method that can merge (lora, dora, qlora, adalora, ia3) with `export.merge: true`:
  load the base plus `run_dir/adapter/`, fold the adapter into the base weights
  (`merge_and_unload`), and save safetensors weights and the tokenizer to `run_dir/model/`. A
  `qlora` adapter is merged into the base loaded in `model.dtype`, not into the 4-bit one:
  requantizing the merged weights would add a second rounding error.
- an adapter method that cannot merge (prompt_tuning, p_tuning, p_tuning_v2): nothing is written;
  `adapter/` is the result, and the reason is printed and returned.
- `export.merge: false`: nothing is written; `adapter/` is the deliverable.
- `method=full`: the train stage already wrote `run_dir/model/`; nothing to do.

Every exported folder gets a model card (`README.md`: recipe, data hashes, evaluation,
limitations). A merge is verified before it counts: the merged folder, reloaded from disk, must
give the adapter model's logits on held-out inputs (`ftrecipes.export.verify`).

Raises `EnvironmentProblem` when the train stage's output is missing, and `MergeMismatch` (exit 4)
when the merged logits differ.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.errors import EnvironmentProblem
from ftrecipes.methods import get


def run_export(recipe, run_dir: Path) -> dict:
    """Merges the adapter into the base when asked and possible; returns what was written."""
    run_dir = Path(run_dir)
    model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
    method = get(recipe.method.name)
    if not method.adapter:
        if not (model_dir / "config.json").is_file():
            raise EnvironmentProblem(f"no trained model in {model_dir}", hint="run the train stage first")
        print(f"export: method '{method.name}' trains full weights; {model_dir} is already written")
        return _finish(run_dir, model_dir, {"note": "full weights were saved by the train stage"})
    if not recipe.export.merge:
        print(f"export: export.merge is false; the adapter in {adapter_dir} is the result")
        return {"written": [], "adapter": str(adapter_dir)}
    if not method.mergeable:
        if not (adapter_dir / "adapter_config.json").is_file():
            raise EnvironmentProblem(f"no trained adapter in {adapter_dir}", hint="run the train stage first")
        note = f"method '{method.name}' cannot be merged into the base: {method.merge}"
        print(f"export: {note}; the adapter in {adapter_dir} is the result")
        from ftrecipes.export.model_card import write_model_card

        card = write_model_card(run_dir, adapter_dir)
        return {"written": [], "adapter": str(adapter_dir), "note": note, "model_card": str(card)}

    from ftrecipes.export.verify import check_logits, logits, reference_inputs
    from ftrecipes.model.load import load_model_and_tokenizer, load_tuned

    tuned, tokenizer = load_tuned(recipe, run_dir, quantize=False)
    inputs = reference_inputs(recipe, run_dir, tokenizer)
    before = logits(tuned, inputs)
    merged = tuned.merge_and_unload()
    merged.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    del merged, tuned
    # what users will load: the files on disk, in full precision (a qlora recipe would requantize them)
    reloaded, _ = load_model_and_tokenizer(recipe, model_dir, quantize=False)
    check = check_logits(before, logits(reloaded, inputs), inputs["attention_mask"], recipe.model.dtype)
    print(f"export: merged logits equal the adapter model's (max |diff| {check['max_abs_diff']:.2e} <= "
          f"{check['bound']:.2e}, {check['positions']} held-out positions)")
    return _finish(run_dir, model_dir, {"verification": check})


def _finish(run_dir: Path, model_dir: Path, extra: dict) -> dict:
    from ftrecipes.export.model_card import write_model_card

    write_model_card(run_dir, model_dir)
    written = sorted(p.name for p in model_dir.iterdir())
    print(f"export: wrote {model_dir} ({', '.join(written)})")
    return {"written": written, "model": str(model_dir), **extra}
