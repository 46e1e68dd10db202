"""The shipped schemas and recipe files keep their promises."""

from __future__ import annotations

import json

import pytest

from ftrecipes.config.resolve import resolve
from ftrecipes.paths import resource_dir

RECIPES = sorted(resource_dir("recipes").rglob("*.yaml"))
SCHEMAS = sorted(resource_dir("schemas").rglob("*.schema.json"))


def _objects(node, where):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node and "if" not in node:
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{where}/{index}")


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_object_rejects_unknown_keys(path):
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for where, node in _objects(schema, path.name):
        if path.name in ("method.schema.json", "objective.schema.json") and (where == path.name or where.endswith("/if")):
            continue  # the fragments (method/*.schema.json, objective/*.schema.json) close it per name
        assert node.get("additionalProperties") is False, where


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_files_open_with_the_command_and_a_schema_header(path):
    head = path.read_text().splitlines()[:8]
    assert any(line.startswith("# Runs with: python -m ftrecipes.launch") for line in head), path
    assert any(line.startswith("# yaml-language-server: $schema=") for line in head), path
    schema_ref = next(line for line in head if "yaml-language-server" in line).split("=", 1)[1]
    assert (path.parent / schema_ref).resolve().is_file(), schema_ref


# Options that validate only next to a partner: a GPU preset, or an objective that trains on the
# data's rows (and data whose rows the objective trains on).
PARTNERS = {
    "qlora": ["hardware=1x_a100_80g"],
    "dpo": ["data=dpo_en_demo"],
    "dpo_en_demo": ["objective=dpo"],
    "pretrain": ["data=alpaca_en_text", "stages=[prepare,train]"],
    "alpaca_en_text": ["objective=pretrain", "stages=[prepare,train]"],
}


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name != "recipe" and p.name != "config.yaml"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_option_composes_and_validates(path):
    group, option = path.parent.name, path.stem
    extra = PARTNERS.get(option, [])
    resolved = resolve([f"{group}={option}", *extra])
    assert resolved.choices[group] == option


def test_recipe_reference_doc_is_generated_from_the_schemas():
    from ftrecipes.config.reference import render

    doc = resource_dir("schemas").parent / "docs" / "recipe-reference.md"
    if not doc.is_file():
        pytest.skip("docs/ is not shipped in the wheel")
    assert doc.read_text().strip() == render().strip(), "run: python -m ftrecipes.config.reference > docs/recipe-reference.md"
