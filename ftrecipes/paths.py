"""Where ftrecipes finds its shipped resources and keeps its cache.

Recipes, schemas and launch templates live at the repository root in a source checkout and inside
the package (`ftrecipes/recipes`, ...) in an installed wheel; `resource_dir` finds either.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# name at the repo root -> name inside the installed package
_RESOURCES = {"recipes": "recipes", "schemas": "schemas", "launch": "launch_templates"}


def resource_dir(name: str) -> Path:
    packaged = PACKAGE_DIR / _RESOURCES[name]
    if packaged.is_dir():
        return packaged
    checkout = PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"ftrecipes resource folder '{name}' is missing from the install")


def builtin_data_dir() -> Path:
    return PACKAGE_DIR / "data" / "builtin"


def write_text_atomic(path: Path, text: str) -> None:
    """Writes `path` through a temporary file renamed into place, so a concurrent reader (another
    rank) never sees half of it. Creates the folder; OSError is the caller's to handle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def cache_dir() -> Path:
    """`$FTRECIPES_CACHE`, else `~/.cache/ftrecipes`."""
    root = os.environ.get("FTRECIPES_CACHE") or Path.home() / ".cache" / "ftrecipes"
    return Path(root)
