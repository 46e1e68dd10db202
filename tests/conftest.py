"""Shared test helpers: run the CLI in-process or as a real subprocess, and locate shared data."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# A 2-layer tiny base of width 64, quickly pretrained: the shape most training tests use.
SMALL_MODEL = [
    "model.architecture.hidden_size=64", "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32", "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024", "model.build.pretrain_steps=40", "model.build.pretrain_batch_size=16",
]


@contextlib.contextmanager
def private_model_cache(root: Path, overrides: list[str]):
    """FTRECIPES_CACHE at `root` with the recipe's tiny base built there, and torch on one thread
    inside: these models are too small to gain from more, and on a busy machine spinning OpenMP
    workers made them 5x slower. Both come back on exit."""
    import torch

    from ftrecipes.config.resolve import resolve
    from ftrecipes.model.load import resolve_model_path

    saved, threads = os.environ.get("FTRECIPES_CACHE"), torch.get_num_threads()
    os.environ["FTRECIPES_CACHE"] = str(root)
    try:
        resolve_model_path(resolve(overrides).recipe)
        torch.set_num_threads(1)
        yield root
    finally:
        torch.set_num_threads(threads)
        if saved is None:
            os.environ.pop("FTRECIPES_CACHE", None)
        else:
            os.environ["FTRECIPES_CACHE"] = saved


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """Runs `python -m ftrecipes.launch ARGS` in this process (fast) and captures its output."""
    from ftrecipes.launch import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return CliResult(int(code), out.getvalue(), err.getvalue())


def run_module(module: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 600) -> CliResult:
    """Runs `python -m MODULE ARGS` as a real process, the way users do."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def team_dir(tmp_path: Path) -> Path:
    """An empty team recipe folder with the standard group layout."""
    for group in ("model", "method", "objective", "data", "hardware", "recipe"):
        (tmp_path / "team" / group).mkdir(parents=True)
    return tmp_path / "team"


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is absent (a user's clone): the real-dataset tests need it")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def torch_extensions(tmp_path_factory) -> Path:
    """One TORCH_EXTENSIONS_DIR for the whole test run: DeepSpeed compiles its CPU comm op (about
    34 s) and CPU Adam (about 53 s) on first use, then every later test loads them from here."""
    return tmp_path_factory.mktemp("torch_extensions")


@pytest.fixture(scope="session")
def scale_root(tmp_path_factory, torch_extensions) -> tuple[Path, dict]:
    """The folder and environment the multi-process tests share: one model cache (their small
    model is built once per test run) and the DeepSpeed op cache."""
    root = tmp_path_factory.mktemp("scale")
    return root, {"FTRECIPES_CACHE": str(root / "cache"), "TORCH_EXTENSIONS_DIR": str(torch_extensions)}
