"""The export stage: write standalone weights that `from_pretrained` loads without peft.

- LoRA-family `method.name` with `export.merge: true`: load the base plus `run_dir/adapter/`,
  fold the adapter into the base weights (`merge_and_unload`), and save safetensors weights and
  the tokenizer to `run_dir/model/`.
- `export.merge: false`: nothing is written; `adapter/` is the deliverable.
- `method=full`: the train stage already wrote `run_dir/model/`; nothing to do.

Raises `EnvironmentProblem` when the train stage's output is missing.
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.errors import EnvironmentProblem
from ftrecipes.model.methods import ADAPTER_METHODS


def run_export(recipe, run_dir: Path) -> dict:
    """Merges the adapter into the base when asked; returns what was written."""
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if recipe.method.name not in ADAPTER_METHODS:
        if not (model_dir / "config.json").is_file():
            raise EnvironmentProblem(f"no trained model in {model_dir}", hint="run the train stage first")
        print(f"export: method '{recipe.method.name}' trains full weights; {model_dir} is already written")
        return {"written": [], "model": str(model_dir), "note": "full weights were saved by the train stage"}
    if not recipe.export.merge:
        print(f"export: export.merge is false; the adapter in {run_dir / 'adapter'} is the result")
        return {"written": [], "adapter": str(run_dir / "adapter")}

    from ftrecipes.model.load import load_tuned

    tuned, tokenizer = load_tuned(recipe, run_dir)
    merged = tuned.merge_and_unload()
    merged.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    written = sorted(p.name for p in model_dir.iterdir())
    print(f"export: merged the adapter into the base; wrote {model_dir} ({', '.join(written)})")
    return {"written": written, "model": str(model_dir)}
