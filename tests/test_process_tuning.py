"""What a run's own process changes about itself: the cached package table TRL reads at import
(ftrecipes.train.distribution_cache), the cached lazy-import table transformers builds at import
(ftrecipes.train.import_structure_cache) and glibc's malloc thresholds on the CPU
(ftrecipes.train.cpu_malloc). All act only in a process of our own (`lean_imports.OWNS_PROCESS`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, SMALL_MODEL
from ftrecipes.config.resolve import resolve
from ftrecipes.train import distribution_cache, import_structure_cache, lean_imports
from ftrecipes.train.cpu_malloc import reuse_freed_memory


def test_the_cached_table_equals_the_standard_librarys_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRECIPES_CACHE", str(tmp_path))
    first = distribution_cache.cached_packages_distributions()
    assert first == distribution_cache.ORIGINAL()
    assert "torch" in first and "trl" in first
    [saved] = (tmp_path / "startup").glob("packages-*.json")
    data = json.loads(saved.read_text())
    data["table"]["marker_only_in_the_file"] = ["x"]  # proves the next call reads the file
    saved.write_text(json.dumps(data))
    assert distribution_cache.cached_packages_distributions()["marker_only_in_the_file"] == ["x"]


def test_an_install_or_removal_in_a_path_folder_refreshes_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRECIPES_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    assert "fresh_pkg" not in distribution_cache.cached_packages_distributions()
    info = folder / "fresh_pkg-1.0.dist-info"  # what pip writes: the folder's time changes
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fresh-pkg\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("fresh_pkg\n")
    os.utime(folder, ns=(os.stat(folder).st_atime_ns, os.stat(folder).st_mtime_ns + 10**9))
    assert distribution_cache.cached_packages_distributions()["fresh_pkg"] == ["fresh-pkg"]
    assert len(list((tmp_path / "cache" / "startup").glob("packages-*.json"))) == 1  # overwritten, not added
    # the same folder as a Path object, as some tools insert it
    monkeypatch.setattr(sys, "path", [folder, *(entry for entry in sys.path if entry != str(folder))])
    assert distribution_cache.cached_packages_distributions()["fresh_pkg"] == ["fresh-pkg"]


def small_package(folder, names: list[str]):
    """A folder laid out like `transformers/models/`: one model folder with an `__all__` file."""
    model = folder / "transformers" / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "__init__.py").write_text("")
    (model / "configuration_tiny.py").write_text(f"__all__ = {names!r}\n")
    return str(folder / "transformers" / "models")


def test_the_import_table_is_transformers_own_then_read_back_until_a_file_changes(tmp_path, monkeypatch):
    from transformers.utils.import_utils import create_import_structure_from_path, define_import_structure

    monkeypatch.setenv("FTRECIPES_CACHE", str(tmp_path / "cache"))
    models = small_package(tmp_path / "site", ["TinyConfig"])
    calls = []

    def original(module_path, prefix=None):
        calls.append(module_path)
        create_import_structure_from_path.cache_clear()  # transformers' own memo would hide an edit
        return define_import_structure.__wrapped__(module_path, prefix)

    first = import_structure_cache.cached(original)(models, "models")
    assert first == define_import_structure.__wrapped__(models, "models")
    assert first == {frozenset(): {"models.tiny.configuration_tiny": {"TinyConfig"}}} and len(calls) == 1
    assert import_structure_cache.cached(original)(models, "models") == first and len(calls) == 1  # from disk
    # an edited file (its size and time change) is read again, and the table follows it
    (tmp_path / "site" / "transformers" / "models" / "tiny" / "configuration_tiny.py").write_text(
        "__all__ = ['TinyConfig', 'TinyTextConfig']\n")
    again = import_structure_cache.cached(original)(models, "models")
    assert len(calls) == 2 and again == {frozenset(): {"models.tiny.configuration_tiny": {"TinyConfig", "TinyTextConfig"}}}


def test_the_whole_transformers_table_round_trips_through_json():
    import transformers
    from transformers.utils.import_utils import define_import_structure

    structure = define_import_structure(os.path.join(os.path.dirname(transformers.__file__), "models"), "models")
    encoded = import_structure_cache.to_json(structure)
    assert encoded is not None and import_structure_cache.from_json(json.loads(json.dumps(encoded))) == structure
    assert import_structure_cache.to_json({"not a frozenset": {}}) is None  # another shape: not cached


IMPORT_CHILD = textwrap.dedent("""
    import json, sys
    from ftrecipes.config.resolve import resolve
    from ftrecipes.train import lean_imports
    from ftrecipes.train.import_structure_cache import cache_import_structure

    lean_imports.OWNS_PROCESS = True
    took = cache_import_structure(resolve([]).recipe)
    import transformers
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers.utils import import_utils
    wrapped = getattr(import_utils.define_import_structure, "__wrapped_original__", None) is not None
    print(json.dumps({"took": took, "wrapped": wrapped, "model_type": LlamaConfig().model_type}))
""")


def test_a_run_process_imports_transformers_through_the_cached_table(tmp_path):
    env = {**os.environ, "FTRECIPES_CACHE": str(tmp_path)}
    for _ in range(2):  # the first writes the table, the second reads it
        proc = subprocess.run([sys.executable, "-c", IMPORT_CHILD], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"took": True, "wrapped": True,
                                                                     "model_type": "llama"}
        [saved] = (tmp_path / "startup").glob("transformers-imports-*.json")
        assert any(key.endswith("models\0models") for key in json.loads(saved.read_text()))


def test_a_callers_process_keeps_the_standard_function_and_malloc_defaults():
    recipe = resolve([]).recipe
    assert lean_imports.OWNS_PROCESS is False
    assert distribution_cache.cache_packages_distributions(recipe) is False
    assert import_structure_cache.cache_import_structure(recipe) is False
    assert importlib.metadata.packages_distributions is distribution_cache.ORIGINAL
    assert reuse_freed_memory(recipe) is False


# glibc's mallinfo2 counts the blocks currently served by mmap (hblks): an 8 MiB tensor is one of
# them under glibc's start-up threshold (128 KiB), and a heap block once the threshold is 32 MiB
CHILD = textwrap.dedent("""
    import ctypes, json, sys
    from ftrecipes.config.resolve import resolve
    from ftrecipes.train import lean_imports
    from ftrecipes.train.cpu_malloc import reuse_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    lean_imports.OWNS_PROCESS = True
    took = reuse_freed_memory(resolve(json.loads(sys.argv[1])).recipe)
    import torch
    before = libc.mallinfo2().hblks
    block = torch.empty(2 * 2**20)  # 8 MiB
    print(json.dumps({"took": took, "mmapped_blocks_added": libc.mallinfo2().hblks - before}))
""")


def child(*overrides: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([*SMALL_MODEL, *overrides])], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_on_the_cpu_large_step_buffers_come_from_the_heap_not_fresh_mmaps():
    tuned = child()
    assert tuned == {"took": True, "mmapped_blocks_added": 0}
    default = child("train.cpu_reuse_freed_memory=false")
    assert default == {"took": False, "mmapped_blocks_added": 1}
    assert child("hardware=1x_h100")["took"] is False  # a GPU preset: host memory left alone


class Node:
    """Half of a reference cycle: only the cyclic collector frees it."""


def test_collection_pauses_until_training_and_a_dropped_trainer_is_freed_after_the_stage(monkeypatch):
    import gc
    import weakref

    from ftrecipes.train import gc_pause

    recipe = resolve(["stages=[train]"]).recipe
    assert gc_pause.pause_collection(recipe, "train") is False  # a caller's process: untouched
    monkeypatch.setattr(lean_imports, "OWNS_PROCESS", True)
    assert gc_pause.pause_collection(recipe, "prepare") is False  # prepare first: untouched
    assert gc_pause.pause_collection(resolve(["train.lean_imports=false"]).recipe, "train") is False
    assert gc.isenabled()
    try:
        assert gc_pause.pause_collection(recipe, "train") is True and not gc.isenabled()
        trainer, model = Node(), Node()  # stands for a trainer and model in a cycle, built while paused
        trainer.model, model.trainer = model, trainer
        alive = weakref.ref(trainer)
        assert gc_pause.resume_collection() is True  # just before trainer.train()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        del trainer, model  # the stage drops them
        gc.collect()
        assert alive() is not None  # frozen: the training loop's passes skip it
        gc_pause.end_of_stage()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert alive() is None  # freed before the next stage loads its own model
    finally:
        gc_pause.end_of_stage()
        gc.enable()
    # a stage that fails before training still turns the collector back on
    assert gc_pause.pause_collection(recipe, "train") is True
    gc_pause.end_of_stage()
    assert gc.isenabled() and gc.get_freeze_count() == 0
