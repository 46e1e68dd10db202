"""The run directory: one folder that records the recipe, versions, data hashes, plan and how to
reproduce the run. Runs the real launcher with `stages=[prepare]` (no training)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from conftest import run_module
from ftrecipes.config.resolve import load_resolved
from ftrecipes.paths import builtin_data_dir


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rundir")
    run_dir = root / "run"
    env = {"FTRECIPES_CACHE": str(root / "cache"), "FT_TEST_SECRET": "hunter2-do-not-write"}
    result = run_module("ftrecipes.launch", "stages=[prepare]", f"run_dir={run_dir}",
                        "model.build.pretrain_steps=0", "logging.project=${oc.env:FT_TEST_SECRET}",
                        "logging.progress_bars=false", env=env, timeout=600)
    assert result.code == 0, result.err[-3000:]
    return run_dir, result


def test_run_dir_holds_the_promised_files(prepared_run):
    run_dir, _ = prepared_run
    for name in ("recipe.resolved.yaml", "lock.json", "plan.json", "README.md",
                 "data/train.jsonl", "data/validation.jsonl", "data/test.jsonl", "data/report.json"):
        assert (run_dir / name).is_file(), name


def test_resolved_recipe_reloads_and_validates(prepared_run, monkeypatch):
    run_dir, _ = prepared_run
    monkeypatch.setenv("FT_TEST_SECRET", "read-from-the-environment-at-load")
    recipe = load_resolved(run_dir / "recipe.resolved.yaml")
    assert recipe.method.name == "lora"
    assert recipe.logging.project == "read-from-the-environment-at-load"
    assert list(recipe.stages) == ["prepare"]
    header = (run_dir / "recipe.resolved.yaml").read_text().splitlines()[0]
    assert header.startswith("# Resolved recipe")


def test_lock_records_versions_data_hashes_and_recipe_folders(prepared_run):
    run_dir, _ = prepared_run
    lock = json.loads((run_dir / "lock.json").read_text())
    assert lock["python"].count(".") == 2
    for package in ("torch", "transformers", "peft", "trl", "hydra-core", "jsonschema"):
        assert package in lock["packages"], package
    data_file = builtin_data_dir() / "invoices.jsonl"
    assert lock["data_files"][str(data_file)] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert lock["recipe_folders"], "the recipe folder and its git state are recorded"
    assert "stages=[prepare]" in lock["command"]


def test_readme_says_how_to_reproduce(prepared_run):
    run_dir, _ = prepared_run
    text = (run_dir / "README.md").read_text()
    assert "python -m ftrecipes.launch 'stages=[prepare]' run_dir=" in text
    assert f"python -m ftrecipes.worker {run_dir / 'recipe.resolved.yaml'}" in text


def test_no_secret_is_written_anywhere(prepared_run):
    run_dir, result = prepared_run
    resolved = yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text())
    assert resolved["logging"]["project"] == "${oc.env:FT_TEST_SECRET}"
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"hunter2-do-not-write" not in path.read_bytes(), path
    assert "hunter2-do-not-write" not in result.out + result.err


def test_plan_json_matches_the_recipe(prepared_run):
    run_dir, _ = prepared_run
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["world_size"] == 1
    assert plan["command"].startswith("python -m ftrecipes.worker")
    assert 0 < plan["parameters"]["trainable"] < plan["parameters"]["total"]
