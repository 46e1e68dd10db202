"""The quickstart task generator: reproducible, input-dependent, distinct answers."""

from __future__ import annotations

import json

from ftrecipes.data import synth_invoices as si
from ftrecipes.paths import builtin_data_dir

WORDS = {
    "USD": ("$", "USD", "dollars"),
    "EUR": ("€", "EUR", "euros"),
    "GBP": ("£", "GBP", "pounds"),
    "CHF": ("CHF", "francs"),
}


def test_same_seed_same_rows_other_seed_other_rows():
    assert si.sft_rows(50, seed=7) == si.sft_rows(50, seed=7)
    assert si.sft_rows(50, seed=7) != si.sft_rows(50, seed=8)
    assert list(si.pretrain_corpus(20, seed=3)) == list(si.pretrain_corpus(20, seed=3))


def test_answers_are_compact_json_in_fixed_key_order_and_all_distinct():
    rows = si.sft_rows(2000, seed=11)
    outputs = [row["output"] for row in rows]
    assert len(set(outputs)) == len(outputs)
    for out in outputs:
        parsed = json.loads(out)
        assert list(parsed) == list(si.KEYS)
        assert out == json.dumps(parsed, separators=(",", ":"))
        assert isinstance(parsed["total"], int)


def test_every_answer_is_read_from_its_own_input():
    for row in si.sft_rows(300, seed=5):
        fields = json.loads(row["output"])
        note = row["input"]
        assert fields["vendor"] in note and str(fields["total"]) in note, row
        assert any(word in note for word in WORDS[fields["currency"]]), row
        assert any(phrase in note for phrase in si.STATUS_PHRASES[fields["status"]]), row
        assert row["output"] not in note


def test_no_constant_answer_scores():
    rows = si.sft_rows(1600, seed=si.SHIPPED_SEED)
    fields = [json.loads(r["output"]) for r in rows]
    for key in si.KEYS:
        values = [f[key] for f in fields]
        most_common = max(values.count(v) for v in set(values))
        assert most_common / len(values) < 0.5, key  # no field is guessable from its prior


def test_pretraining_text_never_shows_the_task_schema_or_instruction():
    for doc in si.pretrain_corpus(3000, seed=0):
        assert '"vendor":' not in doc and '"status":' not in doc
        assert not any(instruction in doc for instruction in si.INSTRUCTIONS)


def test_pretraining_ledger_lines_restate_their_note():
    docs = [d for d in si.pretrain_corpus(500, seed=1) if "\nvendor=" in d]
    assert len(docs) > 300
    for doc in docs:
        note, ledger = doc.split("\n")
        facts = dict(part.split("=") for part in ledger.split())
        assert facts["vendor"] in note and facts["total"] in note


def test_shipped_file_is_valid_and_matches_the_generator(tmp_path):
    shipped = builtin_data_dir() / "invoices.jsonl"
    assert shipped.stat().st_size < 600_000
    rows = [json.loads(line) for line in shipped.read_text(encoding="utf-8").splitlines()]
    assert all(set(row) == {"instruction", "input", "output"} for row in rows)
    assert len(rows) == si.SHIPPED_ROWS
    assert len({row["output"] for row in rows}) == len(rows)
    regenerated = tmp_path / "invoices.jsonl"
    si.main(["--out", str(regenerated)])
    assert regenerated.read_bytes() == shipped.read_bytes()
