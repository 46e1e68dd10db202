"""Composing a recipe with Hydra 1.3: the search path, the defaults list and the overrides.

The search path is, in order: folders from `--config-dir`, folders from the environment variable
`FTRECIPES_RECIPE_PATH` (separated by `os.pathsep`), then the recipes that ship with ftrecipes.
A team's folder uses the same group layout (model/, method/, ..., recipe/) and can add options or
shadow built-in ones.

Hydra's own errors (a bad override, a missing option) are restated as `Problem`s. An override of
a key the composed files do not contain (`method.rslora=true`) is retried as an addition, so the
JSON Schema decides whether the key exists, and every unknown key is reported at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ftrecipes.config.problems import Problem, RecipeProblems, closest, format_choices
from ftrecipes.config.provenance import display_path, file_origins, origins_of_text
from ftrecipes.paths import resource_dir

GROUPS = ("model", "method", "objective", "data", "hardware", "logging", "recipe")
PRIMARY = "config"
ENV_PATH = "FTRECIPES_RECIPE_PATH"


@dataclass
class Composed:
    """A composed (not yet validated) recipe and what is known about how it was made."""

    cfg: DictConfig
    choices: dict[str, str | None]
    origins: dict[str, str]
    overrides: list[str]
    search_dirs: list[Path]
    sources: list[Path] = field(default_factory=list)


def search_dirs(config_dirs: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """User folders first (command line, then environment), then the built-in recipes."""
    env_dirs = [d for d in os.environ.get(ENV_PATH, "").split(os.pathsep) if d]
    dirs, problems = [], []
    for raw, origin in [(d, "command line --config-dir") for d in config_dirs] + [
        (d, f"environment variable {ENV_PATH}") for d in env_dirs
    ]:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            problems.append(Problem("", f"recipe folder '{raw}' does not exist", origin,
                                    "give a folder that holds model/, method/, ... or recipe/"))
        dirs.append(path)
    if problems:
        raise RecipeProblems(problems)
    return dirs + [resource_dir("recipes").resolve()]


def make_loader(dirs: list[Path]):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers Hydra's config sources (file://, pkg://)
    search_path = ConfigSearchPathImpl()
    search_path.append("hydra", "pkg://hydra.conf")
    for index, path in enumerate(dirs):
        search_path.append("main" if index == len(dirs) - 1 else "ftrecipes-user", path.as_uri())
    search_path.append("schema", "structured://")
    return _recording_loader_class(ConfigLoaderImpl)(config_search_path=search_path)


def _recording_loader_class(base):
    """Hydra's loader, keeping the defaults list it composed from, so that list is not computed
    (and every file parsed) a second time through `compute_defaults_list`."""

    class RecordingLoader(base):
        last_defaults: list = []

        def _compose_config_from_defaults_list(self, defaults, repo):
            self.last_defaults = list(defaults)
            return super()._compose_config_from_defaults_list(defaults=defaults, repo=repo)

    return RecordingLoader


def group_options(loader, group: str) -> list[str]:
    return sorted(loader.get_group_options(group))


def compose(overrides: list[str], config_dirs=(), config_name: str = PRIMARY) -> Composed:
    """Composes `config_name` with the overrides. Raises `RecipeProblems` for composition errors."""
    from hydra.types import RunMode

    dirs = search_dirs(config_dirs)
    loader = make_loader(dirs)
    parsed = _parse_overrides(overrides)
    effective = list(overrides)
    for _ in range(len(overrides) + 1):
        try:
            cfg = loader.load_configuration(config_name, effective, RunMode.RUN)
            break
        except Exception as exc:  # noqa: BLE001 - every Hydra failure is restated below
            retry = _as_addition(exc, effective)
            if retry is None:
                raise RecipeProblems([_restate(exc, loader, overrides, dirs)]) from None
            effective = retry
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    sources = []
    for entry in loader.last_defaults:
        if entry.config_path is None or entry.config_path.startswith("hydra/"):
            continue
        found = _find(entry.config_path, dirs)
        if found is not None:
            sources.append((entry.package or "", found))
    origins = file_origins(sources)
    origins.update(_override_origins(parsed, set(choices)))
    return Composed(cfg, choices, origins, list(overrides), dirs, [p for _, p in sources])


def _find(config_path: str, dirs: list[Path]) -> Path | None:
    for base in dirs:
        for suffix in (".yaml", ".yml"):
            candidate = base / f"{config_path}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _override_origins(parsed: list, groups: set[str]) -> dict[str, str]:
    origins = {}
    for override in parsed:
        key = override.key_or_group
        if key not in groups:
            origins[key] = f"command line '{override.input_line}'"
    return origins


def _parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of each override; `RecipeProblems` naming every one it cannot parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, problems, parsed = OverridesParser.create(), [], []
    for text in overrides:
        try:
            parsed.append(parser.parse_override(text))
        except HydraException as exc:
            reason = str(exc).splitlines()[0]
            problems.append(Problem(text, f"cannot parse this override ({reason})", "command line",
                                    "write key=value, +key=value to add a key, ~key to delete one; "
                                    "quote values that hold spaces, commas or brackets"))
    if problems:
        raise RecipeProblems(problems)
    return parsed


_NOT_IN_STRUCT = re.compile(r"Could not override '([^']+)'")


def _as_addition(exc: Exception, overrides: list[str]) -> list[str] | None:
    """For 'Could not override KEY' (KEY absent from the files), retries the override as +KEY."""
    match = _NOT_IN_STRUCT.search(str(exc))
    if not match or "No match in the defaults list" in str(exc):
        return None
    key = match.group(1)
    for index, text in enumerate(overrides):
        if text.split("=", 1)[0] == key:
            return overrides[:index] + ["+" + text] + overrides[index + 1:]
    return None


_MISSING = re.compile(r"(?:In '([^']+)': )?Could not (?:find|load) '([^']+)/([^'/]+)'")


def _defaults_line(group: str, option: str, overrides: list[str], dirs: list[Path]) -> str | None:
    """Finds the defaults-list line of a recipe file that picks `group: option`."""
    picked = [o.lstrip("+").split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("recipe=")]
    pattern = re.compile(rf"^\s*-\s*(?:override\s+)?/?{re.escape(group)}\s*:\s*{re.escape(option)}\s*$")
    for config_path in [PRIMARY] + [f"recipe/{name}" for name in picked]:
        path = _find(config_path, dirs)
        if path is None:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.match(line):
                return f"{display_path(path)}:{number}"
    return None


_YAML_WHERE = re.compile(r'in "([^"]+)", line (\d+)')


def _restate(exc: Exception, loader, overrides: list[str], dirs: list[Path]) -> Problem:
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    missing = _MISSING.search(text)
    if missing:
        parent, group, option = missing.groups()
        options = group_options(loader, group)
        from_cli = any(o.lstrip("+~").split("=", 1) == [group, option] for o in overrides)
        origin = "command line" if from_cli else _defaults_line(group, option, overrides, dirs)
        hint = f"choose one of: {format_choices(options)}" if options else f"add {group}/{option}.yaml to a recipe folder"
        guess = closest(option, options)
        if guess:
            hint = f"did you mean {group}={guess}? ({hint})"
        return Problem(group, f"no option '{option}' in group '{group}'", origin, hint)
    if "No match in the defaults list" in text:
        key = _NOT_IN_STRUCT.search(text)
        name = key.group(1) if key else first
        guess = closest(name, list(GROUPS))
        hint = f"did you mean {guess}? " if guess else ""
        return Problem(name, f"'{name}' is not a recipe group", "command line",
                       hint + f"groups are {format_choices(GROUPS)}; use +{name}=... only to add a key")
    already = re.search(r"An item is already at '([^']+)'", text)
    if already:
        key = already.group(1)
        return Problem(key, "'+' adds a new key, but this key is already set", "command line",
                       f"write {key}=VALUE to change it (or ++{key}=VALUE to add or change)")
    if "Ambiguous value" in text:
        arg = re.search(r"argument '([^']+)'", text)
        return Problem(arg.group(1) if arg else "", "a comma-separated value is a sweep", "command line",
                       "add -m to sweep over the values, or write key=[a,b] for a list, "
                       "or quote it for a string")
    where = _YAML_WHERE.findall(text)
    if where:
        file, line = where[-1]
        origin = f"{display_path(Path(file))}:{line}"
        duplicate = re.search(r"found duplicate key (\S+)", text)
        if duplicate:
            return Problem(_key_path_at(Path(file), int(line), duplicate.group(1)), "duplicate key in a recipe file",
                           origin, "each key may appear only once in a mapping: remove one of them")
        reason = re.search(r"\n(expected [^\n]*|found [^\n]*|could not [^\n]*)", text)
        return Problem("", f"invalid YAML ({reason.group(1) if reason else first})", origin,
                       "fix the YAML syntax at that line")
    return Problem("", " ".join(text.split()), None, None)


def _key_path_at(file: Path, line: int, key: str) -> str:
    """The full dotted path of `key` written at `file:line` (`logging.wandb.enabled`), with the
    file's package (its group, unless it is the primary or a `# @package _global_` file)."""
    group = file.parent.name
    try:
        text = file.read_text()
    except OSError:
        text = ""
    package = group if group in GROUPS and group != "recipe" and "@package _global_" not in text else ""
    prefix = f"{package}." if package else ""
    found = [path for path, where in origins_of_text(text, prefix, "").items()
             if where == f":{line}" and path.rsplit(".", 1)[-1] == key]
    return found[0] if found else prefix + key


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


def relative_sources(composed: Composed) -> list[str]:
    return [display_path(p) for p in composed.sources]
