"""lm-evaluation-harness on the real tiny tuned model, offline: the heldout task built from the
held-out split, and the clear failures of harness tasks that are unknown or whose data is out of
reach. Needs the eval extra (lm-eval)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from conftest import run_module
from tiny_tuned_run import tuned_run  # noqa: F401 - the session fixture

from ftrecipes.errors import ExitCode

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="lm-eval is not installed (pip install 'ftrecipes[eval]')")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # no hub: the heldout task must not need it


def test_heldout_task_runs_offline_and_lands_in_the_summary(tuned_run, tmp_path):  # noqa: F811
    _, source = tuned_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    # Give half of the 16 scored rows the tuned model's own greedy answer as their reference, so
    # the harness's exact match has a known value (0.5) to reach through the whole chain: chat
    # template, greedy generation, stop token, whitespace handling, metric, summary.
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    test_path = run_dir / "data" / "test.jsonl"
    rows = [json.loads(line) for line in test_path.read_text().splitlines()]
    for i in range(0, 16, 2):
        assert rows[i]["messages"][-1]["content"] != samples[i]["tuned"].strip()
        rows[i]["messages"][-1]["content"] = samples[i]["tuned"].strip()
    test_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = json.loads((run_dir / "eval" / "summary.json").read_text())

    result = run_module("ftrecipes.evaluate.lm_eval_bridge", f"run_dir={run_dir}", "tasks=[heldout]", "limit=16",
                        env=OFFLINE)
    assert result.code == 0, result.err[-3000:]
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert {k: summary[k] for k in before} == before
    lm = summary["lm_eval"]
    assert lm["tuned"]["heldout"]["exact_match"] == pytest.approx(0.5)
    assert lm["tuned"]["heldout"]["exact_match_stderr"] == pytest.approx((0.25 / 15) ** 0.5)
    assert lm["n_docs"] == {"heldout": 16} and lm["lm_eval_version"].startswith("0.4.")
    # The harness's greedy answers are the evaluate stage's: same model, prompt and decoding.
    harness = [json.loads(line) for line in
               (run_dir / "eval" / "lm_eval" / "samples_heldout_tuned.jsonl").read_text().splitlines()]
    assert [h["prediction"].strip() for h in harness] == [s["tuned"].strip() for s in samples]
    task = (run_dir / "eval" / "lm_eval" / "tasks" / "ftrecipes_heldout.yaml").read_text()
    assert "dataset_path: json" in task and "generate_until" in task
    assert "tuned heldout" in result.out.replace("  ", " ").replace("  ", " ")


def test_unknown_task_fails_before_loading_a_model(tuned_run):  # noqa: F811
    _, run_dir = tuned_run
    result = run_module("ftrecipes.evaluate.lm_eval_bridge", f"run_dir={run_dir}", "tasks=[heldout,cmnli]",
                        env=OFFLINE)
    assert result.code == ExitCode.RECIPE, result.err[-2000:]
    assert "has no task 'cmnli' (did you mean mnli?)" in result.err
    assert "evaluate.lm_eval.include_path" in result.err and "Traceback" not in result.err


def test_harness_task_without_reachable_data_fails_clearly(tuned_run):  # noqa: F811
    _, run_dir = tuned_run
    result = run_module("ftrecipes.evaluate.lm_eval_bridge", f"run_dir={run_dir}", "tasks=[mmlu_abstract_algebra]",
                        env=OFFLINE)
    assert result.code == ExitCode.ENVIRONMENT, result.err[-2000:]
    assert "lm-eval task 'mmlu_abstract_algebra' could not load its data" in result.err
    assert "the task 'heldout' runs offline" in result.err and "Traceback" not in result.err
    assert "lm_eval" not in json.loads((run_dir / "eval" / "summary.json").read_text())
