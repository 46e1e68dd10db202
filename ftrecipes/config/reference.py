"""Renders docs/recipe-reference.md from the JSON Schemas, so the docs never drift from them.

    python -m ftrecipes.config.reference > docs/recipe-reference.md
"""

from __future__ import annotations

import json

from ftrecipes.config.schema import _deref, load_schemas


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "oneOf" in node or "anyOf" in node:
        return " or ".join(_type(n) for n in node.get("oneOf", node.get("anyOf", [])))
    kind = node.get("type", "")
    kind = " \\| ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in node:
        kind = f"list of {_type(node['items'])}"
    return kind


def _range(node: dict) -> str:
    marks = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    return ", ".join(f"{sign} {node[k]}" for k, sign in marks.items() if k in node)


def _rows(node: dict, uri: str, registry, prefix: str, required: set[str]):
    node, uri = _deref(node, uri, registry)
    for name, sub in node.get("properties", {}).items():
        sub, sub_uri = _deref(sub, uri, registry)
        path = prefix + name
        default = json.dumps(sub["default"]) if "default" in sub else ""
        yield (f"| `{path}` | {_type(sub)} | {_range(sub)} | {'yes' if name in required else ''} | "
               f"{default} | {sub.get('description', '')} |")
        if sub.get("type") == "object" or "properties" in sub:
            yield from _rows(sub, sub_uri, registry, f"{path}.", set(sub.get("required", [])))


def render() -> str:
    validator, registry = load_schemas()
    root, uri = validator.schema, validator.schema["$id"]
    head = "| key | type | range | required | default | meaning |\n|---|---|---|---|---|---|"
    out = ["# Recipe reference", "",
           "Generated from `schemas/` by `python -m ftrecipes.config.reference`; do not edit by hand.", ""]
    top = [r for r in _rows({k: v for k, v in root.items() if k != "properties"} | {
        "properties": {k: v for k, v in root["properties"].items() if "$ref" not in v}}, uri, registry, "",
        set(root.get("required", [])))]
    out += ["## Run-level keys", "", head, *top, ""]
    for key, sub in root["properties"].items():
        if "$ref" not in sub:
            continue
        node, node_uri = _deref(sub, uri, registry)
        out += [f"## `{key}`", "", node.get("description", ""), ""]
        branches = [b for b in node.get("allOf", []) if "then" in b]
        if branches:
            for branch in branches:
                frag, frag_uri = _deref(branch["then"], node_uri, registry)
                out += [f"### `{key}.name: {frag['properties']['name']['const']}`", "",
                        frag.get("description", ""), "", head,
                        *_rows(frag, frag_uri, registry, f"{key}.", set(frag.get("required", []))), ""]
        else:
            out += [head, *_rows(node, node_uri, registry, f"{key}.", set(node.get("required", []))), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
