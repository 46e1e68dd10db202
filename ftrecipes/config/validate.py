"""Validating a composed recipe against the JSON Schemas, then against the cross-field rules.

Every problem is collected (schema errors, unknown keys with a did-you-mean, rule violations) and
reported at once with its key path and origin. Defaults from the schemas are filled in first, and
the filled keys are listed so the resolved recipe can say where each value came from.
"""

from __future__ import annotations

import json
from typing import Any

from ftrecipes.config import rules
from ftrecipes.config.problems import Problem, closest, format_choices
from ftrecipes.config.provenance import origin_of
from ftrecipes.config.schema import all_key_paths, fill_defaults, known_keys, load_schemas

_JSON_TYPES = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def validate(instance: dict, origins: dict[str, str]) -> tuple[list[Problem], list[str]]:
    """Fills defaults into `instance` (in place) and returns (problems, filled key paths)."""
    validator, registry = load_schemas()
    root, root_uri = validator.schema, validator.schema["$id"]
    filled = fill_defaults(instance, root, root_uri, registry)
    problems: list[Problem] = []
    errors = list(validator.iter_errors(instance))
    missing: dict[str, list[str]] = {}  # path -> required keys that are not set there
    for error in errors:
        if error.validator == "required" and isinstance(error.instance, dict):
            missing.setdefault(_path(error.absolute_path), []).extend(
                k for k in error.validator_value if k not in error.instance)
    for error in errors:
        problems.extend(_explain(error, instance, origins, registry, root, root_uri, missing))
    problems.extend(_misspelled_required(instance, origins, missing, {p.path for p in problems},
                                         registry, root, root_uri))
    if not problems:
        problems.extend(rules.check(instance, origins))
    return problems, filled


def _path(parts) -> str:
    return ".".join(str(p) for p in parts)


def _misspelled_required(instance, origins, missing, reported, registry, root, root_uri) -> list[Problem]:
    """A required key that is missing because it was misspelled (`method.nme` for `method.name`):
    the schema branch that would reject the misspelling is the one the missing key picks, so no
    other error names it."""
    problems = []
    for where, keys in missing.items():
        obj = instance
        for part in where.split(".") if where else []:
            obj = obj[int(part)] if isinstance(obj, list) else obj.get(part, {})
        if not isinstance(obj, dict):
            continue
        allowed = known_keys(instance, where.split(".") if where else [], registry, root, root_uri)
        for extra in sorted(set(obj) - set(allowed)):
            full = f"{where}.{extra}" if where else extra
            guess = closest(extra, keys)
            if guess and full not in reported:
                problems.append(Problem(full, "unknown key", origins.get(full) or origin_of(full, origins),
                                        f"did you mean {where + '.' if where else ''}{guess}?"))
    return problems


def _explain(error, instance, origins, registry, root, root_uri, missing=None) -> list[Problem]:
    path = list(error.absolute_path)
    where = _path(path)
    origin = origin_of(where, origins) if where else None
    kind, schema_value, value = error.validator, error.validator_value, error.instance
    if kind in ("additionalProperties", "unevaluatedProperties"):
        allowed = known_keys(instance, [str(p) for p in path], registry, root, root_uri)
        extras = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        return [_unknown_key(where, key, allowed, origins, registry, root, root_uri, (missing or {}).get(where, []))
                for key in extras]
    if kind == "required":
        missing = [k for k in schema_value if k not in (value or {})]
        return [Problem(_path(path + [k]), "missing required key", origin,
                        f"set {_path(path + [k])} in the recipe or on the command line")
                for k in missing]
    if kind == "type":
        expected = schema_value if isinstance(schema_value, list) else [schema_value]
        got = _JSON_TYPES.get(type(value), type(value).__name__)
        hint = f"give {' or '.join(expected)}"
        if isinstance(value, str) and _looks_numeric(value):
            hint += " (unquoted: write 1.0e-4, not '1e-4')"
        return [Problem(where, f"expected {' or '.join(expected)}, got {got} {_show(value)}", origin, hint)]
    if kind == "enum":
        guess = closest(str(value), [str(v) for v in schema_value])
        hint = f"choose one of: {format_choices(schema_value)}"
        return [Problem(where, f"{_show(value)} is not allowed", origin,
                        f"did you mean {guess}? ({hint})" if guess else hint)]
    if kind == "const":
        return [Problem(where, f"must be {_show(schema_value)}, got {_show(value)}", origin, None)]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [Problem(where, f"{_show(value)} is out of range: it must be {bounds[kind]} {schema_value}",
                        origin, f"set {where} to a value {bounds[kind]} {schema_value}")]
    if kind in ("oneOf", "anyOf"):
        return [Problem(where, f"{_show(value)} does not fit: {_describe(error.schema)}", origin, None)]
    if kind == "uniqueItems":
        return [Problem(where, f"{_show(value)} lists an item twice", origin, "list each item once")]
    if kind in ("minItems", "minLength"):
        return [Problem(where, f"{_show(value)} is empty", origin, "give at least one item")]
    return [Problem(where, error.message, origin, None)]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(schema: dict) -> str:
    parts = [s.get("description") or json.dumps(s) for s in schema.get("oneOf", schema.get("anyOf", []))]
    return schema.get("description") or " or ".join(parts)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(where, key, allowed, origins, registry, root, root_uri, missing=()) -> Problem:
    full = f"{where}.{key}" if where else key
    origin = origins.get(full) or next(
        (o for k, o in origins.items() if k.startswith(full + ".")), None) or origin_of(where, origins)
    guess = closest(key, allowed) or closest(key, list(missing), cutoff=0.0)  # 'x' set, required 'r' not
    if guess:
        hint = f"did you mean {where + '.' if where else ''}{guess}?"
    else:
        same_name = [(p, owner) for p, owner in all_key_paths(root, root_uri, registry)
                     if p.rsplit(".", 1)[-1] == key]
        owners = sorted({owner for p, owner in same_name if p == full and owner})
        if owners:
            return Problem(full, f"this key does not apply here; it is valid only with {' / '.join(owners)}",
                           origin, f"remove it, or choose a matching option ({', '.join(owners)})")
        elsewhere = [p for p, _ in same_name if p != full]
        if elsewhere:
            hint = f"did you mean {elsewhere[0]}?"
        else:
            all_names = {p.rsplit('.', 1)[-1]: p for p, _ in all_key_paths(root, root_uri, registry)}
            near = closest(key, list(all_names), cutoff=0.75)
            hint = f"did you mean {all_names[near]}?" if near else f"known keys here: {format_choices(allowed)}"
    return Problem(full, "unknown key", origin, hint)
