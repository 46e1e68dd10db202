"""Fuzzing the recipe tree: hundreds of malformed recipes, each rejected with exit 2, its key path,
its origin, a fix, and no traceback, before any model (or torch) is loaded.

Cases are generated from the real tree, so they grow with it:

- a typo (edit distance 1) of every key at every level of every file in recipes/ (keys under a
  free-form mapping, such as a reward's JSON schema, are user content and skipped), placed in a
  team folder that shadows the file;
- a typo of every non-leaf key of the composed quickstart and qwen32b_qlora recipes, on the
  command line (leaf-key typos there are tests/test_recipe_errors.py's);
- a wrong type, an out-of-range value and an unknown enum value for every leaf of those two
  recipes whose schema says what is allowed, on the command line;
- a duplicated key in every file;
- and, accepted rather than rejected, `1e-4` written YAML-1.1 style (no dot), which must load as
  the float 0.0001.

The cases run in-process through the real CLI entry (`conftest.run_cli`), split over two fresh
Python processes so both cores work and `sys.modules` can show that torch was never imported.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
WORKERS = 2
RECIPE_NAMES = ("quickstart", "qwen32b_qlora")
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


# ---- generating cases -------------------------------------------------------------------------

def typo(word: str, taken: set[str]) -> str | None:
    """A deterministic edit-distance-1 misspelling of `word` that is not itself a valid name."""
    middle = range(1, len(word) - 1) if len(word) > 3 else range(len(word))
    candidates = [word[:i] + word[i + 1:] for i in middle if word[i].isalpha()]  # deletion
    candidates += [word[:i] + ("x" if word[i] != "x" else "q") + word[i + 1:] for i in middle]  # substitution
    candidates += [word + word[-1]]  # insertion
    return next((c for c in candidates if c and c not in taken and c != word and not c[0].isdigit()), None)


def _schema():
    from ftrecipes.config.schema import load_schemas

    validator, registry = load_schemas()
    return validator.schema, validator.schema["$id"], registry


def schema_at(instance, parts: list[str]):
    """(node, uri) of the schema that governs `parts` for this instance, or None when unknown."""
    from jsonschema import Draft202012Validator

    from ftrecipes.config.schema import _deref, object_view

    node, uri, registry = _schema()
    obj = instance
    for part in parts:
        node, uri = _deref(node, uri, registry)
        for key in ("oneOf", "anyOf"):
            if key in node:
                fits = [b for b in node[key] if Draft202012Validator(b, registry=registry).is_valid(obj)]
                if not fits:
                    return None
                node, uri = _deref(fits[0], uri, registry)
        if isinstance(obj, list):
            if "items" not in node or not part.isdigit() or int(part) >= len(obj):
                return None
            node, obj = node["items"], obj[int(part)]
            continue
        props, _ = object_view(node, uri, obj if isinstance(obj, dict) else {}, registry)
        if not isinstance(obj, dict) or part not in props:
            return None
        (node, uri), obj = props[part], obj.get(part)
    return _deref(node, uri, registry)


def closed_keys(instance, parent: list[str]) -> set[str] | None:
    """The keys allowed under `parent` when the schema closes it, else None (free-form)."""
    from ftrecipes.config.schema import object_view

    found = schema_at(instance, parent)
    if found is None:
        return None
    node, uri = found
    obj = instance
    for part in parent:
        obj = obj[int(part)] if isinstance(obj, list) else obj.get(part, {})
    props, closed = object_view(node, uri, obj if isinstance(obj, dict) else {}, _schema()[2])
    return set(props) if closed else None


def key_nodes(node, prefix: list[str]):
    """(path parts, key node) of every mapping key in a YAML node tree, list items by index."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not prefix and key.value == "defaults":
                continue
            yield prefix + [str(key.value)], key
            yield from key_nodes(value, prefix + [str(key.value)])
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            yield from key_nodes(value, prefix + [str(index)])


def _plain(args: list[str]):
    from omegaconf import OmegaConf

    from ftrecipes.config.resolve import resolve

    return OmegaConf.to_container(resolve(args).recipe, resolve=True)


def base_for(rel: Path, recipes_dir: Path) -> tuple[list[str], dict] | None:
    """The command-line choices that pick this file and compose cleanly, and the recipe they make."""
    from ftrecipes.config.problems import RecipeProblems

    if rel.parts[0] == "recipe":
        tries = [[f"recipe={rel.stem}"]]
    elif len(rel.parts) == 1:
        tries = [[]]
    else:
        group, option = rel.parts[0], rel.stem
        users = [p.stem for p in sorted((recipes_dir / "recipe").glob("*.yaml"))
                 if re.search(rf"/{group}:\s*{re.escape(option)}\s*$", p.read_text(), re.M)]
        tries = [[f"{group}={option}"]] + [[f"recipe={r}", f"{group}={option}"] for r in users]
    for args in tries:
        try:
            return args, _plain(args + ["dry_run=true"])
        except RecipeProblems:
            continue
    return None


def file_cases(recipes_dir: Path) -> tuple[list[dict], list[str]]:
    cases, skipped = [], []
    for path in sorted(recipes_dir.rglob("*.yaml")):
        rel = path.relative_to(recipes_dir)
        text = path.read_text()
        base = base_for(rel, recipes_dir)
        if base is None:
            skipped.append(f"{rel}: no choice composes it cleanly")
            continue
        args, instance = base
        glob_pkg = "@package _global_" in text or len(rel.parts) == 1
        prefix = [] if glob_pkg else [rel.parts[0]]
        lines = text.splitlines()
        duplicated = False
        for parts, key in key_nodes(yaml.compose(text, Loader=yaml.SafeLoader), []):
            full = prefix + parts
            allowed = closed_keys(instance, full[:-1])
            if allowed is None:
                skipped.append(f"{rel}:{key.start_mark.line + 1} {'.'.join(full)} (free-form)")
                continue
            line = key.start_mark.line
            wrong = typo(parts[-1], allowed)
            col = key.start_mark.column
            edited = lines[:line] + [lines[line][:col] + lines[line][col:].replace(parts[-1], wrong, 1)] + lines[line + 1:]
            cases.append({"kind": "file typo", "files": {str(rel): "\n".join(edited) + "\n"}, "args": args,
                          "path": ".".join(full[:-1] + [wrong]), "suggest": ".".join(full),
                          "origin": f"{rel}:{line + 1}", "message": "unknown key"})
            if not duplicated and not parts[-1].isdigit() and ":" in lines[line][col:] and \
                    lines[line].split(":", 1)[1].strip() and not any(c in lines[line] for c in "[{"):
                dup = lines[:line + 1] + [lines[line]] + lines[line + 1:]
                cases.append({"kind": "duplicate key", "files": {str(rel): "\n".join(dup) + "\n"}, "args": args,
                              "path": ".".join(full), "origin": f"{rel}:{line + 2}", "message": "duplicate key"})
                duplicated = True
    return cases, skipped


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield list(prefix + (key,)), value


def _nodes(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield list(prefix + (key,))
            yield from _nodes(value, prefix + (key,))


def command_line_cases() -> list[dict]:
    cases, seen = [], set()
    for name in RECIPE_NAMES:
        base = [f"recipe={name}"]
        instance = _plain(base + ["dry_run=true"])
        for parts in _nodes(instance):
            allowed = closed_keys(instance, parts[:-1])
            if allowed is None:
                continue  # under a free-form mapping: any key is the user's
            wrong = typo(parts[-1], allowed)
            path = ".".join(parts[:-1] + [wrong])
            cases.append({"kind": "command-line typo", "args": base + [f"+{path}=1"], "path": path,
                          "suggest": ".".join(parts), "origin": f"command line '+{path}=1'", "message": "unknown key"})
        for parts, value in _leaves(instance):
            dotted = ".".join(parts)
            found = schema_at(instance, parts)
            if found is None or dotted in seen or dotted == "dry_run":  # every case runs with dry_run=true
                continue
            seen.add(dotted)
            cases += value_cases(base, dotted, found[0], value)
    return cases


def value_cases(base: list[str], path: str, node: dict, value) -> list[dict]:
    out = []
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    bad = None
    if {"integer", "number"} & set(kinds) and "string" not in kinds:
        bad = "fast"
    elif "boolean" in kinds and "string" not in kinds:
        bad = "maybe"
    elif "string" in kinds and "array" not in kinds:
        bad = "[1,2]"
    elif "array" in kinds:
        bad = "7"
    if bad is not None:
        out.append({"kind": "wrong type", "args": base + [f"{path}={bad}"], "path": path,
                    "message": "expected"})
    for bound, delta in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
        if bound in node and not ("integer" in kinds and isinstance(node[bound], float)):
            out.append({"kind": "out of range", "args": base + [f"{path}={node[bound] + delta}"], "path": path,
                        "message": "is out of range"})
    enum = [v for v in node.get("enum", []) if isinstance(v, str)]
    if enum and isinstance(value, str) and value in enum:
        wrong = typo(value, set(enum))
        out.append({"kind": "unknown enum", "args": base + [f"{path}={wrong}"], "path": path,
                    "message": "is not allowed", "suggest_value": value})
    return out


def all_cases() -> tuple[list[dict], list[str]]:
    from ftrecipes.paths import resource_dir

    cases, skipped = file_cases(resource_dir("recipes"))
    return cases + command_line_cases(), skipped


# ---- running cases (in a fresh process) -------------------------------------------------------

def check(case: dict, result) -> str | None:
    """Why this case's output is wrong, or None."""
    if result.code != 2:
        return f"exit {result.code}"
    if "Traceback" in result.err + result.out:
        return "traceback"
    lines = result.err.splitlines()
    index = next((i for i, x in enumerate(lines) if x.startswith(f"  {case['path']}: ") and case["message"] in x), None)
    if index is None:
        return f"no '{case['path']}: ...{case['message']}...' line"
    block = "\n".join([lines[index], *itertools.takewhile(lambda x: x.startswith("      "), lines[index + 1:])])
    if "fix:" not in block:
        return "no fix"
    for key in ("suggest", "suggest_value"):
        if key in case and f"did you mean {case[key]}?" not in block:
            return f"no 'did you mean {case[key]}?'"
    if "origin" in case and case["origin"] not in block:
        return f"origin {case['origin']} not named"
    return None


def run_worker(cases_file: str, index: int, count: int, out_file: str) -> None:
    from conftest import run_cli

    cases = json.loads(Path(cases_file).read_text())[index::count]
    failures, work = [], Path(tempfile.mkdtemp(prefix="fuzz"))
    os.chdir(work)
    for number, case in enumerate(cases):
        args = list(case["args"])
        if case.get("files"):
            team = work / f"team{number}"
            for rel, text in case["files"].items():
                (team / rel).parent.mkdir(parents=True, exist_ok=True)
                (team / rel).write_text(text)
            args = ["--config-dir", str(team)] + args
        result = run_cli(*args, "dry_run=true")
        problem = check(case, result)
        if problem:
            failures.append({"case": case["kind"], "args": args, "problem": problem, "err": result.err[-1500:]})
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    Path(out_file).write_text(json.dumps({"ran": len(cases), "failures": failures, "heavy": heavy[:5]}))


def run_floats(out_file: str) -> None:
    """`1e-4` with no dot, in a file and on the command line, loads as a float."""
    from ftrecipes.config.problems import RecipeProblems
    from ftrecipes.config.resolve import resolve
    from ftrecipes.paths import resource_dir

    work = Path(tempfile.mkdtemp(prefix="fuzz-floats"))
    found = {}
    for path in sorted(resource_dir("recipes").rglob("*.yaml")):
        rel = path.relative_to(resource_dir("recipes"))
        text = path.read_text()
        match = re.search(r"^(\s*)(learning_rate): (\d)\.0e-(\d)\s*$", text, re.M)
        if not match or rel.parts[0] != "method":
            continue
        team = work / rel.stem
        (team / "method").mkdir(parents=True)
        (team / "method" / rel.name).write_text(text.replace(match.group(0), f"{match.group(1)}learning_rate: "
                                                              f"{match.group(3)}e-{match.group(4)}"))
        try:
            recipe = resolve([f"method={rel.stem}"], [str(team)]).recipe
        except RecipeProblems as error:
            found[str(rel)] = [error.render(), None]
            continue
        found[str(rel)] = [recipe.method.learning_rate, float(f"{match.group(3)}e-{match.group(4)}")]
    found["command line"] = [resolve(["method.learning_rate=1e-4"]).recipe.method.learning_rate, 0.0001]
    Path(out_file).write_text(json.dumps(found))


# ---- the test ---------------------------------------------------------------------------------

def test_malformed_recipes_are_all_rejected_with_path_origin_and_fix(tmp_path):
    cases, skipped = all_cases()
    kinds = {k: sum(c["kind"] == k for c in cases) for k in sorted({c["kind"] for c in cases})}
    assert len(cases) >= 500, kinds
    assert all(kinds.get(k, 0) >= 20 for k in ("file typo", "command-line typo", "wrong type", "out of range",
                                               "unknown enum", "duplicate key")), kinds
    assert len(skipped) < len(cases) // 5, skipped  # only free-form mappings are skipped
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "FTRECIPES_RECIPE_PATH"}
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(tmp_path / "cases.json"), str(i), str(WORKERS),
                               str(tmp_path / f"out{i}.json")], cwd=HERE, env=env) for i in range(WORKERS)]
    floats = subprocess.run([sys.executable, __file__, "floats", str(tmp_path / "floats.json")], cwd=HERE, env=env)
    assert all(p.wait(timeout=900) == 0 for p in procs) and floats.returncode == 0
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(WORKERS)]
    assert sum(r["ran"] for r in results) == len(cases)
    failures = [f for r in results for f in r["failures"]]
    assert failures == [], f"{len(failures)} of {len(cases)} ({kinds}) failed:\n" + "\n".join(
        json.dumps(f, indent=1) for f in failures[:15])
    assert all(r["heavy"] == [] for r in results), [r["heavy"] for r in results]
    found = json.loads((tmp_path / "floats.json").read_text())
    assert len(found) >= 3, found
    for where, (got, expected) in found.items():
        assert isinstance(got, float) and got == expected, where


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        run_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        run_floats(sys.argv[2])
