"""The JSON Schemas in `schemas/`: loading, `$ref` resolution, defaults and the index of known keys.

The schemas are the one source of truth for recipe keys. This module answers three questions
about them that plain validation does not: which keys are allowed at a path for a given instance
(for did-you-mean), what the defaults are (the resolver fills them in), and where else a key name
is valid (for "did you mean method.lora_alpha?").
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urljoin

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from ftrecipes.paths import resource_dir

ROOT = "recipe.schema.json"


@functools.lru_cache(maxsize=None)
def load_schemas(schema_dir: str | None = None) -> tuple[Draft202012Validator, Registry]:
    """Returns a validator for the root schema and the registry that resolves its `$ref`s.

    Every `*.schema.json` is registered under its file URI, so relative `$ref`s (which IDEs
    follow too) resolve exactly as written.
    """
    base = Path(schema_dir) if schema_dir else resource_dir("schemas")
    resources = []
    root_contents = None
    for path in sorted(base.rglob("*.schema.json")):
        contents = json.loads(path.read_text())
        contents = {**contents, "$id": path.resolve().as_uri()}
        resources.append((contents["$id"], Resource.from_contents(contents)))
        if path.name == ROOT and path.parent == base:
            root_contents = contents
    if root_contents is None:
        raise FileNotFoundError(f"{base / ROOT} is missing")
    registry = Registry().with_resources(resources)
    return Draft202012Validator(root_contents, registry=registry), registry


def _deref(node: dict, base_uri: str, registry: Registry) -> tuple[dict, str]:
    while "$ref" in node:
        ref = node["$ref"]
        node = registry.resolver(base_uri).lookup(ref).contents
        base_uri = urljoin(base_uri, ref.split("#", 1)[0]) if not ref.startswith("#") else base_uri
    return node, base_uri


def object_view(node: dict, base_uri: str, instance: Any, registry: Registry) -> tuple[dict, str]:
    """Merges the properties that apply to `instance` (following `$ref`, `allOf` and `if`/`then`).

    Returns `({name: (subschema, base_uri)}, closed)` where `closed` is True when unknown keys
    are rejected at this level.
    """
    node, base_uri = _deref(node, base_uri, registry)
    props = {k: (v, base_uri) for k, v in node.get("properties", {}).items()}
    closed = node.get("additionalProperties") is False
    for branch in node.get("allOf", []):
        if "if" in branch:
            test = Draft202012Validator(branch["if"], registry=registry)
            if not test.is_valid(instance):
                continue
            branch = branch["then"]
        sub_props, sub_closed = object_view(branch, base_uri, instance, registry)
        props.update({k: v for k, v in sub_props.items() if k not in props or k == "name"})
        closed = closed or sub_closed
    return props, closed


def fill_defaults(instance: dict, node: dict, base_uri: str, registry: Registry) -> list[str]:
    """Adds schema defaults for absent keys, in place. Returns the dotted paths it filled."""
    filled: list[str] = []

    def walk(obj: dict, schema: dict, uri: str, prefix: str) -> None:
        props, _ = object_view(schema, uri, obj, registry)
        for key, (sub, sub_uri) in props.items():
            sub, sub_uri = _deref(sub, sub_uri, registry)
            if key not in obj and "default" in sub:
                obj[key] = json.loads(json.dumps(sub["default"]))
                filled.append(prefix + key)
            if isinstance(obj.get(key), dict):
                walk(obj[key], sub, sub_uri, f"{prefix}{key}.")

    walk(instance, node, base_uri, "")
    return filled


def known_keys(instance: dict, path: list[str], registry: Registry, root: dict, root_uri: str) -> list[str]:
    """The keys allowed at `path` for this instance (e.g. a LoRA method's keys under `method`)."""
    node, uri, obj = root, root_uri, instance
    for part in path:
        if isinstance(obj, list):  # a list item, by index: objective.rewards.0
            node, uri = _deref(node, uri, registry)
            if "items" not in node or not str(part).isdigit() or int(part) >= len(obj):
                return []
            node, obj = node["items"], obj[int(part)]
            continue
        props, _ = object_view(node, uri, obj, registry)
        if part not in props:
            return []
        node, uri = props[part]
        obj = obj.get(part, {}) if isinstance(obj, dict) else {}
    props, _ = object_view(node, uri, obj if isinstance(obj, dict) else {}, registry)
    return sorted(props)


def all_key_paths(root: dict, root_uri: str, registry: Registry) -> Iterator[tuple[str, str]]:
    """Every (dotted path, owner) in the schema tree, over all branches.

    `owner` names the `if`/`then` branch that allows the key (e.g. "method.name=lora"), or "".
    """

    def walk(node: dict, uri: str, prefix: str, owner: str, seen: frozenset) -> Iterator[tuple[str, str]]:
        node, uri = _deref(node, uri, registry)
        key = (uri, id(node))
        if key in seen:
            return
        seen = seen | {key}
        for name, sub in node.get("properties", {}).items():
            yield prefix + name, owner
            yield from walk(sub, uri, f"{prefix}{name}.", owner, seen)
        for branch in node.get("allOf", []):
            branch_owner = owner
            if "if" in branch:
                cond = branch["if"].get("properties", {})
                branch_owner = ", ".join(
                    f"{prefix}{k}={v['const']}" for k, v in cond.items() if "const" in v
                )
                branch = branch["then"]
            yield from walk(branch, uri, prefix, branch_owner, seen)

    yield from walk(root, root_uri, "", "", frozenset())
