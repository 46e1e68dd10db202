"""Reward functions for `objective=grpo`: built-ins by name, user functions only when allowlisted.

Each entry of `objective.rewards` is `{name, weight, ...}`; `name` is one of:

- a built-in (`BUILTINS`), configured by the entry's own keys:

  - `exact_match`: 1.0 when the completion equals the row's reference answer (whitespace at
    either end ignored), else 0.0. Needs rows with an answer (alpaca, chat or sharegpt data).
  - `regex`: 1.0 when the completion (outer whitespace stripped) fully matches `pattern` (`.`
    also matches newlines), else 0.0.
  - `json_schema`: 1.0 when the completion parses as JSON and is valid against `json_schema`
    (any JSON value when `json_schema` is null), else 0.0.
  - `length_penalty`: 0.0 up to `max_tokens` completion tokens, then falling linearly to -1.0 at
    twice `max_tokens` (and staying there).

- the name of an installed entry point in the `ftrecipes.rewards` group (a package that declares
  `[project.entry-points."ftrecipes.rewards"] my_reward = "mypkg.rewards:my_reward"`);
- a dotted path (`mypkg.rewards.my_reward` or `mypkg.rewards:my_reward`) whose module is
  allowlisted: listed in `reward_modules` on the command line (a recipe file may not set it; a
  rule refuses it), or the module of an installed `ftrecipes.rewards` entry point. The module is
  imported only after that check, so a recipe file alone can never make ftrecipes run its code.
  Keyword arguments for a user function come from the entry's `args` mapping.

A reward function is called the TRL way, `f(prompts=..., completions=..., completion_ids=...,
reference=[...] (when rows have answers), **more) -> list[float | None]`, one value per
completion; completions are `[{"role": "assistant", "content": str}]` for chat prompts.

This module imports no torch, so validation rules can use `check_name` cheaply.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from importlib.metadata import entry_points

from ftrecipes.errors import RecipeError

ENTRY_POINT_GROUP = "ftrecipes.rewards"
# The keys of a reward entry that configure each built-in (other keys must stay unset).
BUILTIN_KEYS = {"exact_match": (), "regex": ("pattern",), "json_schema": ("json_schema",),
                "length_penalty": ("max_tokens",)}
REQUIRED_KEYS = {"regex": ("pattern",), "length_penalty": ("max_tokens",)}
PARAM_KEYS = ("pattern", "json_schema", "max_tokens", "args")


def completion_text(completion) -> str:
    """The text of one completion: a string (text prompts) or a list of message dicts (chat)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        return str(completion[-1].get("content") or "")
    return ""


class Reward:
    """A picklable reward callable; `__name__` is the name TRL logs it under (`rewards/NAME/mean`)."""

    needs_reference = False

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [self.score(completion_text(c), i, kwargs) for i, c in enumerate(completions)]

    def score(self, text: str, index: int, columns: dict) -> float:
        raise NotImplementedError


class ExactMatch(Reward):
    needs_reference = True

    def score(self, text, index, columns):
        return float(text.strip() == str(columns["reference"][index]).strip())


class Regex(Reward):
    def __init__(self, name: str, pattern: str):
        super().__init__(name)
        self.pattern = re.compile(pattern, re.DOTALL)

    def score(self, text, index, columns):
        return float(self.pattern.fullmatch(text.strip()) is not None)


class JsonSchema(Reward):
    def __init__(self, name: str, schema: dict | None):
        from jsonschema import Draft202012Validator

        super().__init__(name)
        self.validator = Draft202012Validator(schema) if schema is not None else None

    def score(self, text, index, columns):
        try:
            value = json.loads(text)
        except ValueError:
            return 0.0
        return 1.0 if self.validator is None else float(self.validator.is_valid(value))


class LengthPenalty(Reward):
    def __init__(self, name: str, max_tokens: int):
        super().__init__(name)
        self.max_tokens = max_tokens

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        # token counts when TRL passes them (it always does); characters / 4 as a fallback
        lengths = ([len(ids) for ids in completion_ids] if completion_ids is not None
                   else [len(completion_text(c)) / 4 for c in completions])
        return [-min(1.0, max(0.0, n - self.max_tokens) / self.max_tokens) for n in lengths]


class UserReward(Reward):
    """A user function, with the entry's `args` as keyword arguments; `None` results become NaN
    in TRL (ignored in the mean)."""

    def __init__(self, name: str, function: Callable, args: dict):
        super().__init__(name)
        self.function, self.args = function, args

    def __call__(self, prompts, completions, **kwargs):
        return list(self.function(prompts=prompts, completions=completions, **kwargs, **self.args))


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def split_path(name: str) -> tuple[str, str] | None:
    """`("pkg.mod", "func")` for `pkg.mod:func` or `pkg.mod.func`; None for a plain name."""
    if ":" in name:
        module, _, attr = name.partition(":")
    elif "." in name:
        module, _, attr = name.rpartition(".")
    else:
        return None
    ok = all(part.isidentifier() for part in module.split(".")) and attr.isidentifier()
    return (module, attr) if ok else None


def allowlisted(module: str, reward_modules) -> bool:
    """Whether `module` is, or is inside, a module the user allowlisted or an entry point names."""
    allowed = set(reward_modules or ()) | {ep.module for ep in _entry_points().values()}
    return any(module == m or module.startswith(m + ".") for m in allowed)


def check_name(name: str, reward_modules) -> tuple[str, str] | None:
    """None when `name` can be used, else `(message, hint)`; never imports the user's module."""
    if name in BUILTINS or name in _entry_points():
        return None
    path = split_path(name)
    if path is None:
        from ftrecipes.config.problems import closest

        known = [*BUILTINS, *_entry_points()]
        guess = closest(name, known)
        return (f"'{name}' is neither a built-in reward nor an installed entry point",
                f"did you mean {guess}?" if guess else f"use one of: {', '.join(known)}, or a dotted "
                "path module.function whose module you allowlist with reward_modules=[module]")
    if not allowlisted(path[0], reward_modules):
        return (f"the module '{path[0]}' of reward '{name}' is not allowlisted",
                f"pass reward_modules=[{path[0]}] on the command line (a recipe file cannot allowlist "
                f"code), or install a package that declares it in the '{ENTRY_POINT_GROUP}' entry points")
    return None


def _import_user(name: str, reward_modules) -> Callable:
    problem = check_name(name, reward_modules)
    if problem:
        raise RecipeError(problem[0], hint=problem[1])
    if name in _entry_points():
        return _entry_points()[name].load()
    module_name, attr = split_path(name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"cannot import the reward module '{module_name}': {exc}",
                          hint="install the package that provides it, or fix the dotted path") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise RecipeError(f"'{module_name}' has no function '{attr}'", hint="fix objective.rewards[].name")
    return function


def build(entry, reward_modules=()) -> Reward:
    """One reward callable for one `objective.rewards` entry (an OmegaConf node or a dict)."""
    get = entry.get
    name = get("name")
    if name == "exact_match":
        return ExactMatch(name)
    if name == "regex":
        return Regex(name, get("pattern"))
    if name == "json_schema":
        schema = get("json_schema")
        if schema is not None and not isinstance(schema, dict):
            from omegaconf import OmegaConf

            schema = OmegaConf.to_container(schema, resolve=True)
        return JsonSchema(name, schema)
    if name == "length_penalty":
        return LengthPenalty(name, int(get("max_tokens")))
    args = get("args") or {}
    if not isinstance(args, dict):
        from omegaconf import OmegaConf

        args = OmegaConf.to_container(args, resolve=True)
    return UserReward(name, _import_user(name, reward_modules), args)


BUILTINS = {"exact_match": ExactMatch, "regex": Regex, "json_schema": JsonSchema, "length_penalty": LengthPenalty}
