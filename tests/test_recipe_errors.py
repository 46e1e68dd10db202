"""Validation messages: every misspelled key, wrong type, bad value or Hydra error exits 2 with the
key path, its origin and a fix, and never a traceback."""

from __future__ import annotations

import pytest

from conftest import run_cli, run_module
from ftrecipes.config.resolve import resolve
from ftrecipes.paths import resource_dir


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _typo(key: str) -> str:
    """A plausible misspelling: swap two inner letters, or double the last one for short keys."""
    for i in range(1, len(key) - 2):
        if key[i] != key[i + 1]:
            return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key + key[-1]


def _leaf_keys(*overrides: str) -> list[str]:
    return [path for path, _ in _leaves(resolve(list(overrides)).to_write)]


@pytest.mark.parametrize("recipe", ["quickstart", "qwen32b_qlora"])
def test_misspelled_leaf_key_on_the_command_line_at_every_level(recipe):
    paths = _leaf_keys(f"recipe={recipe}")
    assert len(paths) > 50
    for path in paths:
        parent, _, key = path.rpartition(".")
        wrong = f"{parent}.{_typo(key)}" if parent else _typo(key)
        result = run_cli(f"recipe={recipe}", f"+{wrong}=1", "dry_run=true")
        assert result.code == 2, (path, result.err)
        assert f"{wrong}: unknown key" in result.err, result.err
        assert f"did you mean {path}?" in result.err, result.err
        assert f"command line '+{wrong}=1'" in result.err
        assert "Traceback" not in result.err


def test_override_without_plus_is_checked_the_same_way():
    result = run_cli("method.lora_alpah=16")
    assert result.code == 2
    assert "method.lora_alpah: unknown key" in result.err
    assert "did you mean method.lora_alpha?" in result.err


def test_all_errors_are_reported_at_once():
    result = run_cli("+method.lora_alpah=16", "method.r=0", "train.micro_batch_size=eight", "hardware.strategy=zero4")
    assert result.code == 2
    assert "the recipe has 4 errors" in result.err
    assert "method.r: 0 is out of range: it must be >= 1" in result.err
    assert "train.micro_batch_size: expected integer, got string 'eight'" in result.err
    assert "did you mean zero3?" in result.err
    assert "choose one of: none, ddp, fsdp2, zero1, zero2, zero3, zero3_offload" in result.err


@pytest.mark.parametrize("group,option,path,line_text", [
    ("method", "lora", "method.r", "r: 16"),
    ("method", "lora", "method.lora_alpha", "lora_alpha: 32"),
    ("model", "tiny", "model.architecture.hidden_size", "  hidden_size: 128"),
    ("model", "tiny", "model.build.pretrain_steps", "  pretrain_steps:"),
    ("data", "quickstart", "data.split.validation", "  validation: 0.1"),
    ("hardware", "cpu", "hardware.strategy", "strategy: none"),
    ("objective", "sft", "objective.packing", "packing: false"),
])
def test_misspelled_key_in_a_recipe_file_names_file_and_line(team_dir, group, option, path, line_text):
    source = (resource_dir("recipes") / group / f"{option}.yaml").read_text().splitlines()
    key = path.rsplit(".", 1)[1]
    index = next(i for i, line in enumerate(source) if line.startswith(line_text))
    source[index] = source[index].replace(f"{key}:", f"{_typo(key)}:", 1)
    (team_dir / group / f"{option}.yaml").write_text("\n".join(source) + "\n")
    result = run_cli("--config-dir", str(team_dir), "dry_run=true")
    assert result.code == 2, result.err
    wrong = path.rsplit(".", 1)[0] + "." + _typo(key)
    assert f"{wrong}: unknown key" in result.err
    assert f"{group}/{option}.yaml:{index + 1}" in result.err
    assert f"did you mean {path}?" in result.err


def test_misspelled_run_level_key_in_experiment_file(team_dir):
    (team_dir / "recipe" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - _self_\ntrain:\n  epochs: 1\n  micro_bach_size: 4\n")
    result = run_cli("--config-dir", str(team_dir), "recipe=mine")
    assert result.code == 2
    assert "train.micro_bach_size: unknown key" in result.err
    assert "recipe/mine.yaml:6" in result.err
    assert "did you mean train.micro_batch_size?" in result.err


def test_wrong_type_and_out_of_range_in_a_file(team_dir):
    text = (resource_dir("recipes") / "method" / "lora.yaml").read_text()
    text = text.replace("r: 16", "r: sixteen").replace("lora_dropout: 0.05", "lora_dropout: 1.5")
    (team_dir / "method" / "lora.yaml").write_text(text)
    result = run_cli("--config-dir", str(team_dir))
    assert result.code == 2
    assert "method.r: expected integer, got string 'sixteen'" in result.err
    assert "method.lora_dropout: 1.5 is out of range: it must be < 1" in result.err
    assert "method/lora.yaml:" in result.err


def test_key_of_another_method_explains_the_combination():
    result = run_cli("method=full", "method.lora_alpha=16")
    assert result.code == 2
    assert "valid only with method.name=adalora / method.name=dora / method.name=lora" in result.err


def test_cross_field_rules():
    result = run_cli("data.split.validation=0.6", "data.split.test=0.5")
    assert result.code == 2 and "leaves no training rows" in result.err
    result = run_cli("method=adalora", "method.tinit=0.5", "method.tfinal=0.6", "dry_run=true")
    assert result.code == 2 and "method.tinit (0.5) + method.tfinal (0.6)" in result.err
    result = run_cli("stages=[train,prepare]")
    assert result.code == 2 and "out of pipeline order" in result.err
    result = run_cli("data.split.validation=0", "dry_run=true")
    assert result.code == 2 and "no validation rows" in result.err


def test_remote_code_only_from_the_command_line(team_dir):
    (team_dir / "recipe" / "sneaky.yaml").write_text("# @package _global_\ntrust_remote_code: true\n")
    result = run_cli("--config-dir", str(team_dir), "recipe=sneaky", "dry_run=true")
    assert result.code == 2
    assert "may not turn on remote code" in result.err
    assert "recipe/sneaky.yaml:2" in result.err
    assert run_cli("trust_remote_code=true", "dry_run=true").code == 0


@pytest.mark.parametrize("args,expected", [
    (["method=lorra"], "did you mean method=lora?"),
    (["hardware=8x_h10"], "did you mean hardware=8x_h100?"),
    (["method.r=["], "cannot parse this override"),
    (["method.r=8,16"], "add -m to sweep"),
    (["--bogus"], "unknown option --bogus"),
])
def test_hydra_errors_are_restated(args, expected):
    result = run_cli(*args)
    assert result.code == 2
    assert expected in result.err
    assert "Traceback" not in result.err


def test_bad_option_inside_an_experiment_file(team_dir):
    (team_dir / "recipe" / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: qwen3_32\n  - _self_\n")
    result = run_cli("--config-dir", str(team_dir), "recipe=typo")
    assert result.code == 2
    assert "recipe/typo.yaml:3" in result.err
    assert "did you mean model=qwen3_32b?" in result.err


def test_duplicate_key_in_a_file_is_rejected(team_dir):
    (team_dir / "method" / "dup.yaml").write_text("name: lora\nlearning_rate: 2.0e-4\nr: 8\nr: 16\n")
    result = run_cli("--config-dir", str(team_dir), "method=dup")
    assert result.code == 2
    assert "method.r: duplicate key" in result.err
    assert "method/dup.yaml:4" in result.err


def test_real_process_exits_2_without_traceback():
    result = run_module("ftrecipes.launch", "+method.lora_alpah=16", "dry_run=true")
    assert result.code == 2
    assert "did you mean method.lora_alpha?" in result.err
    assert "Traceback" not in result.err and result.out == ""
