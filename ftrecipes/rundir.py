"""The run directory: one folder that records everything about a run.

    recipe.resolved.yaml   the validated recipe every worker reads (env interpolations kept as written)
    lock.json              Python and package versions, sha256 of every data file, git commit of
                           each recipe folder that is in a repo
    plan.json              the plan printed before launch
    README.md              how to reproduce the run
    metrics.jsonl, data/, adapter/ or model/, eval/   written by the stages

`run_dir=` sets the folder; the default is runs/<recipe>/<timestamp>.
"""

from __future__ import annotations

import datetime as _dt
import glob
import importlib.metadata as md
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from ftrecipes.paths import builtin_data_dir

PACKAGES = ("ftrecipes", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers",
            "safetensors", "hydra-core", "omegaconf", "jsonschema", "deepspeed", "bitsandbytes")
RESOLVED = "recipe.resolved.yaml"


def default_run_dir(name: str, now: _dt.datetime | None = None) -> Path:
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / name / stamp


def data_files(data_path: str) -> list[Path]:
    """The files a `data.path` names: `builtin:NAME`, a file, or a glob."""
    if data_path.startswith("builtin:"):
        return [builtin_data_dir() / data_path.split(":", 1)[1]]
    matches = sorted(glob.glob(str(Path(data_path).expanduser()), recursive=True))
    return [Path(m) for m in matches] or [Path(data_path)]


def git_state(folder: Path) -> dict | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def lock(resolved, argv: list[str]) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    from ftrecipes.data.cache import file_sha256
    from ftrecipes.data.load import input_files

    files = {}
    for path in input_files(resolved.recipe.data):
        files[str(path)] = file_sha256(path) if path.is_file() else None
    folders = {str(d): git_state(d) for d in resolved.composed.search_dirs}
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "data_files": files, "recipe_folders": folders, "command": argv,
            "choices": resolved.choices, "filled_defaults": resolved.filled_defaults}


def write_resolved(resolved, path: Path) -> None:
    header = (f"# Resolved recipe '{resolved.name}', validated. Workers read this file, never the recipe folder.\n"
              f"# Composed from: {', '.join(str(p) for p in resolved.composed.sources)}\n"
              f"# Overrides: {' '.join(resolved.composed.overrides) or '(none)'}\n")
    if resolved.filled_defaults:
        header += f"# Filled from schema defaults: {', '.join(resolved.filled_defaults)}\n"
    path.write_text(header + yaml.safe_dump(resolved.to_write, sort_keys=False))


def readme(resolved, run_dir: Path, argv: list[str]) -> str:
    command = shlex.join(["python", "-m", "ftrecipes.launch", *argv])
    return f"""# Run {run_dir.name} of recipe `{resolved.name}`

Reproduce this run with the same recipe folders (see lock.json for their git commits and the
package versions):

    {command}

Or re-run its stages from the recorded recipe alone:

    python -m ftrecipes.worker {run_dir / RESOLVED}

| file | what |
|---|---|
| recipe.resolved.yaml | the validated recipe |
| lock.json | versions, data hashes, recipe commits |
| plan.json | parameters, memory per device, world size |
| data/ | prepared splits and the data report |
| metrics.jsonl | one JSON object per logged step |
| adapter/ or model/ | trained weights (safetensors) |
| eval/summary.json | held-out scores, base and tuned |
"""


def create(resolved, run_dir: Path, argv: list[str], plan: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved(resolved, run_dir / RESOLVED)
    (run_dir / "lock.json").write_text(json.dumps(lock(resolved, argv), indent=2) + "\n")
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    (run_dir / "README.md").write_text(readme(resolved, run_dir, argv))
    return run_dir / RESOLVED
