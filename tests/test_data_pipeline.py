"""The prepare stage (ftrecipes/data/pipeline.py) on real files, a real tokenizer and real datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ftrecipes.config.resolve import resolve
from ftrecipes.data import dedup, pii
from ftrecipes.data.pipeline import run_prepare

REPO = Path(__file__).resolve().parents[1]

SHARED = {"alpaca_en_demo": 999, "alpaca_zh_demo": 1000, "identity": 91, "dpo_en_demo": 300,
          "glaive_toolcall_en_demo": 300}


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE with the tiny model's chat template, trained offline in about a second."""
    from ftrecipes.data import synth_invoices
    from ftrecipes.model.tiny import train_tokenizer

    docs = list(synth_invoices.pretrain_corpus(1500, 3))
    docs += ["The quick brown fox answers questions about science, history and code."] * 20
    return train_tokenizer(docs, 2048)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRECIPES_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)


def _recipe(*overrides):
    return resolve(["stages=[prepare]", *overrides]).recipe


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def _rows(n: int, start: int = 0):
    topics = ["rivers", "volcanoes", "compilers", "bread", "orbits", "violins", "glaciers", "tax law",
              "bees", "chess", "tides", "ink", "deserts", "bridges", "lasers", "mosses"]
    return [{"instruction": f"Write a short note number {i} about {topics[i % len(topics)]} and item {i * 7919 % 1000}.",
             "input": "", "output": f"Note {i}: {topics[(i * 5) % len(topics)]} matter because of reason {i * 104729 % 9973}, "
                                     f"and {topics[(i * 3) % len(topics)]} follow rule {i * 31 % 97} in case {i}."}
            for i in range(start, start + n)]


def _read(run: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (run / "data" / f"{split}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_datasets_prepare_through_their_recipes(name, shared_datasets, tokenizer, tmp_path):
    summary = run_prepare(_recipe(f"data={name}"), tmp_path / "run", tokenizer=tokenizer)
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["rows_in"] == SHARED[name] and not report["bad_rows"]
    for before, after in zip(report["steps"], report["steps"][1:]):
        if after["step"] != "pack":
            assert after["in"] == before["out"], (before, after)
        assert before["in"] - before["out"] == sum(v for k, v in before["removed"].items() if "kept" not in k) \
            or before["step"] in ("split", "pack")
    assert sum(summary["splits"].values()) == report["rows_out"] > 0
    for split, count in summary["splits"].items():
        assert len(_read(tmp_path / "run", split)) == count
    assert {c["item"] for c in report["checklist"]} >= {"PII redacted", "labels verified by humans"}
    assert (tmp_path / "run" / "data" / "report.md").is_file()
    assert (tmp_path / "run" / "data" / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    row = _read(tmp_path / "run", "train")[0]
    assert "messages" in row and row["messages"][0]["role"] in ("system", "user")
    if name == "dpo_en_demo":
        assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["content"]


GOLDEN = [  # (text, entities that must be found)
    ("John at john.smith@example.com", ["EMAIL"]),
    ("我的邮箱是john@example.cn，电话13800138000，谢谢", ["EMAIL", "PHONE"]),
    ("call +44 20 7946 0958 or (415) 555-2671", ["PHONE", "PHONE"]),
    ("card 4111 1111 1111 1111 exp 12/29", ["CREDIT_CARD"]),
    ("IBAN: DE89 3704 0044 0532 0130 00.", ["IBAN"]),
    ("SSN 123-45-6789", ["US_SSN"]),
    ("身份证号11010519491231002X请保密", ["CN_RESIDENT_ID"]),
    ("server 10.0.0.12 and 2001:db8:85a3::8a2e:370:7334", ["IP_ADDRESS", "IP_ADDRESS"]),
    ("db = 'postgres://admin:hunter2@db.internal:5432/app'", ["URL_CREDENTIALS"]),
    # numbers inside code and prose that are not PII
    ("for i in range(1000000000): total += 4111111111111112", []),
    ("std::vector<int> v; auto t = 12:30:45; version 1.2.3", []),
    ("472547338 + 960397912423686 = 960398384971024", []),
    ("SSN-like 666-12-3456 and 123-00-4567 are invalid", []),
    ("订单号 2023-10-15，金额 1234.56 元", []),
    ("身份证号11010519491231002Y是错的", []),
]


@pytest.mark.parametrize("text,expected", GOLDEN, ids=range(len(GOLDEN)))
def test_pii_golden_set(text, expected):
    assert [name for _, _, name in pii.find(text)] == expected


def test_pseudonyms_are_stable_and_not_real_pii():
    a, b = pii.Redactor("pseudonymize", seed=1), pii.Redactor("pseudonymize", seed=1)
    text = "mail john@example.com, card 4111 1111 1111 1111"
    assert a(text) == b(text) and "john@" not in a(text) and "4111" not in a(text)
    assert pii.residual([a(text)], fakes=a.fakes) == {}


def test_planted_pii_is_absent_from_outputs_and_logs(tokenizer, tmp_path, capfd):
    planted = ["alice.w@corp-mail.com", "+86 139 1234 5678", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32",
               "078-05-1120", "11010519491231002X", "192.168.20.7", "https://bob:pa55w0rd@git.example.org/x"]
    rows = _rows(40)
    for k, value in enumerate(planted):
        rows[k]["output"] += f" Contact: {value}."
    path = _write_jsonl(tmp_path / "pii.jsonl", rows)
    run_prepare(_recipe("data=quickstart", f"data.path={path}", "data.debug_rows=2"), tmp_path / "run", tokenizer=tokenizer)
    logs = capfd.readouterr()
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    prepared = "".join((tmp_path / "run" / "data" / f"{s}.jsonl").read_text() for s in ("train", "validation", "test"))
    for value in planted:
        assert value not in prepared and value not in logs.out + logs.err
    assert report["redactions"] == {"CN_RESIDENT_ID": 1, "CREDIT_CARD": 1, "EMAIL": 1, "IBAN": 1,
                                    "IP_ADDRESS": 1, "PHONE": 1, "URL_CREDENTIALS": 1, "US_SSN": 1}
    assert report["pii_residual"] == {} and report["checklist"][0]["state"] == "ok"


def test_near_duplicates_removed_and_distinct_rows_kept(tokenizer, tmp_path):
    rows = _rows(30)
    near = [dict(r, output=r["output"] + " Indeed.") for r in rows[:5]]  # Jaccard >= 0.9
    path = _write_jsonl(tmp_path / "dups.jsonl", rows + near + [rows[7]])
    run_prepare(_recipe("data=quickstart", f"data.path={path}"), tmp_path / "run", tokenizer=tokenizer)
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["duplicates"]["exact"] == 1 and report["duplicates"]["near"] == 5
    assert report["rows_out"] == 30  # every distinct row kept (they share a template, J < 0.9)


def test_near_duplicate_detection_both_directions():
    base = "今天我们讨论长江流域的水文特征以及它对农业灌溉和城市供水的长期影响和变化趋势"
    docs = [base, base + "。", base.replace("长期", "短期"), "完全不同的一段文字，关于火山和地震的形成原因",
            "The committee approved the budget for the new library on Tuesday after a long debate",
            "The committee approved the budget for the new library on Tuesday after a long debate!",
            "The council rejected the plan for a new stadium on Friday after a short meeting"]
    dupes = dedup.near_duplicates(docs, threshold=0.9)
    assert dupes == {1: 0, 5: 4}


def test_malformed_row_error_and_skip(tokenizer, tmp_path):
    bad = _rows(20) + ['{"instruction": "x", "output": '] + [{"instruction": "secret-123 here", "output": ""}] + _rows(1, 20)
    path = _write_jsonl(tmp_path / "bad.jsonl", bad)
    model = tmp_path / "tok"
    tokenizer.save_pretrained(model)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    code = ("import sys, ftrecipes.worker as w; w.STAGES['prepare'] = 'ftrecipes.data.pipeline:run_prepare'; "
            "from ftrecipes.launch import main; sys.exit(main(sys.argv[1:]))")
    args = ["data=quickstart", f"data.path={path}", "model.source=local", f"model.path={model}",
            "stages=[prepare]", f"run_dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          env={**__import__("os").environ}, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert f"{path}:21: invalid JSON" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-c", code, *args, "data.on_bad_row=skip", "data.max_bad_fraction=0.2",
                           f"run_dir={tmp_path / 'run2'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "run2" / "data" / "report.json").read_text())
    assert report["bad_rows"] == {"invalid_json": 1, "empty_assistant": 1} and report["rows_in"] == 23
    assert "secret-123" not in proc.stdout + proc.stderr


def test_skip_fails_over_the_bad_fraction(tokenizer, tmp_path):
    from ftrecipes.errors import DataError

    path = _write_jsonl(tmp_path / "bad.jsonl", _rows(5) + [{"instruction": "q"}] * 3)
    with pytest.raises(DataError, match="3 of 8 rows are bad"):
        run_prepare(_recipe("data=quickstart", f"data.path={path}", "data.on_bad_row=skip"), tmp_path / "r",
                    tokenizer=tokenizer)


def test_cache_hit_and_invalidation(tokenizer, tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", _rows(30))
    recipe = _recipe("data=quickstart", f"data.path={path}")
    assert run_prepare(recipe, tmp_path / "a", tokenizer=tokenizer)["cached"] is False
    again = run_prepare(recipe, tmp_path / "b", tokenizer=tokenizer)
    assert again["cached"] is True and (tmp_path / "b" / "data" / "train.jsonl").is_file()
    _write_jsonl(path, _rows(31))
    assert run_prepare(recipe, tmp_path / "c", tokenizer=tokenizer)["cached"] is False


def test_quickstart_labels_and_packing(tokenizer, tmp_path):
    from datasets import load_from_disk

    summary = run_prepare(_recipe("data=quickstart"), tmp_path / "run", tokenizer=tokenizer)
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["rows_out"] >= 0.95 * report["rows_in"]  # short JSON answers survive min_tokens
    assert summary["packing_efficiency"] > 0.8  # ~107-token rows, two to a 256-token sequence
    row = load_from_disk(str(tmp_path / "run" / "data" / "tokenized" / "train"))[0]
    ids, mask = np.array(row["input_ids"]), np.array(row["completion_mask"])
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    start = int(np.flatnonzero(ids == assistant)[-1])
    assert mask[: start + 1].sum() == 0 and mask[start + 1:].all()
    assert ids[-1] == tokenizer.eos_token_id and mask[-1] == 1  # EOS is trained
    packed = load_from_disk(str(tmp_path / "run" / "data" / "packed" / "train"))[0]
    assert sum(packed["seq_lengths"]) == len(packed["input_ids"]) == len(packed["position_ids"])
    assert packed["position_ids"][packed["seq_lengths"][0]] == 0


def test_our_packing_matches_trl_efficiency():
    from datasets import Dataset
    from trl import pack_dataset

    from ftrecipes.data.pack import pack

    rng = np.random.default_rng(0)
    rows = [np.arange(n) for n in rng.integers(10, 500, size=3000)]
    _, ours = pack(rows, rows, 512)
    theirs = pack_dataset(Dataset.from_dict({"input_ids": [r.tolist() for r in rows]}), 512, strategy="bfd")
    assert ours["efficiency"] >= sum(map(len, rows)) / (len(theirs) * 512) - 1e-3
