"""A disk cache for `importlib.metadata.packages_distributions()`, which TRL calls at import.

TRL builds its table of installed packages when it is imported (`trl/import_utils.py`), and the
standard library builds that table by reading the file list of every installed distribution:
about 0.35 s of each run's start on a 2-core machine with ~200 distributions installed
(docs/performance.md). The table only changes when a distribution is installed, upgraded or
removed, and each of those adds or deletes a `*.dist-info` folder, which changes the modification
time of the `sys.path` folder that holds it.

`cache_packages_distributions()` replaces the function, in a process of our own only (the same
`lean_imports.OWNS_PROCESS` rule), with one that answers from
`<cache>/startup/packages-<key>.json` (the key: the Python version and `sys.path`) while the
modification time of every `sys.path` folder is the one saved with it; otherwise it calls the
original and saves the new answer.
Any problem with the cache falls back to the original function. Off with `train.lean_imports=false`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys

ORIGINAL = importlib.metadata.packages_distributions


def path_folders() -> list:
    """`[entry, modification time]` for each `sys.path` entry (None when it does not exist)."""
    folders = []
    for entry in map(str, sys.path):  # some tools insert Path objects
        try:
            folders.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            folders.append([entry, None])
    return folders


def cached_packages_distributions() -> dict[str, list[str]]:
    """`importlib.metadata.packages_distributions()`, from the disk cache when no folder changed.

    One file per Python and `sys.path` (overwritten when a folder's time changes), so the cache
    does not grow with every install.
    """
    from ftrecipes.paths import cache_dir, write_text_atomic

    folders = path_folders()
    key = hashlib.sha256(json.dumps([sys.version, [entry for entry, _ in folders]]).encode()).hexdigest()[:20]
    path = cache_dir() / "startup" / f"packages-{key}.json"
    try:
        saved = json.loads(path.read_text())
        if saved["folders"] == folders:
            return saved["table"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    table = ORIGINAL()
    try:
        write_text_atomic(path, json.dumps({"folders": folders, "table": table}))
    except OSError:
        pass  # a read-only cache only costs the time
    return table


def cache_packages_distributions(recipe) -> bool:
    """Installs the cached function (see the module docstring); True when it did."""
    from ftrecipes.train import lean_imports

    if not lean_imports.acts_on(recipe):
        return False
    importlib.metadata.packages_distributions = cached_packages_distributions
    return True
