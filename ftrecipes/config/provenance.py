"""Where each key of a composed recipe came from: a file and line, or a command-line override.

Hydra merges the files of the defaults list in order, then applies the overrides; the last writer
of a key wins. We replay that order over the YAML node trees (which keep line numbers) so that an
error can say `recipes/method/lora.yaml:7` instead of just `method.r`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml


def display_path(path: Path) -> str:
    """A path relative to the working directory when it is below it, else absolute."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _walk(node: yaml.Node, prefix: str, origins: dict[str, str], where: str) -> None:
    if isinstance(node, yaml.SequenceNode):  # list items by index: objective.rewards.0.weight
        for index, item in enumerate(node.value):
            origins[f"{prefix}{index}"] = f"{where}:{item.start_mark.line + 1}"
            _walk(item, f"{prefix}{index}.", origins, where)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if not prefix and key == "defaults":
            continue
        path = f"{prefix}{key}"
        origins[path] = f"{where}:{key_node.start_mark.line + 1}"
        _walk(value_node, f"{path}.", origins, where)


def file_origins(sources: list[tuple[str, Path]]) -> dict[str, str]:
    """Maps dotted key paths to `file:line` for (package, file) sources given in merge order."""
    origins: dict[str, str] = {}
    for package, path in sources:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue  # composition already reported any unreadable file
        prefix = f"{package}." if package else ""
        origins.update(origins_of_text(text, prefix, display_path(path)))
    return origins


@functools.lru_cache(maxsize=512)
def origins_of_text(text: str, prefix: str, where: str) -> dict[str, str]:
    """One file's origins; cached on its text, since every run re-reads the same few files."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    origins: dict[str, str] = {}
    if root is not None:
        _walk(root, prefix, origins, where)
    return origins


def origin_of(path: str, origins: dict[str, str]) -> str | None:
    """The origin of `path` or of its nearest ancestor that has one."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:end]))
        if found:
            return found
    return None
