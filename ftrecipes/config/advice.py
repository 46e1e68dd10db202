"""Advice, not errors: values that validate but sit outside the range people usually use.

A schema property may carry `"x-usual": [low, high]` (JSON Schema ignores unknown keywords), e.g.
the learning rate of each method fragment (1e-5 to 5e-5 for full fine-tuning, 2e-4 to 5e-4 for the
LoRA family) and the LoRA rank (8 to 64). `advice(recipe)` returns one plain sentence per value
outside its range; the launcher prints them and goes on. The ranges live next to the keys they
describe, so a new method states its own in its schema fragment.
"""

from __future__ import annotations

from ftrecipes.config.schema import _deref, load_schemas, object_view


def advice(recipe) -> list[str]:
    """Sentences naming the key, its value and the usual range, for every value outside it."""
    from omegaconf import DictConfig, OmegaConf

    tree = OmegaConf.to_container(recipe, resolve=True) if isinstance(recipe, DictConfig) else recipe
    validator, registry = load_schemas()
    notes: list[str] = []
    _walk(tree, validator.schema, validator.schema["$id"], registry, "", tree, notes)
    return notes


def print_advice(recipe) -> None:
    """What the launcher calls once per job: one `ftrecipes: note:` line per piece of advice."""
    for note in advice(recipe):
        print(f"ftrecipes: note: {note}")


def _walk(obj: dict, node: dict, uri: str, registry, prefix: str, root: dict, notes: list[str]) -> None:
    props, _ = object_view(node, uri, obj, registry)
    for key, (sub, sub_uri) in props.items():
        if key not in obj:
            continue
        value = obj[key]
        sub, sub_uri = _deref(sub, sub_uri, registry)
        if isinstance(value, dict):
            _walk(value, sub, sub_uri, registry, f"{prefix}{key}.", root, notes)
        elif "x-usual" in sub and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = sub["x-usual"]
            if low <= value <= high:
                continue
            side = "above" if value > high else "below"
            whose = f" for method '{root['method']['name']}'" if prefix == "method." else ""
            notes.append(f"{prefix}{key}={value:g} is {side} the usual range{whose} ({low:g} to {high:g}); "
                         "fine if you meant it")
