"""Composition: defaults, group choices, experiment recipes, team folders and YAML pitfalls."""

from __future__ import annotations

import pytest
from omegaconf.errors import ConfigAttributeError, ReadonlyConfigError

from ftrecipes.config.problems import RecipeProblems
from ftrecipes.config.resolve import resolve


def test_default_recipe_is_the_quickstart_stack():
    resolved = resolve([])
    assert resolved.choices["model"] == "tiny"
    assert resolved.choices["method"] == "lora"
    assert resolved.recipe.hardware.accelerator == "cpu"
    assert resolved.name == "tiny-lora-sft"


def test_experiment_recipe_overrides_groups_and_keys():
    resolved = resolve(["recipe=qwen32b_qlora"])
    recipe = resolved.recipe
    assert resolved.name == "qwen32b_qlora"
    assert recipe.model.path == "Qwen/Qwen3-32B"
    assert recipe.method.name == "qlora"
    assert recipe.data.max_seq_len == 2048
    assert recipe.train.gradient_checkpointing is True


def test_command_line_beats_experiment_file():
    recipe = resolve(["recipe=qwen32b_qlora", "method.r=32", "hardware=8x_h100"]).recipe
    assert recipe.method.r == 32
    assert recipe.hardware.name == "8x_h100"
    assert recipe.hardware.gpus_per_node == 8


def test_schema_defaults_are_filled_and_listed():
    resolved = resolve(["method=lora"])
    assert resolved.recipe.model.revision is None
    assert "model.revision" in resolved.filled_defaults


def test_key_the_files_lack_can_be_set_without_plus_when_the_schema_knows_it():
    recipe = resolve(["model.revision=abc123"]).recipe
    assert recipe.model.revision == "abc123"


def test_resolved_recipe_is_strict_and_read_only():
    recipe = resolve([]).recipe
    with pytest.raises(ConfigAttributeError):
        _ = recipe.method.lora_alpah
    with pytest.raises(ReadonlyConfigError):
        recipe.method.r = 4


def test_team_folder_adds_options_via_config_dir(team_dir):
    (team_dir / "model" / "our_llama.yaml").write_text(
        open(_builtin("model/llama3_1_8b.yaml")).read().replace("name: llama3_1_8b", "name: our_llama"))
    (team_dir / "recipe" / "our_sft.yaml").write_text(
        "# @package _global_\n# Runs with: python -m ftrecipes.launch --config-dir team recipe=our_sft\n"
        "defaults:\n  - override /model: our_llama\n  - override /hardware: 1x_a100_80g\n  - _self_\n"
        "method:\n  r: 8\n")
    resolved = resolve(["recipe=our_sft"], [str(team_dir)])
    assert resolved.recipe.model.name == "our_llama"
    assert resolved.recipe.method.r == 8
    assert str(team_dir / "recipe" / "our_sft.yaml") in [str(p) for p in resolved.composed.sources]


def test_team_folder_via_environment_variable(team_dir, monkeypatch):
    (team_dir / "hardware" / "lab_box.yaml").write_text(
        open(_builtin("hardware/1x_rtx4090.yaml")).read().replace("name: 1x_rtx4090", "name: lab_box"))
    monkeypatch.setenv("FTRECIPES_RECIPE_PATH", str(team_dir))
    assert resolve(["hardware=lab_box", "method=lora"]).recipe.hardware.name == "lab_box"


def test_team_folder_shadows_a_builtin_option(team_dir):
    text = open(_builtin("method/lora.yaml")).read().replace("r: 16", "r: 64")
    (team_dir / "method" / "lora.yaml").write_text(text)
    assert resolve([], [str(team_dir)]).recipe.method.r == 64


def test_missing_team_folder_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeProblems) as caught:
        resolve([], [str(tmp_path / "nope")])
    assert "does not exist" in caught.value.render()


def test_yaml_scientific_notation_is_a_float(team_dir):
    text = open(_builtin("method/lora.yaml")).read().replace("learning_rate: 2.0e-4", "learning_rate: 1e-4")
    (team_dir / "method" / "lora.yaml").write_text(text)
    recipe = resolve([], [str(team_dir)]).recipe
    assert recipe.method.learning_rate == pytest.approx(1e-4)
    assert resolve(["method.learning_rate=3e-4"]).recipe.method.learning_rate == pytest.approx(3e-4)


def test_env_interpolation_is_validated_but_not_written(monkeypatch):
    monkeypatch.setenv("FT_TEST_PROJECT", "secret-project-name")
    resolved = resolve(["logging.project=${oc.env:FT_TEST_PROJECT}"])
    assert resolved.recipe.logging.project == "secret-project-name"
    assert resolved.to_write["logging"]["project"] == "${oc.env:FT_TEST_PROJECT}"


def _builtin(relative: str) -> str:
    from ftrecipes.paths import resource_dir

    return str(resource_dir("recipes") / relative)
