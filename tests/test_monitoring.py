"""Monitoring for real: one tiny run through the CLI with W&B (offline), TensorBoard and MLflow.

Checks the metric series in every backend against metrics.jsonl, the secret canary over every
byte the run wrote, the rising-loss warning on an absurd learning rate, and report.html in
headless Chromium (skipped with a reason where Debian's chromium package is absent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ftrecipes.data import synth_invoices
from ftrecipes.monitor import health
from tests.conftest import run_module

CANARY = "canary-7f3a9c1e-do-not-write"
SMALL = [
    "recipe=quickstart", "model.architecture.hidden_size=64", "model.architecture.num_hidden_layers=2",
    "model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1",
    "model.architecture.head_dim=32", "model.architecture.intermediate_size=128", "model.architecture.vocab_size=1024",
    "model.build.pretrain_steps=40", "model.build.pretrain_batch_size=16", "train.micro_batch_size=8",
    "stages=[prepare,train]", "logging.progress_bars=false",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    synth_invoices.write_jsonl(synth_invoices.sft_rows(200, seed=3), root / "invoices.jsonl")
    return root


def _launch(workdir: Path, name: str, *overrides: str):
    env = {"FTRECIPES_CACHE": str(workdir / "cache"), "WANDB_MODE": "offline", "WANDB_API_KEY": CANARY,
           "HF_TOKEN": CANARY, "FTR_TEST_CANARY": CANARY, "WANDB_SILENT": "true"}
    run_dir = workdir / name
    result = run_module("ftrecipes.launch", *SMALL, f"data.path={workdir / 'invoices.jsonl'}", f"run_dir={run_dir}",
                        *overrides, env=env)
    return result, run_dir


@pytest.fixture(scope="module")
def tracked(workdir):
    result, run_dir = _launch(workdir, "tracked", "logging=[wandb,tensorboard,mlflow]", "train.max_steps=24",
                              "train.eval_interval=6", "logging.log_interval=2", "model.revision=${oc.env:FTR_TEST_CANARY}")
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return result, run_dir, rows


def _series(rows, key):
    return [(r["step"], r[key]) for r in rows if key in r]


def _same(got, want) -> bool:
    """Same steps, values equal to float32 precision (backends store float32)."""
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def test_metrics_jsonl_has_every_cpu_field(tracked):
    _, _, rows = tracked
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    assert len(train) >= 10 and len(evals) == 4
    for key in ("step", "epoch", "loss", "learning_rate", "grad_norm", "memory_gb", "memory_peak_gb", "memory_percent"):
        assert all(key in r for r in train), key
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in train[1:])
    assert all(r["memory_device"] == "cpu" and 0 < r["memory_percent"] < 100 for r in train)
    assert all(abs(r["eval_perplexity"] - 2.718281828 ** r["eval_loss"]) < 1e-3 * r["eval_perplexity"] for r in evals)
    assert "mfu" not in train[-1]  # GPU only
    assert train[-1]["loss"] < train[0]["loss"]


def _wandb_records(path: Path):
    """Records of a .wandb file: a 7-byte header, then LevelDB-log framing of protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (2, 3):
            pending += chunk
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending + chunk)
        pending = b""
        yield record


def test_wandb_offline_history_has_the_loss_series(tracked):
    _, run_dir, rows = tracked
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    logged = []
    for record in _wandb_records(files[0]):
        if record.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            if "loss" in items:
                logged.append((items["_step"], items["loss"]))
    assert _same(logged, _series(rows, "loss"))


def test_tensorboard_events_have_the_same_series(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, rows = tracked
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert _same([(e.step, e.value) for e in events.Scalars("train/loss")], _series(rows, "loss"))
    assert _same([(e.step, e.value) for e in events.Scalars("eval/loss")], _series(rows, "eval_loss"))


def test_mlflow_logs_to_a_local_file_store(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks readers of file stores to opt in
    _, run_dir, rows = tracked
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "ftrecipes"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    assert _same(sorted(history), _series(rows, "loss"))
    assert run.data.params["model.revision"] == "${oc.env:FTR_TEST_CANARY}"  # logged as written, never resolved


def test_secret_canary_is_in_no_file_the_run_wrote(tracked):
    result, run_dir, _ = tracked
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any("tfevents" in p.name for p in files)
    # the checkpoints too: the pickled TrainingArguments and the manifest's recipe fingerprint
    # (model.revision above is an ${oc.env:...} value given on the command line)
    names = {p.relative_to(run_dir).as_posix() for p in files}
    assert any(n.startswith("checkpoints/checkpoint-") and n.endswith("/training_args.bin") for n in names)
    assert any(n.startswith("checkpoints/checkpoint-") and n.endswith("/manifest.json") for n in names)
    leaked = [str(p.relative_to(run_dir)) for p in files if CANARY.encode() in p.read_bytes()]
    assert leaked == []
    assert CANARY not in result.out + result.err


def test_summary_and_report_are_written(tracked):
    result, run_dir, _ = tracked
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 24
    assert summary["best_eval_loss"] > 0 and summary["perplexity"]["language"] == "en"
    assert summary["cost"]["currency"] == "USD" and summary["tokens_per_s"] > 0
    assert "run summary" in result.out and "best validation loss" in result.out
    page = (run_dir / "report.html").read_text()
    assert 'data-name="train loss"' in page and 'data-name="validation loss"' in page and "Data report" in page


def test_absurd_learning_rate_triggers_the_rising_loss_warning(workdir):
    # full fine-tuning: Adam's first steps move every weight by about the learning rate, so the loss
    # jumps at once (5.3 -> 13 -> 9.3); a LoRA run at this rate may instead collapse to a plateau,
    # depending on its dropout draws
    result, run_dir = _launch(workdir, "hot", "method.learning_rate=0.5", "train.max_steps=24", "train.warmup_ratio=0",
                              "train.max_grad_norm=1000", "train.eval_interval=4", "logging.log_interval=1", "method=full")
    warnings = json.loads((run_dir / "health.json").read_text())
    assert [w["check"] for w in warnings if w["check"] == "rising_loss"] == ["rising_loss"], result.out[-2000:]
    assert "lower the learning rate" in result.out
    assert "rising_loss" in (run_dir / "report.html").read_text()


def test_health_checks_on_synthetic_series():
    rising = [{"step": s, "eval_loss": v} for s, v in ((10, 1.0), (20, 1.1), (30, 1.3), (40, 1.6))]
    assert health.rising_loss(rising, 3, 1e-3).check == "rising_loss"
    falling = [{"step": s, "eval_loss": v} for s, v in ((10, 1.6), (20, 1.3), (30, 1.1), (40, 1.0))]
    assert health.rising_loss(falling, 3, 1e-3) is None and health.plateau(falling, 3, 0.01) is None
    # a jump above 1.5x the best and above the start is divergence, even with few logs
    jump = [{"step": s, "loss": v} for s, v in ((1, 5.3), (2, 5.5), (3, 8.9))]
    assert "jumped to 8.9" in health.rising_loss(jump, 3, 0.5).message
    noisy = [{"step": s, "loss": v} for s, v in ((1, 5.3), (2, 3.0), (3, 4.6), (4, 3.1), (5, 4.4))]
    assert health.rising_loss(noisy, 3, 1e-4) is None  # above 1.5x the best, but below the start
    flat = falling + [{"step": s, "eval_loss": 1.0 - 1e-4 * i} for i, s in enumerate((50, 60, 70))]
    assert health.plateau(flat, 3, 0.01).check == "plateau"
    diverging = [{"step": s, "loss": 2.0 - s / 100} for s in range(5, 100, 5)] + rising
    assert health.overfitting(diverging, 3).check == "overfitting"
    assert health.memory_high([{"step": 1, "memory_percent": 95.0, "memory_device": "cuda"}], 90).check == "memory"
    assert health.perplexity_verdict(2.0, "zh", {"en": 20, "zh": 10})["ok"] is True
    assert health.perplexity_verdict(3.0, "en", {"en": 20, "zh": 10})["ok"] is False
    assert health.detect_language(["请把发票信息提取出来", "hello"]) == "zh"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed")
def test_report_renders_in_headless_chromium(tracked, tmp_path):
    _, run_dir, _ = tracked
    url = (run_dir / "report.html").resolve().as_uri()
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-name="train loss"' in dom and "<polyline" in dom
    assert 'class="summary"' in dom and "<table" in dom and "Resolved recipe" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1100,2400", url], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    if "FTR_KEEP_SCREENSHOT" in __import__("os").environ:
        shutil.copy(shot, __import__("os").environ["FTR_KEEP_SCREENSHOT"])


def test_cpu_processes_count_as_devices_for_samples_and_cost(tmp_path):
    """Two gloo processes on one host (hardware=cpu_2proc): each step trains two micro-batches,
    and the summary's cost counts two devices, as the plan's world size does."""
    from types import SimpleNamespace

    from ftrecipes.config.resolve import resolve
    from ftrecipes.monitor.resources import Throughput
    from ftrecipes.monitor.summary import build_summary

    overrides = ["hardware=cpu_2proc", "hardware.price_per_gpu_hour=1.0", "train.micro_batch_size=4",
                 "train.gradient_accumulation_steps=2"]
    recipe = resolve(overrides).recipe
    throughput = Throughput(recipe, SimpleNamespace(config=None, parameters=lambda: iter(())))
    assert throughput.samples_per_step == 4 * 2 * 2
    summary = build_summary(recipe, tmp_path, seconds=3600.0)
    assert summary["cost"]["devices"] == 2 and summary["cost"]["amount"] == pytest.approx(2.0)
    assert build_summary(resolve([]).recipe, tmp_path, seconds=3600.0)["cost"]["devices"] == 1
