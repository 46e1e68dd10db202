"""Auto-resume: which committed checkpoint a re-run continues from, and whether the recipe allows it.

Recipe key `resume` (top level):

- `auto` (default): a re-run with the same run dir continues from the newest checkpoint whose
  manifest verifies. A damaged newest checkpoint is skipped, with a message naming the file,
  and the one before it is used. If checkpoint folders exist but none verifies, the run stops
  with an error listing each problem (exit 8); it never silently starts fresh. If the recipe
  changed in a key that shapes training (`FINGERPRINT_KEYS`: learning rate and the rest of the
  method, model, objective, sequence length, seed, batch shape, optimizer and schedule, world
  size, the prepared data's fingerprint, the ZeRO strategy) the resume is refused with a per-key diff (exit 2).
- `force`: as auto, but a changed recipe only prints the diff and goes on.
- `never`: start fresh; refused when the checkpoint folder already holds committed checkpoints,
  so old and new steps never mix (pick a new `run_dir`).

`train.epochs` and `train.max_steps` may change on resume (to train longer).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ftrecipes.errors import RecipeError
from ftrecipes.reliability.checkpoint import (CheckpointError, checkpoint_dirs, committed_checkpoints,
                                              read_manifest, verify)

MODES = ("auto", "force", "never")
FINGERPRINT_KEYS = (
    "model.source", "model.path", "model.revision", "model.dtype", "model.build",
    "method", "objective.name", "data.max_seq_len", "data.packing", "seed",
    "train.micro_batch_size", "train.gradient_accumulation_steps", "train.optimizer",
    "train.lr_scheduler", "train.warmup_ratio", "train.weight_decay",
)


def _plain(recipe) -> dict:
    if isinstance(recipe, dict):
        return recipe
    from omegaconf import OmegaConf

    return OmegaConf.to_container(recipe, resolve=True)


def _as_written(plain: dict, run_dir: Path | None) -> dict:
    """`plain` with every value that `run_dir/recipe.resolved.yaml` writes as `${oc.env:...}` put
    back as written: the fingerprint is stored in every checkpoint's manifest, and an environment
    value may be a secret (workers get the recipe with it resolved)."""
    written = Path(run_dir) / "recipe.resolved.yaml" if run_dir is not None else None
    if written is None or not written.is_file():
        return plain
    import yaml

    try:
        raw = yaml.safe_load(written.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return plain
    return _keep_env(raw, plain)


def _keep_env(raw: Any, resolved: Any) -> Any:
    if isinstance(raw, dict) and isinstance(resolved, dict):
        return {k: _keep_env(raw.get(k), v) for k, v in resolved.items()}
    if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
        return [_keep_env(r, v) for r, v in zip(raw, resolved)]
    return raw if isinstance(raw, str) and "oc.env" in raw else resolved


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def data_hash(run_dir: Path | None) -> str | None:
    """The prepared data's fingerprint (data/report.json), else a hash of lock.json's data files."""
    if run_dir is None:
        return None
    report, lock = Path(run_dir) / "data" / "report.json", Path(run_dir) / "lock.json"
    try:
        if report.is_file():
            fingerprint = json.loads(report.read_text()).get("fingerprint")
            if fingerprint:
                return str(fingerprint)
        if lock.is_file():
            hashes = sorted(str(h) for h in json.loads(lock.read_text()).get("data_files", {}).values())
            return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()
    except (OSError, ValueError):
        return None
    return None


def recipe_fingerprint(recipe, *, run_dir: Path | None = None, world_size: int | None = None) -> dict:
    """The values that must not change between a checkpoint and its resume, as flat `key: value`.

    `world_size` defaults to the one the hardware block implies; `data_hash` comes from the run
    dir (see `data_hash`) when given.
    """
    from ftrecipes.distributed.trainer_args import ZERO
    from ftrecipes.plan.memory import world_size as implied_world_size

    plain, out = _as_written(_plain(recipe), run_dir), {}
    for path in FINGERPRINT_KEYS:
        node, found = plain, True
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                found = False
                break
        if found:
            _flatten(node, path, out)
    out["world_size"] = world_size if world_size is not None else implied_world_size(plain["hardware"])
    # DeepSpeed's shards (ZeRO) load only under the same stage; other strategies are left out, so
    # the HF layout stays resumable between one process and DDP
    if plain["hardware"].get("strategy") in ZERO:
        out["hardware.strategy"] = plain["hardware"]["strategy"]
    out["data_hash"] = data_hash(run_dir)
    return out


_ABSENT = object()


def resume_diff(old: dict, new: dict) -> list[str]:
    """One line per key whose value differs: `method.learning_rate: 0.0002 -> 0.0001`."""

    def show(value):
        return "(absent)" if value is _ABSENT else json.dumps(value, default=str)

    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before != after:
            lines.append(f"{key}: {show(before)} -> {show(after)}")
    return lines


def _say(text: str) -> None:
    print(f"ftrecipes: {text}", file=sys.stderr, flush=True)


def select_for_resume(root: Path, fingerprint: dict, mode: str = "auto", *,
                      say: Callable[[str], None] = _say) -> Path | None:
    """The checkpoint folder to resume from (give it to `trainer.train(resume_from_checkpoint=...)`),
    or None to start fresh. See the module docstring for the rules of each `mode`.

    Raises RecipeError (exit 2) for a changed recipe under auto, or committed checkpoints under
    never; CheckpointError (exit 8) when checkpoints exist but none verifies.
    """
    if mode not in MODES:
        raise RecipeError(f"resume={mode!r} is not a resume mode", hint=f"choose one of: {', '.join(MODES)}")
    root = Path(root)
    candidates = checkpoint_dirs(root)
    if mode == "never":
        if committed_checkpoints(root):
            raise RecipeError(f"resume=never, but {root} already holds committed checkpoints",
                              hint="pick a new run_dir, or resume=auto to continue from them")
        return None
    if not candidates:
        return None
    damaged = []
    for folder in candidates:
        problems = verify(folder)
        if problems:
            damaged.append((folder, problems))
            say(f"checkpoint {folder} is damaged ({'; '.join(problems)}); trying the one before it")
            continue
        manifest, _ = read_manifest(folder)
        changes = resume_diff(manifest["recipe"], fingerprint)
        if changes and mode == "auto":
            raise RecipeError(
                f"the recipe changed since {folder.name} was saved, so it cannot resume:\n    "
                + "\n    ".join(changes),
                hint="restore those values, or pass resume=force to continue anyway, or pick a new run_dir")
        if changes:
            say("resume=force: resuming although the recipe changed:\n    " + "\n    ".join(changes))
        if damaged:
            say(f"resuming from {folder} (step {manifest['step']}), an older checkpoint, because the newer "
                f"one{'s are' if len(damaged) > 1 else ' is'} damaged")
        else:
            say(f"resuming from {folder} (step {manifest['step']})")
        return folder
    listing = "\n    ".join(f"{f.name}: {'; '.join(p)}" for f, p in damaged)
    raise CheckpointError(f"no checkpoint under {root} verifies, and starting fresh would discard them:\n    {listing}",
                          hint=f"restore the named files, or move {root} aside to start over")
