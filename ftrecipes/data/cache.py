"""Caching prepared data by fingerprint, and the rank-0-only prepare for multi-process runs.

The fingerprint hashes the resolved `data` recipe, `seed`, the tokenizer (its full definition and
chat template), the sha256 of every input file and `PIPELINE_VERSION`. A hit copies the cached
files into `run_dir/data/` and skips all work; changing any input file changes the fingerprint.

Multi-process runs (`WORLD_SIZE` > 1): rank 0 prepares; the other ranks wait for a done-marker
file in `run_dir/data/` holding the fingerprint (polling the file system, before any process group
exists, so no collective can time out). A failure on rank 0 writes a failed-marker that the other
ranks turn into the same error.

Recipe keys: `data.cache.enabled`, `data.cache.wait_timeout_s`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ftrecipes import paths
from ftrecipes.errors import DataError

PIPELINE_VERSION = "prepare-v1"
DONE, FAILED = ".prepare.done", ".prepare.failed"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    blob = tokenizer.backend_tokenizer.to_str() + (tokenizer.chat_template or "")
    blob += json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def fingerprint(data_cfg: dict, seed: int, tok_hash: str, inputs: dict) -> str:
    blob = {"data": data_cfg, "seed": seed, "tokenizer": tok_hash, "inputs": inputs,
            "version": PIPELINE_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def cache_folder(fp: str) -> Path:
    return paths.cache_dir() / "prepared" / fp[:24]


def restore(fp: str, out: Path) -> bool:
    """Copies a cached result into `out`; False when there is none."""
    folder = cache_folder(fp)
    if not (folder / "report.json").is_file():
        return False
    shutil.copytree(folder, out, dirs_exist_ok=True)
    return True


def store(fp: str, out: Path) -> None:
    """Copies `out` into the cache atomically (a temporary folder renamed into place)."""
    folder = cache_folder(fp)
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        shutil.copytree(out, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(DONE, FAILED))
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def mark(out: Path, name: str, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{name}.tmp{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, out / name)


def clear_marks(out: Path) -> None:
    for name in (DONE, FAILED):
        (out / name).unlink(missing_ok=True)


def is_done(out: Path, fp: str) -> bool:
    """Whether `out` holds a complete prepare result for `fp` (the done-marker is written last)."""
    done = out / DONE
    return done.is_file() and done.read_text() == fp and (out / "report.json").is_file()


def wait_for_rank0(out: Path, fp: str, timeout_s: int, poll_s: float = 0.5) -> None:
    """Blocks until rank 0 has written `fp` to the done-marker; raises on its failure or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        failed = out / FAILED
        if failed.is_file() and failed.read_text().startswith(fp):
            raise DataError(f"rank 0 failed to prepare the data: {failed.read_text()[len(fp) + 1:]}")
        if is_done(out, fp):
            return
        time.sleep(poll_s)
    raise DataError(f"rank 0 did not finish preparing the data within {timeout_s} s",
                    hint="raise data.cache.wait_timeout_s, or run stages=[prepare] once before training")
