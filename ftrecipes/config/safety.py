"""Recipes are data: nothing in a recipe can make ftrecipes import or run code.

`resolve()` runs these checks first, before Hydra composes anything (`check_sources`) and right
after composition, before interpolations are resolved or any value is used (`check_targets`):

- Recipe folders (`--config-dir`, `FTRECIPES_RECIPE_PATH`) and group options (`recipe=...`)
  that are URLs are refused: download the recipe, read it, and pass the folder.
- A recipe folder's `config.yaml` may not hold a `hydra:` block, and the command line may not
  set `hydra.*`: Hydra's `hydra.searchpath` entries such as `pkg://NAME` import a Python module
  while composing (code in the current directory would run). The one exception is the job
  launcher, chosen on the command line only (`hydra/launcher=submitit_slurm|submitit_local` and
  its `hydra.launcher.<key>` settings, never `_target_`): the launcher takes those overrides out
  before composing, see `ftrecipes.distributed.submitit_launch`.
- A `_target_` key anywhere in the composed recipe (files or `+x._target_=...` overrides) is
  refused unless its value is one name directly inside a module listed in
  `ALLOWED_TARGET_PREFIXES`, defined here in code. A recipe cannot extend the list. It is empty
  today, because ftrecipes instantiates nothing from recipes; names through an alias
  (`logging.os.system`), private or dunder names, and known gadgets are refused even under an
  allowlisted prefix.

`trust_remote_code` (and `reward_modules`) are command-line-only; see `rules.COMMAND_LINE_ONLY`.
Every problem exits 2 with the key path and its `file:line` or command-line origin.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from ftrecipes.config.compose import ENV_PATH, GROUPS
from ftrecipes.config.problems import Problem
from ftrecipes.config.provenance import display_path, origin_of

# Modules whose names a `_target_` may pick: ("torch.optim",) would allow "torch.optim.AdamW".
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = ()
INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
GADGET_NAMES = frozenset({
    "os", "sys", "subprocess", "builtins", "posix", "nt", "shutil", "socket", "ctypes", "tempfile",
    "importlib", "pickle", "marshal", "runpy", "pty", "code", "codeop", "pdb", "eval", "exec",
    "compile", "system", "popen", "spawn", "open", "getattr", "setattr", "globals", "locals",
    "FileHandler", "config", "NamedTemporaryFile", "webbrowser", "multiprocessing", "signal",
})
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^(https?|ftp|s3|gs|git|ssh):", re.IGNORECASE)
URL_HINT = "recipes are not loaded from URLs: download the folder, review it, and pass it with --config-dir"


def is_url(text: str) -> bool:
    return bool(_URL.match(text.strip()))


def target_refusal(value, allowlist: tuple[str, ...] = ALLOWED_TARGET_PREFIXES) -> str | None:
    """Why `_target_: value` is refused, or None when the allowlist admits it."""
    if not isinstance(value, str) or not _DOTTED.match(value):
        return f"{value!r} is not a dotted name"
    parts = value.split(".")
    if any(p.startswith("_") for p in parts):
        return f"'{value}' reaches a private or dunder name"
    if any(p in GADGET_NAMES for p in parts):
        return f"'{value}' names code that runs commands, opens files or imports modules"
    module, _, _ = value.rpartition(".")
    if module not in allowlist:
        allowed = ", ".join(f"{a}.*" for a in allowlist) or "none: ftrecipes instantiates nothing from recipes"
        return f"'{value}' is not in the allowlist of instantiable names ({allowed})"
    return None


def _walk(node, path: str):
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            yield child, key, value
            yield from _walk(value, child)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}.{index}")


def check_targets(tree: dict, origins: dict[str, str],
                  allowlist: tuple[str, ...] = ALLOWED_TARGET_PREFIXES) -> list[Problem]:
    """Problems for every `_target_` (and its companion keys) in a composed, unresolved tree."""
    problems, admitted = [], set()
    for path, key, value in _walk(tree, ""):
        if key != "_target_":
            continue
        reason = target_refusal(value, allowlist)
        if reason is None:
            admitted.add(path.rpartition(".")[0])
            continue
        problems.append(Problem(path, f"instantiation is not allowed: {reason}",
                                origins.get(path) or origin_of(path, origins),
                                "remove the _target_ key; recipes choose behaviour only through the "
                                "documented keys (docs/recipe-reference.md)"))
    for path, key, _ in _walk(tree, ""):
        parent = path.rpartition(".")[0]
        if key in INSTANTIATE_KEYS[1:] and parent not in admitted:
            problems.append(Problem(path, f"'{key}' is a Hydra instantiation key, which recipes may not use",
                                    origins.get(path) or origin_of(path, origins), "remove it"))
    return problems


def check_sources(overrides: list[str], config_dirs=(), env_dirs=()) -> list[Problem]:
    """URL recipe folders or options, `hydra.*` overrides, and `hydra:` blocks in team primaries."""
    problems = []
    for raw, origin in [(d, "command line --config-dir") for d in config_dirs] + [
            (d, f"environment variable {ENV_PATH}") for d in env_dirs]:
        if is_url(str(raw)):
            problems.append(Problem("", f"recipe folder '{raw}' is a URL", origin, URL_HINT))
    for text in overrides:
        key, _, value = text.lstrip("+~").partition("=")
        if key.split("/")[0].split(".")[0] == "hydra":
            problems.append(Problem(key, "Hydra's own settings cannot be changed", f"command line '{text}'",
                                    "add recipe folders with --config-dir or FTRECIPES_RECIPE_PATH"))
        elif key in GROUPS and is_url(value):
            problems.append(Problem(key, f"'{value}' is a URL", f"command line '{text}'", URL_HINT))
    for folder in [*config_dirs, *env_dirs]:
        if is_url(str(folder)):
            continue
        for name in ("config.yaml", "config.yml"):
            problems.extend(_hydra_block(Path(folder).expanduser() / name))
    return problems


def env_dirs() -> list[str]:
    return [d for d in os.environ.get(ENV_PATH, "").split(os.pathsep) if d]


def _hydra_block(path: Path) -> list[Problem]:
    if not path.is_file():
        return []
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # composition reports unreadable files
    if not isinstance(root, yaml.MappingNode):
        return []
    return [Problem("hydra", "a recipe folder may not configure Hydra (hydra.searchpath can import "
                    "Python packages while composing)", f"{display_path(path)}:{k.start_mark.line + 1}",
                    "remove the hydra: block; add recipe folders with --config-dir or FTRECIPES_RECIPE_PATH")
            for k, _ in root.value if k.value == "hydra"]
