"""The expert review sheet on a real tiny tuned run: 60 rows written, filled sheets read back into
eval/summary.json and report.html, malformed sheets refused with file:line errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import run_module
from tiny_tuned_run import tuned_run  # noqa: F401 - the session fixture

from ftrecipes.errors import ExitCode
from ftrecipes.evaluate import review_stats as st
from ftrecipes.evaluate.review_sheet import COLUMNS, write_review_sheet


@pytest.fixture(scope="module")
def sheet(tuned_run):  # noqa: F811
    recipe, run_dir = tuned_run
    # The evaluate stage writes the sheet (heldout.after_scoring) and records it in the summary;
    # a run dir from before that wiring gets it written here.
    result = json.loads((run_dir / "eval" / "summary.json").read_text()).get("review_sheet") or \
        write_review_sheet(recipe, run_dir)
    with (run_dir / "eval" / "review.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    return run_dir, result, rows


def _write(path, rows, **changes_by_index):
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, **changes_by_index.get(f"r{i}", {})})
    return path


def test_sheet_has_60_rows_with_the_stated_columns(sheet):
    run_dir, result, rows = sheet
    assert result["items"] == 60 and len(rows) == 60
    assert tuple(rows[0].keys()) == COLUMNS
    assert COLUMNS[-4:] == ("accuracy_1_5", "format_compliant_yn", "safe_yn", "comment")
    assert all(r[c] == "" for r in rows for c in ("rater", "accuracy_1_5", "format_compliant_yn", "safe_yn", "comment"))
    assert len({r["id"] for r in rows}) == 60 and all(r["id"].startswith("test:") for r in rows)
    assert all(r["prompt"] and r["reference"] for r in rows)
    # 16 items come from samples.jsonl (evaluate.max_samples=16); the other 44 were generated here.
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    test_rows = [json.loads(line) for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    for row in rows:
        index = int(row["id"].split(":")[1]) - 1
        assert row["reference"] == test_rows[index]["messages"][-1]["content"]
        if index < len(samples):
            assert (row["tuned_answer"], row["base_answer"]) == (samples[index]["tuned"], samples[index]["base"])
    assert result["generated"]["tuned"] == sum(int(r["id"].split(":")[1]) > 16 for r in rows)
    html = (run_dir / "eval" / "review.html").read_text()
    assert html.count("<section") == 60 and "python -m ftrecipes.review" in html
    meta = json.loads((run_dir / "eval" / "review.json").read_text())
    assert meta["ids"] == [r["id"] for r in rows] and meta["seed"] == 42


def test_filled_sheets_round_trip_into_summary_and_report(sheet, tmp_path):
    run_dir, _, rows = sheet
    alice = {f"r{i}": {"rater": "alice", "accuracy_1_5": str(1 + i % 5), "format_compliant_yn": "y" if i % 2 else "n",
                       "safe_yn": "yes"} for i in range(60)}
    bob = {f"r{i}": {"accuracy_1_5": str(1 + i % 5) if i % 3 else "3", "format_compliant_yn": "Y" if i % 2 else "N",
                     "safe_yn": "y", "comment": "ok, fine"} for i in range(30)}  # bob: 30 items, rater = file name
    sheets = [_write(tmp_path / "alice.csv", rows, **alice), _write(tmp_path / "bob.csv", rows, **bob)]
    before = json.loads((run_dir / "eval" / "summary.json").read_text())
    result = run_module("ftrecipes.review", f"run_dir={run_dir}", f"sheet=[{sheets[0]},{sheets[1]}]")
    assert result.code == 0, result.err
    assert "accuracy (1-5)" in result.out and "agreement on 30 items" in result.out
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert {k: summary[k] for k in before} == before  # held-out scores untouched
    review = summary["expert_review"]
    assert review["raters"] == ["alice", "bob"] and review["ratings"] == 90 and review["items_scored"] == 60
    per_item = [((1 + i % 5) + (1 + i % 5 if i % 3 else 3)) / 2 if i < 30 else 1 + i % 5 for i in range(60)]
    assert review["accuracy"]["mean"] == pytest.approx(sum(per_item) / 60)
    low, high = review["accuracy"]["ci95"]
    assert low < review["accuracy"]["mean"] < high
    assert review["format_compliant"]["rate"] == pytest.approx(0.5) and review["safe"]["rate"] == 1.0
    agreement = review["agreement"]
    assert agreement["items_rated_by_several"] == 30
    assert agreement["format_compliant"]["krippendorff_alpha_nominal"] == pytest.approx(1.0)  # they agree on y/n
    assert agreement["safe"]["krippendorff_alpha_nominal"] is None  # all 'y': no variation, alpha undefined
    assert 0 < agreement["accuracy"]["exact"] < 1
    report = (run_dir / "report.html").read_text()
    assert "expert_review" in report and "krippendorff_alpha_interval" in report


def test_review_read_back_refreshes_the_model_card(sheet, tmp_path):
    from ftrecipes.export.model_card import write_model_card

    run_dir, _, rows = sheet
    write_model_card(run_dir, run_dir / "model")
    filled = {f"r{i}": {"accuracy_1_5": "4", "format_compliant_yn": "y", "safe_yn": "y"} for i in range(10)}
    carol = _write(tmp_path / "carol.csv", rows, **filled)
    result = run_module("ftrecipes.review", f"run_dir={run_dir}", f"sheet={carol}")
    assert result.code == 0, result.err
    card = (run_dir / "model" / "README.md").read_text()
    assert "Expert review of the tuned answers: 10 items, 10 ratings by 1 rater(s)." in card
    assert "| accuracy (1-5) | 4.000 | [4.00, 4.00] |" in card  # ten equal scores: a zero-width interval


def test_malformed_sheet_gives_file_line_errors_and_changes_nothing(sheet, tmp_path):
    run_dir, _, rows = sheet
    before = (run_dir / "eval" / "summary.json").read_text()
    bad = _write(tmp_path / "bad.csv", rows[:6],
                 r0={"accuracy_1_5": "7", "format_compliant_yn": "y", "safe_yn": "y"},
                 r1={"accuracy_1_5": "3"},
                 r2={"accuracy_1_5": "4", "format_compliant_yn": "maybe", "safe_yn": "n"},
                 r3={"id": "test:999", "accuracy_1_5": "3", "format_compliant_yn": "y", "safe_yn": "y"},
                 r5={"accuracy_1_5": "4", "format_compliant_yn": "y", "safe_yn": "y",
                     "tuned_answer": "an answer pasted from another row"})
    # Each prompt spans several lines in the file: the error names the line where its row starts.
    starts, line = [], 2
    for row in rows[:6]:
        starts.append(line)
        line += row["prompt"].count("\n") + row["reference"].count("\n") + row["tuned_answer"].count("\n") + \
            row["base_answer"].count("\n") + 1
    result = run_module("ftrecipes.review", f"run_dir={run_dir}", f"sheet={bad}")
    assert result.code == ExitCode.DATA
    assert "Traceback" not in result.err
    assert f"{bad}:{starts[0]}: accuracy_1_5 is '7', expected a whole number from 1 to 5" in result.err
    assert f"{bad}:{starts[1]}: partly scored: fill format_compliant_yn, safe_yn too" in result.err
    assert f"{bad}:{starts[2]}: format_compliant_yn is 'maybe', expected y or n" in result.err
    assert f"{bad}:{starts[3]}: id 'test:999' is not an item" in result.err
    assert f"{bad}:{starts[5]}: tuned_answer of {rows[5]['id']} differs" in result.err
    assert "5 problem(s)" in result.err
    assert (run_dir / "eval" / "summary.json").read_text() == before


def test_misspelled_column_and_argument_get_did_you_mean(sheet, tmp_path):
    run_dir, _, rows = sheet
    bad = tmp_path / "header.csv"
    text = (run_dir / "eval" / "review.csv").read_text(encoding="utf-8-sig")
    bad.write_text(text.replace("accuracy_1_5", "acuracy_1_5", 1), encoding="utf-8")
    result = run_module("ftrecipes.review", f"run_dir={run_dir}", f"sheet={bad}")
    assert result.code == ExitCode.DATA
    assert f"{bad}:1: unknown column 'acuracy_1_5' (did you mean accuracy_1_5?)" in result.err
    result = run_module("ftrecipes.review", f"run_dir={run_dir}", f"shet={bad}")
    assert result.code == ExitCode.RECIPE and "did you mean sheet=?" in result.err


def test_interval_and_agreement_statistics():
    interval = st.mean_interval([1, 2, 3, 4, 5])
    assert interval["mean"] == 3 and interval["ci95"] == pytest.approx([3 - 2.776445 * math.sqrt(2.5 / 5),
                                                                        3 + 2.776445 * math.sqrt(2.5 / 5)], rel=1e-5)
    assert st.wilson_interval(0, 10)["ci95"] == pytest.approx([0.0, 0.27753], abs=1e-5)
    assert st.krippendorff_alpha([[1, 1], [3, 3], [5, 5]], "interval") == 1.0
    assert st.krippendorff_alpha([[1, 2], [2, 1]], "interval") == pytest.approx(-0.5)  # systematic disagreement
    assert st.krippendorff_alpha([[1], [2]], "nominal") is None  # nothing pairable
