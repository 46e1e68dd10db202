"""From command-line overrides to a strict, validated recipe: compose, resolve, validate, freeze.

`safety` checks run first (URL folders, Hydra settings, `_target_` keys), before composition and
before any interpolation is resolved. The result is an OmegaConf config in struct and read-only mode: reading a misspelled key raises,
and nothing can change a value after validation. `${oc.env:...}` values are resolved for
validation but kept as written in `recipe.resolved.yaml`, so no secret lands in the run dir.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ftrecipes.config import safety
from ftrecipes.config.compose import Composed, compose
from ftrecipes.config.problems import Problem, RecipeProblems
from ftrecipes.config.provenance import origin_of
from ftrecipes.config.validate import validate


@dataclass
class Resolved:
    """A validated recipe, plus what the run dir and the plan need to know about it."""

    recipe: DictConfig  # strict and read-only
    name: str  # recipe option, or model-method-objective
    composed: Composed
    filled_defaults: list[str]
    to_write: dict  # what recipe.resolved.yaml holds: env interpolations kept, not resolved

    @property
    def choices(self) -> dict[str, str | None]:
        return self.composed.choices


def resolve(overrides: list[str], config_dirs=()) -> Resolved:
    unsafe = safety.check_sources(overrides, config_dirs, safety.env_dirs())
    if unsafe:
        raise RecipeProblems(unsafe)
    composed = compose(overrides, config_dirs)
    raw = OmegaConf.to_container(composed.cfg, resolve=False)
    unsafe = safety.check_targets(raw, composed.origins)
    if unsafe:
        raise RecipeProblems(unsafe)
    resolved, problems = _resolve_interpolations(composed)
    validated_problems, filled = validate(resolved, composed.origins)
    problems += validated_problems
    if problems:
        raise RecipeProblems(problems)
    to_write = _group_first(_keep_env_interpolations(raw, resolved))
    recipe = OmegaConf.create(resolved)
    OmegaConf.set_struct(recipe, True)
    OmegaConf.set_readonly(recipe, True)
    return Resolved(recipe, recipe_name(composed.choices), composed, filled, to_write)


def _group_first(tree: dict) -> dict:
    groups = [g for g in ("model", "method", "objective", "data", "hardware", "logging") if g in tree]
    return {**{g: tree[g] for g in groups}, **{k: v for k, v in tree.items() if k not in groups}}


def recipe_name(choices: dict[str, str | None]) -> str:
    if choices.get("recipe"):
        return str(choices["recipe"]).replace("/", "_")
    return "-".join(str(choices.get(g)) for g in ("model", "method", "objective"))


def _resolve_interpolations(composed: Composed) -> tuple[dict, list[Problem]]:
    try:
        return OmegaConf.to_container(composed.cfg, resolve=True), []
    except Exception as exc:  # noqa: BLE001 - omegaconf raises several types for bad interpolations
        key = getattr(exc, "full_key", "") or ""
        message = str(exc).splitlines()[0]
        return OmegaConf.to_container(composed.cfg, resolve=False), [
            Problem(key, f"cannot resolve interpolation: {message}", origin_of(key, composed.origins),
                    "check the ${...} reference, or set the environment variable it reads")]


def _keep_env_interpolations(raw, resolved):
    """The resolved tree, except that values written as ${oc.env:...} stay as written."""
    if isinstance(raw, dict) and isinstance(resolved, dict):
        out = copy.deepcopy(resolved)
        for key, value in raw.items():
            if key in out:
                out[key] = _keep_env_interpolations(value, resolved[key])
        return out
    if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
        return [_keep_env_interpolations(r, v) for r, v in zip(raw, resolved)]
    if isinstance(raw, str) and "${oc.env:" in raw:
        return raw
    return resolved


def load_resolved(path: Path) -> DictConfig:
    """What worker processes call: read `recipe.resolved.yaml`, re-validate and freeze it.

    Re-validation catches hand edits to the file; workers never see the recipe folder.
    """
    cfg = OmegaConf.load(path)
    container = OmegaConf.to_container(cfg, resolve=True)
    origins = {k: str(path) for k in _paths(container)}
    # The launcher already refused remote code from any recipe file; this records its decision.
    origins["trust_remote_code"] = f"command line (recorded in {path})"
    problems, _ = validate(container, origins)
    if problems:
        raise RecipeProblems(problems)
    recipe = OmegaConf.create(container)
    OmegaConf.set_struct(recipe, True)
    OmegaConf.set_readonly(recipe, True)
    return recipe


def _paths(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out.extend(_paths(value, f"{prefix}{key}."))
    return out
