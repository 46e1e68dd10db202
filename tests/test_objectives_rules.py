"""Validation of objectives: which data each objective takes, GRPO batches and rewards, and the
rule that only the command line may allowlist reward code. Nothing here trains or imports torch."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from ftrecipes.config.problems import RecipeProblems
from ftrecipes.config.resolve import load_resolved, resolve


def problems(*overrides: str, config_dirs=()) -> list:
    with pytest.raises(RecipeProblems) as refused:
        resolve(list(overrides), config_dirs)
    return refused.value.problems


def one_problem(*overrides: str, config_dirs=()):
    found = problems(*overrides, config_dirs=config_dirs)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


@pytest.mark.parametrize("overrides", [
    ["objective=dpo", "data=dpo_en_demo"],
    ["objective=grpo"],  # the quickstart's alpaca rows: answers become references
    ["objective=grpo", "data.format=prompt", "stages=[prepare,train]", "objective.rewards=[{name: json_schema}]"],
    ["objective=pretrain", "data=alpaca_en_text", "stages=[prepare,train]"],
    ["recipe=tiny_lora_dpo"], ["recipe=quickstart_grpo"], ["recipe=tiny_full_pretrain"],
])
def test_objectives_validate_with_data_they_train_on(overrides):
    recipe = resolve(overrides).recipe
    assert recipe.objective.name in ("dpo", "grpo", "pretrain")


@pytest.mark.parametrize("objective,data,path,fmt", [
    ("dpo", "data=quickstart", "data.format", "alpaca"),
    ("sft", "data=dpo_en_demo", "data.format", "preference"),
    ("pretrain", "data.format=chat", "data.format", "chat"),
    ("grpo", "data=alpaca_en_text", "data.format", "text"),
    ("dpo", "data.sources=[{path: x.jsonl, format: sharegpt}]", "data.sources.0.format", "sharegpt"),
])
def test_a_declared_format_the_objective_cannot_train_on_is_refused(objective, data, path, fmt):
    overrides = [f"objective={objective}", data, "stages=[prepare,train]"]
    if objective == "dpo" and path != "data.format":
        overrides.append("data=dpo_en_demo")
    found = [p for p in problems(*overrides) if p.path == path]
    assert len(found) == 1, found
    message = found[0].message
    assert f"{path}={fmt}" in message and f"objective.name={objective}" in message  # both keys named
    assert found[0].hint.startswith("set ")


def test_a_validation_file_format_is_checked_too():
    problem = one_problem("objective=dpo", "data=dpo_en_demo", "data.validation_path=val.jsonl",
                          "data.validation_format=alpaca", "data.split.validation=0")
    assert problem.path == "data.validation_format"
    assert "objective.name=dpo" in problem.message


@pytest.mark.parametrize("overrides,fmt", [
    (["objective=pretrain", "data=alpaca_en_text", "stages=[prepare,train,evaluate]", "data.split.test=0.1"], "text"),
    (["objective=grpo", "data.format=prompt", "objective.rewards=[{name: json_schema}]"], "prompt"),
])
def test_the_evaluate_stage_needs_reference_answers(overrides, fmt):
    problem = one_problem(*overrides)
    assert problem.path == "data.format"
    assert f"data.format={fmt} rows have none" in problem.message
    assert "stages=[prepare,train,export]" in problem.hint


def test_grpo_micro_batch_must_hold_whole_groups_of_completions():
    problem = one_problem("objective=grpo", "objective.num_generations=6", "train.micro_batch_size=16")
    assert problem.path == "train.micro_batch_size"
    assert "objective.num_generations=6" in problem.message
    # the global batch counts: 2 per device x 8 GPUs holds groups of 16
    resolve(["objective=grpo", "objective.num_generations=16", "train.micro_batch_size=2", "hardware=8x_h100"])
    problem = one_problem("objective=grpo", "objective.num_generations=32", "train.micro_batch_size=2",
                          "hardware=8x_h100")
    assert "(2 per device x 8 devices = 16 completions per step)" in problem.message


def test_grpo_completion_must_leave_room_for_the_prompt():
    problem = one_problem("objective=grpo", "objective.max_completion_length=512")
    assert problem.path == "objective.max_completion_length"
    assert "max_position_embeddings" in problem.message


def test_objective_keys_apply_to_their_objective_only():
    problem = one_problem("objective=sft", "+objective.beta=0.2")
    assert problem.path == "objective.beta"
    assert "valid only with objective.name=dpo / objective.name=grpo" in problem.message


def test_grpo_needs_rewards():
    problem = one_problem("objective=grpo", "objective.rewards=[]")
    assert problem.path == "objective.rewards"


@pytest.mark.parametrize("reward,path,text", [
    ("{name: exact_mach}", "objective.rewards.0.name", "did you mean exact_match?"),
    ("{name: regex}", "objective.rewards.0.pattern", "needs objective.rewards.0.pattern"),
    ("{name: regex, pattern: '(unclosed'}", "objective.rewards.0.pattern", "not a valid regular expression"),
    ("{name: exact_match, pattern: 'x'}", "objective.rewards.0.pattern", "does not apply to reward 'exact_match'"),
    ("{name: json_schema, args: {a: 1}}", "objective.rewards.0.args", "does not apply to reward 'json_schema'"),
    ("{name: json_schema, json_schema: {type: 12}}", "objective.rewards.0.json_schema", "not a valid JSON Schema"),
    ("{name: length_penalty}", "objective.rewards.0.max_tokens", "needs objective.rewards.0.max_tokens"),
])
def test_reward_entries_are_checked(reward, path, text):
    problem = one_problem("objective=grpo", f"objective.rewards=[{reward}]")
    assert problem.path == path
    assert text in problem.message + " " + (problem.hint or "")


def test_exact_match_needs_rows_with_answers():
    found = problems("objective=grpo", "data.format=prompt", "stages=[prepare,train]")
    assert [p.path for p in found] == ["objective.rewards.0.name"]
    assert "exact_match" in found[0].message and "data.format=prompt" in found[0].message


def test_a_dotted_reward_needs_its_module_allowlisted_on_the_command_line():
    problem = one_problem("objective=grpo", "objective.rewards=[{name: not_installed_pkg.rewards.score}]")
    assert problem.path == "objective.rewards.0.name"
    assert "not allowlisted" in problem.message
    assert "reward_modules=[not_installed_pkg.rewards]" in problem.hint
    # allowlisted on the command line it validates, and validation imports nothing (the module
    # does not even exist)
    recipe = resolve(["objective=grpo", "reward_modules=[not_installed_pkg]",
                      "objective.rewards=[{name: not_installed_pkg.rewards.score, args: {k: 2}}]"]).recipe
    assert list(recipe.reward_modules) == ["not_installed_pkg"]


def test_a_recipe_file_can_neither_allowlist_nor_smuggle_reward_code(team_dir):
    (team_dir / "recipe" / "sneaky.yaml").write_text(
        "# @package _global_\n# Runs with: python -m ftrecipes.launch recipe=sneaky\n"
        "defaults:\n  - override /objective: grpo\n  - _self_\n"
        "reward_modules: [os]\nobjective:\n  rewards:\n    - name: os.system\n")
    found = problems("recipe=sneaky", config_dirs=[str(team_dir)])
    assert [p.path for p in found] == ["reward_modules"]
    assert "a recipe file may not allowlist reward modules" in found[0].message
    assert "sneaky.yaml" in found[0].origin

    # without the file's allowlist, its dotted reward path is refused as well
    text = (team_dir / "recipe" / "sneaky.yaml").read_text().replace("reward_modules: [os]\n", "")
    (team_dir / "recipe" / "sneaky.yaml").write_text(text)
    problem = one_problem("recipe=sneaky", config_dirs=[str(team_dir)])
    assert problem.path == "objective.rewards.0.name" and "not allowlisted" in problem.message


def test_the_cli_reports_reward_problems_without_a_traceback():
    result = run_cli("objective=grpo", "objective.rewards=[{name: os.system}]", "dry_run=true")
    assert result.code == 2
    assert "objective.rewards.0.name: the module 'os' of reward 'os.system' is not allowlisted" in result.err
    assert "Traceback" not in result.err


def test_a_worker_accepts_the_allowlist_the_launcher_recorded(tmp_path):
    resolved = resolve(["objective=grpo", "reward_modules=[not_installed_pkg]",
                        "objective.rewards=[{name: not_installed_pkg.score}]"])
    run_file = tmp_path / "recipe.resolved.yaml"
    OmegaConf.save(OmegaConf.create(resolved.to_write), run_file)
    assert list(load_resolved(run_file).reward_modules) == ["not_installed_pkg"]
    # any other file is a recipe file, which may not allowlist code
    other = tmp_path / "handmade.yaml"
    other.write_text(run_file.read_text())
    with pytest.raises(RecipeProblems, match="1 error"):
        load_resolved(other)


def test_grpo_kl_term_is_refused_for_adalora():
    problem = one_problem("objective=grpo", "method=adalora", "objective.beta=0.04")
    assert problem.path == "objective.beta"
    assert "method.name=adalora" in problem.message
    resolve(["objective=grpo", "method=adalora"])  # beta 0: no reference needed
