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


def cache_dir() -> Path:
    """`$FTRECIPES_CACHE`, else `~/.cache/ftrecipes`."""
    root = os.environ.get("FTRECIPES_CACHE") or Path.home() / ".cache" / "ftrecipes"
    return Path(root)
