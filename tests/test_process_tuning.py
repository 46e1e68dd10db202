"""What a run's own process changes about itself: the cached package table TRL reads at import
(ftrecipes.train.distribution_cache) and glibc's malloc thresholds on the CPU
(ftrecipes.train.cpu_malloc). Both act only in a process of our own (`lean_imports.OWNS_PROCESS`)."""

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
from ftrecipes.train import distribution_cache, lean_imports
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


def test_a_callers_process_keeps_the_standard_function_and_malloc_defaults():
    recipe = resolve([]).recipe
    assert lean_imports.OWNS_PROCESS is False
    assert distribution_cache.cache_packages_distributions(recipe) is False
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
