"""Checkpoints that either fully exist or do not: the commit protocol, verification and retention.

A trainer writes each checkpoint into a temporary folder, then calls `commit`, which:

1. checks that the files a resume needs are there (`missing_files`): the weights as safetensors
   (`model.safetensors`, `adapter_model.safetensors` or shards with their index), `optimizer.pt`
   (under ZeRO: DeepSpeed's `latest` and every rank's shard, `deepspeed_state.missing`),
   `scheduler.pt`, the RNG state of every rank (`rng_state.pth`, or `rng_state_<rank>.pth` for
   each rank when the world size is above 1) and `trainer_state.json` (global step and epoch,
   which is the dataloader position). Pickled weights (`*.bin` weights) are refused;
2. fsyncs every file, then writes `manifest.json` last (step, recipe fingerprint and its hash,
   the size and sha256 of every file, and a sha256 of the manifest itself) and fsyncs it;
3. renames the folder to `checkpoint-<step>` (atomic on one filesystem) and fsyncs the parent.

Only a `checkpoint-<step>` folder whose manifest verifies counts: `verify` re-hashes every file,
so a deleted, truncated or bit-flipped file (the manifest included) is found and named. A
crash leaves at most a `.tmp-checkpoint-*` or `.trash-checkpoint-*` folder, which never counts.
`retain` deletes old checkpoints after a commit (renamed away first, so never half-deleted),
never the newest verified one. A full disk during a save becomes
`OutOfResources` (exit 5) naming the last good checkpoint, which stays intact (`saving`).

Recipe keys: `train.checkpoint.interval_steps` (how often the trainer saves),
`train.checkpoint.keep` (how many committed checkpoints `retain` keeps); `resume` is read by
`ftrecipes.reliability.resume.select_for_resume`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

from ftrecipes.data.cache import file_sha256
from ftrecipes.errors import EnvironmentProblem, OutOfResources

MANIFEST = "manifest.json"
PREFIX, TMP_PREFIX, TRASH_PREFIX = "checkpoint-", ".tmp-checkpoint-", ".trash-checkpoint-"
FORMAT = 1
WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "adapter_model.bin")
_STEP = re.compile(rf"^{PREFIX}(\d+)$")


class CheckpointError(EnvironmentProblem):
    """A checkpoint is incomplete or damaged and nothing usable remains (exit 8)."""


def step_of(path: Path) -> int | None:
    """The step in a `checkpoint-<step>` folder name, or None for any other name."""
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else None


def rng_files(world_size: int) -> list[str]:
    """HF Trainer's RNG file names: one file alone, one per rank when there are several."""
    return ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{r}.pth" for r in range(world_size)]


def missing_files(folder: Path, world_size: int = 1) -> list[str]:
    """What a resume needs but `folder` lacks, as sentences that name each file."""
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    problems = []
    if not any(w in names for w in WEIGHTS):
        problems.append(f"no weights: expected one of {', '.join(WEIGHTS)}")
    problems += [f"{name}: weights must be safetensors, not a pickle" for name in PICKLED_WEIGHTS if name in names]
    from ftrecipes.reliability import deepspeed_state  # imports this module: not at the top

    optimizer = ["optimizer.pt"]
    if deepspeed_state.is_deepspeed(names):  # ZeRO: the optimizer is DeepSpeed's per-rank shards
        problems += deepspeed_state.missing(folder, names, world_size)
        optimizer = []
    for name in [*optimizer, "scheduler.pt", "trainer_state.json", *rng_files(world_size)]:
        if name not in names:
            problems.append(f"{name} is missing")
    return problems


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Writes `data` to `path` and fsyncs it: what `commit` uses for the manifest."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _manifest_bytes(body: dict) -> bytes:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return (json.dumps({**body, "manifest_sha256": digest}, sort_keys=True, indent=1) + "\n").encode()


def recipe_hash(fingerprint: dict) -> str:
    """sha256 of a recipe fingerprint (`resume.recipe_fingerprint`), stable across key order."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def commit(tmp_dir: Path, final_dir: Path, step: int, fingerprint: dict, *, world_size: int = 1,
           write: Callable[[Path, bytes], None] = write_durable) -> Path:
    """Turns the fully written `tmp_dir` into the committed checkpoint `final_dir` (see above).

    `final_dir` must be named `checkpoint-<step>` and sit on the same filesystem as `tmp_dir`. A
    damaged folder of the same name (left by a run that fell back to an older checkpoint) is
    replaced. Raises CheckpointError naming any missing file, OutOfResources on a full disk (the
    temporary folder is removed, earlier checkpoints are untouched).
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if step_of(final_dir) != step:
        raise ValueError(f"{final_dir} must be named {PREFIX}{step}")
    missing = missing_files(tmp_dir, world_size)
    if missing:
        raise CheckpointError(f"refusing to commit checkpoint {step} from {tmp_dir}: {'; '.join(missing)}",
                              hint="save the optimizer, scheduler and RNG state of every rank "
                                   "(HF: save_only_model=False) before committing")
    trash = None
    with saving(final_dir.parent, cleanup=tmp_dir):
        files = {}
        for path in sorted(p for p in tmp_dir.rglob("*") if p.is_file()):
            _fsync(path)
            files[path.relative_to(tmp_dir).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for sub in sorted({p.parent for p in tmp_dir.rglob("*") if p.is_file()}, reverse=True):
            _fsync(sub)
        body = {"format": FORMAT, "step": step, "world_size": world_size, "recipe": fingerprint,
                "recipe_hash": recipe_hash(fingerprint), "files": files,
                "committed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        write(tmp_dir / MANIFEST, _manifest_bytes(body))
        _fsync(tmp_dir)
        if final_dir.exists():
            trash = final_dir.with_name(f"{TRASH_PREFIX}{step}-{os.getpid()}")
            os.rename(final_dir, trash)
        os.rename(tmp_dir, final_dir)
        _fsync(final_dir.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final_dir


def read_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """(manifest, None) when `folder/manifest.json` is intact, else (None, the problem)."""
    path = Path(folder) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, f"{MANIFEST} is missing (the checkpoint never committed, or it was deleted)"
    except OSError as exc:
        return None, f"{MANIFEST} cannot be read ({exc.strerror})"
    try:
        manifest = json.loads(raw)
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        intact = _manifest_bytes(body) == raw
    except (ValueError, AttributeError, TypeError):
        intact = False
    if not intact:
        return None, f"{MANIFEST} is damaged (it does not match its own checksum)"
    return manifest, None


def verify(folder: Path, *, deep: bool = True) -> list[str]:
    """Problems with a committed checkpoint, each naming its file; [] when it verifies.

    Checks the manifest's own checksum and step, that every listed file exists with its size and
    (when `deep`) its sha256, that nothing unlisted was added, and the required files.
    """
    folder = Path(folder)
    manifest, problem = read_manifest(folder)
    if manifest is None:
        return [problem]
    problems = []
    if manifest.get("step") != step_of(folder):
        problems.append(f"{MANIFEST} is for step {manifest.get('step')}, but the folder is {folder.name}")
    listed = manifest.get("files", {})
    for name, entry in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated?)")
        elif deep and file_sha256(path) != entry["sha256"]:
            problems.append(f"{name} does not match its sha256 in the manifest (damaged)")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"{name} is not listed in the manifest" for name in sorted(present - set(listed))]
    if not problems:
        problems += missing_files(folder, manifest.get("world_size", 1))
    return problems


def checkpoint_dirs(root: Path) -> list[Path]:
    """Every `checkpoint-<step>` folder under `root`, committed or not, newest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=step_of, reverse=True)


def committed_checkpoints(root: Path) -> list[Path]:
    """The `checkpoint-<step>` folders whose manifest is intact, newest first (files not re-hashed)."""
    return [p for p in checkpoint_dirs(root) if read_manifest(p)[0] is not None]


def newest_verified(root: Path) -> Path | None:
    """The newest checkpoint that passes a full `verify`, or None."""
    return next((p for p in committed_checkpoints(root) if not verify(p)), None)


def retain(root: Path, keep: int, *, newest: Path | None = None) -> list[Path]:
    """Deletes old checkpoints after a commit; returns what it deleted.

    Keeps the `keep` newest committed checkpoints and always the newest verified one (`newest`,
    when the caller has just committed it, saves re-hashing it). Also removes leftover temporary
    folders, and damaged folders older than the newest verified one. Nothing newer than the newest
    verified checkpoint is touched. Call it only after `commit` returned.
    """
    root = Path(root)
    anchor = Path(newest) if newest is not None else newest_verified(root)
    if anchor is None:
        return []
    anchor_step, deleted = step_of(anchor), []
    older = [p for p in checkpoint_dirs(root) if step_of(p) < anchor_step]
    intact = [p for p in older if read_manifest(p)[0] is not None and not verify(p, deep=False)]
    survivors = set(intact[: max(keep - 1, 0)])
    for path in older:
        if path not in survivors:
            _delete(path)
            deleted.append(path)
    for path in root.iterdir():
        if path.name.startswith((TMP_PREFIX, TRASH_PREFIX)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
    return deleted


def _delete(path: Path) -> None:
    """Renames `path` out of the `checkpoint-<step>` namespace first (atomic), then removes it: a
    kill during the removal leaves a trash folder, never a half-deleted checkpoint that counts."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def saving(root: Path, *, cleanup: Path | None = None) -> Iterator[None]:
    """Wrap a checkpoint save in this: a full disk becomes OutOfResources naming the last good
    checkpoint under `root`; the partial folder `cleanup` is removed and older checkpoints stay."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        good = committed_checkpoints(root)
        last = f"the last good checkpoint, {good[0]}, is intact" if good else "no checkpoint had committed yet"
        free = shutil.disk_usage(root).free if Path(root).exists() else 0
        raise OutOfResources(f"no space left on the device while saving a checkpoint under {root} "
                             f"({free / 2**20:.1f} MiB free); {last}",
                             hint="free space or lower train.checkpoint.keep, then run again: it resumes "
                                  "from the last good checkpoint") from None


def temp_dir_for(root: Path, step: int) -> Path:
    """Where a trainer writes checkpoint `step` before `commit` (same filesystem as the result)."""
    return Path(root) / f"{TMP_PREFIX}{step}-{os.getpid()}"


def hf_staging_dir(root: Path) -> Path:
    """The `output_dir` to give HF's Trainer: it writes `<this>/checkpoint-<step>` there, and
    `commit_hf_checkpoint` commits it into `root`. `retain` clears what is left in it."""
    return Path(root) / f"{TMP_PREFIX}hf"


def commit_hf_checkpoint(root: Path, step: int, fingerprint: dict, *, world_size: int = 1, keep: int = 2) -> Path:
    """What a TrainerCallback's `on_save` does on rank 0, after a barrier (every rank has written
    its `rng_state_<rank>.pth` by then): commit HF's staged folder as `root/checkpoint-<step>`, then
    `retain(root, keep)`. HF's own rotation must be off (`save_total_limit=None`)."""
    staged = hf_staging_dir(root) / f"{PREFIX}{step}"
    final = commit(staged, Path(root) / f"{PREFIX}{step}", step, fingerprint, world_size=world_size)
    retain(root, keep, newest=final)
    return final
