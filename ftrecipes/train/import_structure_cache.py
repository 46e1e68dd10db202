"""A disk cache for transformers' lazy-import table, which `import transformers` rebuilds each time.

transformers decides which names each submodule exports by reading the source files under
`transformers/models/` (about 1,600 of its 2,500 `.py` files) and parsing their `__all__`
(`transformers.utils.import_utils.define_import_structure`): about 0.9 s of each run's start on a
2-core machine (docs/performance.md). The table is a pure function of those files, so it is
saved once and read back while no file under the folder changed.

`cache_import_structure(recipe)` installs an import hook, in a process of our own only (the same
`lean_imports.OWNS_PROCESS` rule) and only before transformers is imported. When
`transformers.utils.import_utils` has run, the hook wraps its `define_import_structure` with one
that answers from `<cache>/startup/transformers-imports-<key>.json` (the key: the Python version
and the transformers folder). An entry is used only while the path, size and modification time
of every `.py` file under its folder are the ones saved with it (about 30 ms to check), so
an upgrade or an edited file rebuilds it.
Any problem with the cache or an unexpected table falls back to transformers' own function. Off
with `train.lean_imports=false`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys

from ftrecipes.paths import write_text_atomic

TARGET = "transformers.utils.import_utils"


def folder_fingerprint(module_path: str) -> str | None:
    """A hash of the path, size and modification time of every `.py` file under the folder that
    `define_import_structure` reads (`module_path` or, for a file, its folder)."""
    root = os.path.dirname(module_path) if os.path.isfile(module_path) else module_path
    digest, folders = hashlib.sha256(), [root]
    try:
        while folders:
            with os.scandir(folders.pop()) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.name.endswith(".py"):
                        stat = entry.stat()
                        digest.update(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def to_json(structure) -> list | None:
    """`{frozenset(backends): {module: {names}}}` as JSON lists; None for any other shape."""
    encoded = []
    for backends, modules in structure.items():
        if not isinstance(backends, frozenset) or not isinstance(modules, dict):
            return None
        if not all(isinstance(name, str) for name in backends):
            return None
        entry = {}
        for module, names in modules.items():
            if not isinstance(module, str) or not isinstance(names, (set, frozenset)):
                return None
            if not all(isinstance(name, str) for name in names):
                return None
            entry[module] = sorted(names)
        encoded.append([sorted(backends), entry])
    return encoded


def from_json(encoded: list) -> dict:
    return {frozenset(backends): {module: set(names) for module, names in modules.items()}
            for backends, modules in encoded}


def cache_file(module_path: str):
    from ftrecipes.paths import cache_dir

    package_root = module_path.split(os.sep + "transformers" + os.sep)[0]
    key = hashlib.sha256(json.dumps([sys.version, package_root]).encode()).hexdigest()[:20]
    return cache_dir() / "startup" / f"transformers-imports-{key}.json"


def cached(original):
    """`original` (transformers' `define_import_structure`) answered from the disk cache."""

    @functools.lru_cache  # transformers' own is cached too: callers get the same object each time
    def define_import_structure(module_path, prefix=None):
        module_path = str(module_path)
        fingerprint = folder_fingerprint(module_path)
        if fingerprint is None:
            return original(module_path, prefix)
        path, entry_key = cache_file(module_path), f"{module_path}\0{prefix}"
        saved = _read(path)
        entry = saved.get(entry_key)
        if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
            try:
                return from_json(entry["structure"])
            except (KeyError, TypeError, ValueError):
                pass
        structure = original(module_path, prefix)
        encoded = to_json(structure)
        if encoded is not None:
            saved[entry_key] = {"fingerprint": fingerprint, "structure": encoded}
            try:
                write_text_atomic(path, json.dumps(saved))
            except OSError:
                pass  # a read-only cache only costs the time
        return structure

    define_import_structure.__wrapped_original__ = original
    return define_import_structure


@functools.lru_cache  # one read per process; the file holds every folder's entry
def _read(path) -> dict:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


class _WrapWhenLoaded(importlib.abc.MetaPathFinder):
    """Finds `transformers.utils.import_utils` the normal way and wraps its function right after
    the module runs, before `transformers/__init__.py` uses it."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        _uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module):
            run_module(module)
            original = getattr(module, "define_import_structure", None)
            if callable(original):
                module.define_import_structure = cached(original)

        loader.exec_module = exec_module
        return spec


_HOOK = _WrapWhenLoaded()


def _uninstall() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def cache_import_structure(recipe) -> bool:
    """Installs the hook (see the module docstring); True when it did."""
    from ftrecipes.train import lean_imports

    if not lean_imports.acts_on(recipe):
        return False
    if TARGET in sys.modules or "transformers" in sys.modules:
        return False  # too late: the table is built
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
    return True
