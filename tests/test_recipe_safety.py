"""Safe configs and secrets: a recipe can never make ftrecipes run code, and nothing pickled holds a token.

The gadget tests run the real CLI in a subprocess with a sentinel path in the gadget's arguments:
each exits 2 with a clear message and no traceback, and the sentinel file never exists.
"""

from __future__ import annotations

import ast
import errno
import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli, run_module
from ftrecipes.config import safety
from ftrecipes.errors import ExitCode, OutOfResources, classify, report_errors
from ftrecipes.reliability import preflight

GADGETS = {  # target: the keys that would make it create the sentinel if anything instantiated it
    "os.system": {"_args_": ["touch {s}"]},
    "subprocess.run": {"_args_": [["touch", "{s}"]]},
    "builtins.eval": {"_args_": ["open('{s}', 'w')"]},
    "logging.FileHandler": {"filename": "{s}"},
    "tempfile.NamedTemporaryFile": {"dir": "{d}", "prefix": "sentinel", "delete": False},
    "logging.os.system": {"_args_": ["touch {s}"]},
    "posix.system": {"_args_": ["touch {s}"]},
    "importlib.import_module": {"name": "sentinel_module"},
}


def _yaml_value(value, sentinel: Path) -> str:
    return json.dumps(json.loads(json.dumps(value).replace("{s}", str(sentinel)).replace("{d}", str(sentinel.parent))))


def _assert_refused(result, sentinel: Path, target: str) -> None:
    assert result.code == ExitCode.RECIPE, result.err
    assert "instantiation is not allowed" in result.err and f"'{target}'" in result.err, result.err
    assert "Traceback" not in result.err
    assert not sentinel.exists() and not list(sentinel.parent.glob("sentinel*")), "a gadget ran"


@pytest.mark.parametrize("target", list(GADGETS))
def test_gadget_in_a_team_recipe_file_is_refused_before_anything_runs(tmp_path, team_dir, target):
    sentinel = tmp_path / "sentinel.txt"
    lines = ["# @package _global_", "train:", f"  _target_: {target}"]
    lines += [f"  {key}: {_yaml_value(value, sentinel)}" for key, value in GADGETS[target].items()]
    (team_dir / "recipe" / "gadget.yaml").write_text("\n".join(lines) + "\n")
    result = run_module("ftrecipes.launch", "--config-dir", str(team_dir), "recipe=gadget", "dry_run=true",
                        cwd=tmp_path)
    _assert_refused(result, sentinel, target)
    assert "train._target_" in result.err and "recipe/gadget.yaml:3" in result.err


@pytest.mark.parametrize("target", list(GADGETS))
def test_gadget_on_the_command_line_is_refused_before_anything_runs(tmp_path, target):
    sentinel = tmp_path / "sentinel.txt"
    extra = [f"+x.{key}={_yaml_value(value, sentinel)}" for key, value in GADGETS[target].items()]
    result = run_module("ftrecipes.launch", f"+x._target_={target}", *extra, "dry_run=true", cwd=tmp_path)
    _assert_refused(result, sentinel, target)
    assert f"command line '+x._target_={target}'" in result.err


def test_hydra_searchpath_in_a_team_folder_cannot_import_a_module(tmp_path, team_dir):
    """Hydra imports `pkg://NAME` while composing; the current directory is on sys.path."""
    sentinel = tmp_path / "sentinel.txt"
    (tmp_path / "teamhook.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    primary = (REPO / "recipes" / "config.yaml").read_text()
    (team_dir / "config.yaml").write_text(primary + "hydra:\n  searchpath: [pkg://teamhook]\n")
    result = run_module("ftrecipes.launch", "--config-dir", str(team_dir), "dry_run=true", cwd=tmp_path)
    assert result.code == ExitCode.RECIPE and "Traceback" not in result.err
    assert "may not configure Hydra" in result.err and "config.yaml:" in result.err
    assert not sentinel.exists()
    result = run_module("ftrecipes.launch", "hydra.searchpath=[pkg://teamhook]", "dry_run=true", cwd=tmp_path)
    assert result.code == ExitCode.RECIPE and "Hydra's own settings cannot be changed" in result.err
    assert not sentinel.exists()


@pytest.mark.parametrize("args", [
    ["--config-dir", "https://example.com/team_recipes"],
    ["--config-dir", "git://example.com/team.git"],
    ["recipe=https://example.com/recipe.yaml"],
])
def test_recipes_are_not_loaded_from_urls(args):
    result = run_cli(*args, "dry_run=true")
    assert result.code == ExitCode.RECIPE and "Traceback" not in result.err
    assert "URL" in result.err and "--config-dir" in result.err


def test_url_in_the_recipe_path_environment_variable(monkeypatch):
    monkeypatch.setenv("FTRECIPES_RECIPE_PATH", "https://example.com/recipes")
    result = run_cli("dry_run=true")
    assert result.code == ExitCode.RECIPE and "environment variable FTRECIPES_RECIPE_PATH" in result.err


def test_allowlist_mechanism():
    allow = ("torch.optim",)
    assert safety.target_refusal("torch.optim.AdamW", allow) is None
    for value in ("torch.optim.os.system", "torch.optim.AdamW.__init__", "torch.optimx.AdamW",
                  "torch.optim._functional", "torch.optim.adamw.AdamW", "torch.optim", "os.system", 42):
        assert safety.target_refusal(value, allow) is not None, value
    tree = {"opt": {"_target_": "torch.optim.AdamW", "_partial_": True}, "bad": {"_target_": "torch.optim.os.system"},
            "stray": {"_args_": [1]}}
    problems = safety.check_targets(tree, {"bad._target_": "team/recipe/x.yaml:3"}, allow)
    assert sorted(p.path for p in problems) == ["bad._target_", "stray._args_"]
    assert next(p for p in problems if p.path == "bad._target_").origin == "team/recipe/x.yaml:3"
    assert safety.ALLOWED_TARGET_PREFIXES == ()  # ftrecipes instantiates nothing from recipes today


def test_a_recipe_cannot_extend_the_allowlist(team_dir):
    (team_dir / "recipe" / "extend.yaml").write_text(
        "# @package _global_\nallowed_target_prefixes: [os]\ntrain:\n  _target_: os.system\n")
    result = run_cli("--config-dir", str(team_dir), "recipe=extend", "dry_run=true")
    assert result.code == ExitCode.RECIPE and "'os.system'" in result.err
    assert safety.ALLOWED_TARGET_PREFIXES == ()
    result = run_cli("+allowed_target_prefixes=[os]", "dry_run=true")
    assert result.code == ExitCode.RECIPE and "allowed_target_prefixes: unknown key" in result.err


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    else getattr(func, "id", getattr(func, "attr", "")))
            yield name, {k.arg: k.value for k in node.keywords}, node.lineno


def test_every_torch_load_uses_weights_only_and_weights_are_safetensors():
    offenders = []
    for path in sorted((REPO / "ftrecipes").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, keywords, line in _calls(tree):
            where = f"{path.relative_to(REPO)}:{line}"
            weights_only = keywords.get("weights_only")
            if name == "torch.load" and not (
                    isinstance(weights_only, ast.Constant) and weights_only.value is True):
                offenders.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                offenders.append(f"{where}: {name} runs code from the file")
            safe = keywords.get("safe_serialization")
            if isinstance(safe, ast.Constant) and safe.value is False:
                offenders.append(f"{where}: safe_serialization=False writes pickled weights")
    assert offenders == []


def test_scrub_tokens_before_pickling_training_args(tmp_path):
    import torch
    from transformers import TrainingArguments
    from trl import SFTConfig

    args = TrainingArguments(output_dir=str(tmp_path), hub_token="hf_SECRETsecret123", report_to=[])
    assert preflight.scrub_tokens(args) == ["hub_token"]
    torch.save(args, tmp_path / "training_args.bin")
    assert b"hf_SECRETsecret123" not in (tmp_path / "training_args.bin").read_bytes()
    config = SFTConfig(output_dir=str(tmp_path), hub_token="hf_other456", pad_token="<|pad|>", report_to=[], bf16=False)
    assert preflight.scrub_tokens(config) == ["hub_token"]
    assert config.pad_token == "<|pad|>" and config.hub_token is None  # special tokens are not secrets
    plain = {"hub_token": "x", "wandb_api_key": "y", "eos_token": "</s>", "learning_rate": 1e-4}
    assert sorted(preflight.scrub_tokens(plain)) == ["hub_token", "wandb_api_key"]
    assert plain == {"hub_token": None, "wandb_api_key": None, "eos_token": "</s>", "learning_rate": 1e-4}


def test_disk_preflight_names_the_numbers(tmp_path):
    from ftrecipes.config.resolve import resolve
    from ftrecipes.plan.summary import build_plan

    recipe = resolve(["recipe=quickstart"]).recipe
    plan = build_plan(recipe)
    one = preflight.checkpoint_bytes(recipe, plan)
    trainable = plan["parameters"]["trainable"]
    assert one == trainable * 4 + trainable * 8 + preflight.SMALL_FILES  # fp32 adapter + AdamW m, v
    assert preflight.check_checkpoint_space(recipe, tmp_path / "not" / "yet", plan) > 3 * one
    with pytest.raises(OutOfResources) as caught:
        preflight.check_disk(tmp_path, 1 << 60, what="3 checkpoints")
    assert caught.value.exit_code == ExitCode.OUT_OF_RESOURCES
    assert "needs about 1048576.0 TiB" in caught.value.message and "is free" in caught.value.message
    full = resolve(["recipe=qwen32b_qlora", "method=full", "model.dtype=bfloat16"]).recipe
    full_plan = build_plan(full)
    assert preflight.checkpoint_bytes(full, full_plan) >= full_plan["parameters"]["total"] * (2 + 8)


def test_a_plan_that_does_not_fit_is_out_of_resources():
    from ftrecipes.config.resolve import resolve
    from ftrecipes.plan.summary import build_plan

    plan = build_plan(resolve(["recipe=qwen32b_qlora", "method=full", "model.dtype=bfloat16"]).recipe)
    assert plan["fits"] is False
    with pytest.raises(OutOfResources) as caught:
        preflight.check_plan_fits(plan)
    assert caught.value.exit_code == ExitCode.OUT_OF_RESOURCES and "GiB per device" in caught.value.message
    preflight.check_plan_fits(build_plan(resolve(["recipe=qwen32b_qlora"]).recipe))  # fits: no error


def test_resource_and_cluster_failures_get_their_exit_codes(capsys):
    class OutOfMemoryError(RuntimeError):
        pass

    class DistBackendError(RuntimeError):
        pass

    cases = [(OSError(errno.ENOSPC, "No space left on device", "/runs/x/optimizer.pt"), ExitCode.OUT_OF_RESOURCES),
             (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ExitCode.OUT_OF_RESOURCES),
             (DistBackendError("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1)"),
              ExitCode.DISTRIBUTED_TIMEOUT)]
    for error, code in cases:
        assert classify(error).exit_code == code

        def fail(error=error):
            raise error

        assert report_errors(fail) == code
        assert "Traceback" not in capsys.readouterr().err
    assert classify(RuntimeError("a bug")) is None
    with pytest.raises(RuntimeError):
        report_errors(lambda: (_ for _ in ()).throw(RuntimeError("a bug")))


def test_exit_code_table_is_documented():
    doc = (REPO / "docs" / "exit-codes.md").read_text()
    for code in ExitCode:  # TRAINING is an alias of DIVERGED and not iterated
        assert f"| {int(code)} |" in doc, code
