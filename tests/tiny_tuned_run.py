"""One real tiny tuned run for the review, lm-eval, serve and model-card tests (no mocks).

`tuned_run` (session scope) runs prepare -> train -> evaluate -> export on the small tiny model of
tests/test_stages_e2e.py, with 300 rows so the test split has 60 (a full review sheet), and writes
the run dir files a launch writes (recipe.resolved.yaml, lock.json, summary.json, report.html).
About a minute on two CPU cores. Import the fixture into a test module to use it.
"""

from __future__ import annotations

import os
import time

import pytest

# The small tiny model and short training of tests/test_stages_e2e.py (copied: that file is its own).
SMALL = [
    "recipe=quickstart",
    "model.architecture.hidden_size=64",
    "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2",
    "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32",
    "model.architecture.intermediate_size=128",
    "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=40",
    "model.build.pretrain_batch_size=16",
    "train.max_steps=24",
    "train.micro_batch_size=8",
    "evaluate.max_samples=16",
    "evaluate.batch_size=8",
    "logging.log_interval=4",
    "logging.progress_bars=false",
    "data.split.test=0.2",  # 60 of 300 rows: a full 60-item review sheet
    "evaluate.max_new_tokens=16",  # short answers: generation dominates these tests' time
]


_BUILT: dict = {}  # one run per test session, however many test modules import the fixture


def _build(root):
    from ftrecipes.config.resolve import resolve
    from ftrecipes.data import synth_invoices
    from ftrecipes.data.pipeline import run_prepare
    from ftrecipes.evaluate.heldout import run_evaluate
    from ftrecipes.export.merge import run_export
    from ftrecipes.monitor.summary import finish_run
    from ftrecipes.rundir import create
    from ftrecipes.train.sft import run_train

    data = root / "invoices.jsonl"
    synth_invoices.write_jsonl(synth_invoices.sft_rows(300, seed=3), data)
    run_dir = root / "run"
    argv = [*SMALL, f"data.path={data}", f"run_dir={run_dir}"]
    resolved = resolve(argv)
    create(resolved, run_dir, argv, {})
    started = time.perf_counter()
    for stage in (run_prepare, run_train, run_evaluate, run_export):
        stage(resolved.recipe, run_dir)
    finish_run(resolved.recipe, run_dir, time.perf_counter() - started)
    return resolved.recipe, run_dir


@pytest.fixture(scope="session")
def tuned_run(tmp_path_factory):
    """`(recipe, run_dir)` of a finished run: adapter/, merged model/, eval/, summary.json."""
    # Each importing module gets its own copy of this fixture, so the run itself is memoized.
    if "root" not in _BUILT:
        _BUILT["root"] = tmp_path_factory.mktemp("tuned")
    root = _BUILT["root"]
    saved = os.environ.get("FTRECIPES_CACHE")
    os.environ["FTRECIPES_CACHE"] = str(root / "cache")  # the tiny base; subprocesses inherit it
    try:
        if "run" not in _BUILT:
            _BUILT["run"] = _build(root)
        yield _BUILT["run"]
    finally:
        if saved is None:
            os.environ.pop("FTRECIPES_CACHE", None)
        else:
            os.environ["FTRECIPES_CACHE"] = saved
