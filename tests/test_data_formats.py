"""The prepare stage (ftrecipes/data/pipeline.py) on every input kind and format, and its cleaning
options: CSV and Parquet, chat / prompt-only / raw text / prompt-chosen-rejected rows, mixing
weights, column and role mapping, output-format checks, the denylist, pseudonyms, label masks,
hub names offline, and the rank-0-only prepare with real processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ftrecipes.config.resolve import resolve
from ftrecipes.data.load import input_files
from ftrecipes.data.pipeline import run_prepare
from ftrecipes.errors import DataError, EnvironmentProblem

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["rivers", "volcanoes", "compilers", "bread", "orbits", "violins", "glaciers", "tax law",
          "bees", "chess", "tides", "ink", "deserts", "bridges", "lasers", "mosses"]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE with the tiny model's chat template (`<|role|>content</s>`, no tool role)."""
    from ftrecipes.model.tiny import train_tokenizer

    docs = [f"{_question(i)} {_answer(i)}" for i in range(400)]
    return train_tokenizer(docs, 1024)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRECIPES_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)


def _question(i: int) -> str:
    return f"Write a short note number {i} about {TOPICS[i % 16]} and item {i * 7919 % 1000}."


def _answer(i: int) -> str:
    return (f"Note {i}: {TOPICS[(i * 5) % 16]} matter because of reason {i * 104729 % 9973}, "
            f"and {TOPICS[(i * 3) % 16]} follow rule {i * 31 % 97} in case {i}.")


def _recipe(path, *overrides):
    return resolve(["stages=[prepare]", "data=quickstart", f"data.path={path}", *overrides]).recipe


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _prepare(tokenizer, tmp_path, path, *overrides, run="run"):
    run_prepare(_recipe(path, *overrides), tmp_path / run, tokenizer=tokenizer)
    return json.loads((tmp_path / run / "data" / "report.json").read_text())


def _rows(run: Path, *splits) -> list[dict]:
    return [json.loads(line) for s in splits or ("train", "validation", "test")
            for line in (run / "data" / f"{s}.jsonl").read_text().splitlines()]


def _tokenized(run: Path, split: str = "train"):
    from datasets import load_from_disk

    return load_from_disk(str(run / "data" / "tokenized" / split))


def test_csv_input_with_file_line_of_a_bad_row(tokenizer, tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output"])
        for i in range(30):
            writer.writerow([_question(i), "line one\nline two" if i == 3 else "", _answer(i)])
        writer.writerow(["a question with no answer", "", ""])
    with pytest.raises(DataError, match=rf"{path}:33: .*empty"):
        _prepare(tokenizer, tmp_path, path)  # row 31 starts on line 33: row 4 spans two lines
    report = _prepare(tokenizer, tmp_path, path, "data.on_bad_row=skip")
    assert report["rows_in"] == 31 and report["bad_rows"] == {"empty_assistant": 1}
    assert report["formats"] == {str(path): "alpaca"} and report["rows_out"] == 30
    assert any(m["content"].endswith("line one\nline two") for r in _rows(tmp_path / "run") for m in r["messages"])


def test_parquet_chat_input_with_column_and_role_mapping(tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    dialogs = [[{"speaker": "customer", "utterance": _question(i)}, {"speaker": "agent", "utterance": _answer(i)}]
               for i in range(30)]
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.table({"dialog": dialogs, "id": list(range(30))}), path)
    overrides = ["data.format=chat", "data.columns.messages=dialog", "data.columns.role=speaker",
                 "data.columns.content=utterance", "data.roles.user=[customer]", "data.roles.assistant=[agent]"]
    report = _prepare(tokenizer, tmp_path, path, *overrides)
    assert report["rows_in"] == 30 and report["rows_out"] == 30 and report["formats"] == {str(path): "chat"}
    row = _rows(tmp_path / "run", "train")[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    with pytest.raises(DataError, match=rf"{path}:1: .*role \"agent\" is not mapped"):
        _prepare(tokenizer, tmp_path, path, *overrides[:-1], run="unmapped")


def test_sharegpt_tools_and_glob_of_jsonl_files(tokenizer, tmp_path):
    (tmp_path / "parts").mkdir()
    for part in range(2):
        rows = [{"conversations": [{"from": "human", "value": _question(i)},
                                   {"from": "function_call", "value": json.dumps({"name": "lookup", "arguments": {"n": i}})},
                                   {"from": "observation", "value": json.dumps({"result": i * 3})},
                                   {"from": "gpt", "value": _answer(i)}],
                 "tools": json.dumps([{"name": "lookup", "parameters": {"type": "object"}}])}
                for i in range(part * 15, part * 15 + 15)]
        _jsonl(tmp_path / "parts" / f"p{part}.jsonl", rows)
    spec = str(tmp_path / "parts" / "*.jsonl")
    report = _prepare(tokenizer, tmp_path, spec, "data.format=sharegpt")
    assert report["rows_out"] == 30 and report["template"]["tool_role"] == "as user turns"
    row = _rows(tmp_path / "run", "train")[0]
    assert row["tools"][0]["name"] == "lookup" and row["messages"][1]["tool_calls"][0]["function"]["name"] == "lookup"
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert sorted(input_files(_recipe(spec).data)) == sorted((tmp_path / "parts").glob("*.jsonl"))


def test_prompt_chosen_rejected_rows(tokenizer, tmp_path):
    rows = [{"prompt": _question(i), "chosen": _answer(i), "rejected": f"No idea about item {i}, sorry."}
            for i in range(30)]
    report = _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "pref.jsonl", rows), "data.format=auto")
    assert report["formats"] == {str(tmp_path / "pref.jsonl"): "preference"} and report["rows_out"] == 30
    assert report["packing"]["efficiency"] is None and "not packed" in report["packing"]["note"]
    row = _rows(tmp_path / "run", "train")[0]
    assert row["messages"][-1]["role"] == "user" and row["chosen"][0]["content"].startswith("Note ")
    assert row["rejected"][0]["content"].startswith("No idea")
    assert not (tmp_path / "run" / "data" / "packed").exists()


def test_prompt_only_rows_with_a_mapped_column(tokenizer, tmp_path):
    rows = [{"question": _question(i) + " Explain it in a few careful sentences please."} for i in range(30)]
    report = _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "prompts.jsonl", rows), "data.format=prompt",
                      "data.columns.prompt=question")
    assert report["rows_out"] == 30 and "not packed" in report["packing"]["note"]
    row = _rows(tmp_path / "run", "train")[0]
    assert row == {"messages": [{"role": "user", "content": row["messages"][0]["content"]}]}
    mask = np.array(_tokenized(tmp_path / "run")[0]["completion_mask"])
    assert mask.sum() == 0  # a prompt has no answer to train on


def test_raw_text_rows_are_trained_whole_and_packed(tokenizer, tmp_path):
    rows = [{"body": f"{_question(i)} {_answer(i)}"} for i in range(40)]
    report = _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "text.jsonl", rows), "data.format=text",
                      "data.columns.text=body")
    assert report["rows_out"] == 40 and report["packing"]["efficiency"] > 0.5
    row = _tokenized(tmp_path / "run")[0]
    assert all(row["completion_mask"]) and row["input_ids"][-1] == tokenizer.eos_token_id
    assert set(_rows(tmp_path / "run", "train")[0]) == {"text"}


def test_sources_mixed_with_weights(tokenizer, tmp_path):
    main = _jsonl(tmp_path / "main.jsonl", [{"instruction": _question(i), "output": _answer(i)} for i in range(20)])
    extra = _jsonl(tmp_path / "extra.jsonl", [{"messages": [{"role": "user", "content": _question(i)},
                                                            {"role": "assistant", "content": _answer(i)}]}
                                              for i in range(100, 140)])
    overrides = ["data.split.test=0", "data.weight=2", f"data.sources=[{{path: '{extra}', format: chat, weight: 0.5}}]"]
    report = _prepare(tokenizer, tmp_path, main, *overrides)
    held = {r["messages"][0]["content"] for r in _rows(tmp_path / "run", "validation")}
    main_train = [q for q in map(_question, range(20)) if q not in held]
    extra_train = [q for q in map(_question, range(100, 140)) if q not in held]
    assert report["rows_out"] == 60 and len(held) == 6  # weights apply after the split, to train rows only
    users = [r["messages"][0]["content"] for r in _rows(tmp_path / "run", "train")]
    assert report["splits"]["train"] == len(users) == 2 * len(main_train) + round(len(extra_train) / 2)
    assert all(users.count(q) == 2 for q in main_train)
    assert sum(1 for q in extra_train if q in users) == round(len(extra_train) / 2)
    assert not held & set(users)
    assert report["formats"] == {str(main): "alpaca", str(extra): "chat"}
    assert input_files(_recipe(main, *overrides).data) == [main, extra]


def test_output_format_regex_and_json_schema_are_counted(tokenizer, tmp_path):
    rows = [{"instruction": _question(i), "output": json.dumps({"total": i, "currency": "EUR"}) if i % 3
             else f"The total is {i} euros, with care from {TOPICS[i % 16]}."} for i in range(30)]
    path = _jsonl(tmp_path / "fmt.jsonl", rows)
    report = _prepare(tokenizer, tmp_path, path, r"data.output_format.regex='\{.*\}'", "data.filters.min_tokens=1")
    step = {s["step"]: s for s in report["steps"]}["filter_answers"]
    assert step["removed"]["output_format"] == 10 and report["rows_out"] == 20
    schema = ("{type: object, required: [total, currency], properties: {total: {type: integer, minimum: 5}}}")
    report = _prepare(tokenizer, tmp_path, path, f"data.output_format.json_schema={schema}",
                      "data.filters.min_tokens=1", run="schema")
    step = {s["step"]: s for s in report["steps"]}["filter_answers"]
    assert step["removed"]["output_format"] == 10 + 3  # prose rows, and totals 1, 2, 4 under the minimum
    with pytest.raises(DataError, match=rf"{path}:1: the answer does not match data.output_format"):
        _prepare(tokenizer, tmp_path, path, f"data.output_format.json_schema={schema}",
                 "data.output_format.on_mismatch=error", run="strict")


def test_denylist_terms_and_regexes_removed_and_counted(tokenizer, tmp_path):
    rows = [{"instruction": _question(i) + (" Ask AcmeCorp." if i % 2 else ""),
             "output": _answer(i) + (f" See ticket PRJ-{i:04d} and acmecorp docs." if i < 10 else "")}
            for i in range(30)]
    report = _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "deny.jsonl", rows), "data.denylist.terms=[AcmeCorp]",
                      "data.denylist.regexes=['PRJ-[0-9]+']", "data.denylist.replacement='[TERM]'")
    assert report["denylist_removed"] == 15 + 10 + 10
    prepared = "".join((tmp_path / "run" / "data" / f"{s}.jsonl").read_text() for s in ("train", "validation", "test"))
    assert "acmecorp" not in prepared.lower() and "PRJ-" not in prepared and "[TERM]" in prepared
    item = next(c for c in report["checklist"] if c["item"] == "proprietary terms removed")
    assert item["state"] == "ok"


def test_pseudonyms_through_the_pipeline(tokenizer, tmp_path, capfd):
    people = ["ana.lopez@clinic-mail.org", "li.wei@harbor-post.net", "sam.k@northfield-mail.com"]
    rows = [{"instruction": _question(i), "output": _answer(i) + f" Write to {people[i % 3]} today."}
            for i in range(30)]
    report = _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "pii.jsonl", rows), "data.pii.mode=pseudonymize",
                      "data.debug_rows=3")
    logs = capfd.readouterr()
    assert report["redactions"] == {"EMAIL": 30} and report["pii_residual"] == {}
    fakes: dict[str, set] = {}
    for row in _rows(tmp_path / "run"):
        text = row["messages"][-1]["content"]
        i = int(text.split(":")[0].removeprefix("Note "))
        fake = text.rsplit(" Write to ", 1)[1].removesuffix(" today.")
        fakes.setdefault(people[i % 3], set()).add(fake)
    assert all(len(v) == 1 for v in fakes.values())  # the same original always gets the same fake
    assert len({next(iter(v)) for v in fakes.values()}) == 3  # different originals get different fakes
    for person in people:
        assert person not in json.dumps(_rows(tmp_path / "run")) and person not in logs.out + logs.err
    again = _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "pii.jsonl", rows), "data.pii.mode=pseudonymize",
                     "data.cache.enabled=false", run="again")
    assert again["redactions"] == report["redactions"]
    assert _rows(tmp_path / "again") == _rows(tmp_path / "run")  # seeded: the same fakes on every run


@pytest.mark.parametrize("train_on", ["assistant", "last", "all"])
def test_label_masks_follow_train_on(tokenizer, tmp_path, train_on):
    rows = [{"messages": [{"role": "system", "content": "You answer notes."},
                          {"role": "user", "content": _question(i)}, {"role": "assistant", "content": _answer(i)},
                          {"role": "user", "content": _question(i + 50)},
                          {"role": "assistant", "content": _answer(i + 50)}]} for i in range(20)]
    _prepare(tokenizer, tmp_path, _jsonl(tmp_path / "chat.jsonl", rows), f"data.template.train_on={train_on}",
             "data.format=chat")
    row = _tokenized(tmp_path / "run")[0]
    ids, mask = np.array(row["input_ids"]), np.array(row["completion_mask"])
    trained = tokenizer.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
    first, second = [m["content"] for m in _rows(tmp_path / "run", "train")[0]["messages"] if m["role"] == "assistant"]
    eos = tokenizer.eos_token
    if train_on == "all":
        assert mask.all()
    elif train_on == "last":
        assert trained == second + eos
    else:
        assert trained == first + eos + second + eos
    assert mask[-1] == 1 and ids[-1] == tokenizer.eos_token_id  # the end of turn is trained


def test_hub_dataset_offline_is_an_environment_problem(tokenizer, tmp_path, monkeypatch):
    import ftrecipes.worker as worker
    from ftrecipes.data import readers
    from tests.conftest import run_cli

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(readers, "hub_reachable", lambda timeout_s=3.0: False)
    monkeypatch.setitem(worker.STAGES, "prepare", "ftrecipes.data.pipeline:run_prepare")
    recipe = _recipe("hf:no-such-org/no-such-set:test")
    assert input_files(recipe.data) == []
    with pytest.raises(EnvironmentProblem, match="Hugging Face dataset 'no-such-org/no-such-set' .split test. "
                                                 "could not be loaded: the hub is unreachable") as info:
        run_prepare(recipe, tmp_path / "run", tokenizer=tokenizer)
    assert info.value.exit_code == 8 and "HF_HUB_OFFLINE=1" in info.value.hint
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    result = run_cli("stages=[prepare]", "data=quickstart", "data.path=hf:no-such-org/no-such-set",
                     "model.source=local", f"model.path={tmp_path / 'tok'}", f"run_dir={tmp_path / 'cli'}")
    assert result.code == 8 and "Traceback" not in result.err and "could not be loaded" in result.err


def test_hub_dataset_missing_from_the_offline_cache(tokenizer, tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EnvironmentProblem, match=r"'no-such-org/no-such-set' \(split train\) could not be loaded "
                                                 r"\(ConnectionError\)"):
        run_prepare(_recipe("hf:no-such-org/no-such-set"), tmp_path / "run", tokenizer=tokenizer)


RANK_SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})
from transformers import AutoTokenizer
from ftrecipes.config.resolve import resolve
from ftrecipes.data import pipeline

calls = []
real = pipeline.prepare
def counted(*args, **kwargs):
    calls.append(1)
    time.sleep(2)  # make the other rank really wait
    return real(*args, **kwargs)
pipeline.prepare = counted
recipe = resolve(["stages=[prepare]", "data=quickstart", "data.path={path}", "data.cache.enabled=false",
                  "data.cache.wait_timeout_s=120"]).recipe
summary = pipeline.run_prepare(recipe, {run!r}, tokenizer=AutoTokenizer.from_pretrained({tok!r}))
print("RESULT " + json.dumps({{"summary": summary, "calls": len(calls)}}))
"""


def test_rank0_prepares_once_and_other_ranks_wait(tokenizer, tmp_path):
    path = _jsonl(tmp_path / "rows.jsonl", [{"instruction": _question(i), "output": _answer(i)} for i in range(40)])
    tokenizer.save_pretrained(tmp_path / "tok")
    script = RANK_SCRIPT.format(repo=str(REPO), path=path, run=str(tmp_path / "run"), tok=str(tmp_path / "tok"))
    env = {**os.environ, "WORLD_SIZE": "2", "FTRECIPES_CACHE": str(tmp_path / "cache")}
    procs = {}
    for rank in (1, 0):  # rank 1 starts first and must wait for rank 0
        procs[rank] = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**env, "RANK": str(rank)},
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
    results = {}
    for rank, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        results[rank] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert results[0]["calls"] == 1 and results[1]["calls"] == 0  # the work ran once, on rank 0
    assert results[0]["summary"]["cached"] is False
    for key in ("fingerprint", "splits", "rows_in"):
        assert results[0]["summary"][key] == results[1]["summary"][key]
    assert (tmp_path / "run" / "data" / ".prepare.done").read_text() == results[0]["summary"]["fingerprint"]


def test_rank0_failure_reaches_the_other_ranks(tokenizer, tmp_path):
    from ftrecipes.data import cache

    out = tmp_path / "run" / "data"
    cache.mark(out, cache.FAILED, "abc tmp.jsonl:3: invalid JSON")
    with pytest.raises(DataError, match="rank 0 failed to prepare the data: tmp.jsonl:3: invalid JSON"):
        cache.wait_for_rank0(out, "abc", timeout_s=5, poll_s=0.01)
    with pytest.raises(DataError, match="did not finish preparing the data within 0 s"):
        cache.wait_for_rank0(out, "other", timeout_s=0, poll_s=0.01)


def test_rank0_leaves_a_finished_result_alone(tokenizer, tmp_path, monkeypatch):
    from ftrecipes.data import pipeline

    path = _jsonl(tmp_path / "rows.jsonl", [{"instruction": _question(i), "output": _answer(i)} for i in range(30)])
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    recipe = _recipe(path, "data.cache.enabled=false")
    first = run_prepare(recipe, tmp_path / "run", tokenizer=tokenizer)
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: pytest.fail("prepared twice"))
    again = run_prepare(recipe, tmp_path / "run", tokenizer=tokenizer)  # other ranks may be reading it
    assert again["cached"] is True and again["fingerprint"] == first["fingerprint"]
