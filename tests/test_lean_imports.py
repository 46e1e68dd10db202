"""`train.lean_imports`: installed packages a recipe does not use stay out of its process.

Which packages a recipe needs is checked on composed recipes; the hiding itself runs in real
child processes (it changes `sys.modules`, so never in pytest's own): the real transformers,
accelerate, PEFT and TRL availability checks must answer False, an import of a hidden package
must end as an EnvironmentProblem naming the key, and a real `python -m ftrecipes.launch` run
trains with it on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, SMALL_MODEL, run_cli, run_module
from ftrecipes.config.resolve import resolve
from ftrecipes.train import lean_imports

SMALL = [*SMALL_MODEL, "logging.progress_bars=false"]
NO_CHARSET_NORMALIZER = importlib.util.find_spec("charset_normalizer") is None


def needed(*overrides: str) -> dict[str, bool]:
    return lean_imports.needed(resolve([*SMALL, *overrides]).recipe)


def test_a_plain_lora_run_needs_none_of_them():
    assert needed() == {"deepspeed": False, "bitsandbytes": False, "wandb": False, "mlflow": False,
                        "scipy": False, "chardet": NO_CHARSET_NORMALIZER}


@pytest.mark.parametrize("overrides,package", [
    (["method=qlora"], "bitsandbytes"),
    (["train.optimizer=adamw_8bit"], "bitsandbytes"),
    (["hardware=cpu_2proc", "hardware.strategy=zero3"], "deepspeed"),
    (["hardware=cpu_2proc", "hardware.strategy=zero1"], "deepspeed"),
    (["logging=[wandb]"], "wandb"),
    (["logging=[mlflow]"], "mlflow"),
    (["stages=[prepare,train,evaluate]", "evaluate.lm_eval.tasks=[heldout]"], "scipy"),
    (["stages=[prepare,train,evaluate]", "evaluate.lm_eval.tasks=[heldout]"], "chardet"),
])
def test_what_the_recipe_uses_is_kept(overrides, package):
    got = needed(*overrides)
    assert got[package] is True
    others = {name for name, used in got.items() if used} - {package}
    # one key keeps only what it uses (lm-eval keeps both scipy and chardet)
    assert others <= {"scipy", "chardet"}, others


def test_harness_tasks_without_the_evaluate_stage_keep_nothing():
    got = needed("stages=[prepare,train]", "evaluate.lm_eval.tasks=[heldout]")
    assert not got["scipy"]


def test_a_local_base_that_is_already_quantized_keeps_bitsandbytes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True}}))
    assert lean_imports._quantized_on_disk(resolve(["model.source=local", f"model.path={tmp_path}"]).recipe.model)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not lean_imports._quantized_on_disk(resolve(["model.source=local", f"model.path={tmp_path}"]).recipe.model)


def test_a_call_from_python_never_hides_anything_in_the_callers_process():
    result = run_cli(*SMALL, "dry_run=true")
    assert result.code == 0, result.err
    assert lean_imports.OWNS_PROCESS is False and not lean_imports.HIDDEN
    assert lean_imports.hide_unused_packages(resolve(SMALL).recipe) == []
    assert sys.modules.get("deepspeed", 0) is not None


CHILD = textwrap.dedent("""
    import json, sys
    from ftrecipes.config.resolve import resolve
    from ftrecipes.errors import classify
    from ftrecipes.train import lean_imports

    lean_imports.OWNS_PROCESS = True
    hidden = lean_imports.hide_unused_packages(resolve(json.loads(sys.argv[1])).recipe)
    from trl import SFTTrainer  # the real import chain of the train stage
    from accelerate.utils import is_deepspeed_available
    from peft.import_utils import is_bnb_available
    from transformers.utils import is_scipy_available
    report = {"hidden": hidden, "accelerate_deepspeed": is_deepspeed_available(), "peft_bnb": is_bnb_available(),
              "transformers_scipy": is_scipy_available(),
              "imported": sorted(m for m in hidden if sys.modules.get(m) is not None)}
    try:
        import bitsandbytes  # noqa: F401
        report["error"] = None
    except ImportError as error:
        problem = classify(error)
        report["error"] = problem.render() if problem else repr(error)
    print(json.dumps(report))
""")


def child(*overrides: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([*SMALL, *overrides])], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_libraries_own_checks_see_the_hidden_packages_as_absent():
    report = child()
    assert {"deepspeed", "bitsandbytes", "wandb", "mlflow", "scipy"} <= set(report["hidden"])
    assert not report["accelerate_deepspeed"] and not report["peft_bnb"] and not report["transformers_scipy"]
    assert report["imported"] == []
    assert "'bitsandbytes' was kept out of this run" in report["error"]
    assert "train.lean_imports=false" in report["error"]


def test_lean_imports_false_hides_nothing():
    report = child("train.lean_imports=false")
    assert report["hidden"] == []
    if importlib.util.find_spec("bitsandbytes") is not None:
        assert report["error"] is None and report["peft_bnb"]


def test_a_real_run_trains_with_the_unused_packages_kept_out(tmp_path):
    run_dir = tmp_path / "run"
    result = run_module("ftrecipes.launch", *SMALL, "stages=[prepare,train]", "train.max_steps=6",
                        "train.micro_batch_size=4", "logging.log_interval=1", f"run_dir={run_dir}",
                        env={"FTRECIPES_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"})
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    line = next(x for x in result.out.splitlines() if "not importing what this recipe does not use" in x)
    assert "bitsandbytes" in line and "deepspeed" in line
    losses = [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0]
    assert list(Path(run_dir / "adapter").glob("*.safetensors"))
    assert list((tmp_path / "cache" / "startup").glob("packages-*.json"))  # TRL's table, cached for the next run
