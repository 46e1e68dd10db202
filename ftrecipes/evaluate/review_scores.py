"""Reading filled review sheets back: `read_review(run_dir, sheets) -> dict`.

A sheet is `eval/review.csv` (written by `ftrecipes.evaluate.review_sheet`) with the score columns
filled in. One sheet per expert, or one sheet whose `rater` column names several; a blank `rater`
is the file's name (`alice.csv` -> `alice`). Every problem is reported at once as `file:line:
...` (the line where the row starts in the file, as an editor shows it):

- a missing or unknown column (did-you-mean), a sheet that is not UTF-8 CSV;
- an `id` that is not an item of this run's sheet (`eval/review.json`), or an item scored twice by
  one rater; an item whose `tuned_answer` no longer matches the one that was reviewed;
- `accuracy_1_5` not a whole number 1-5, `format_compliant_yn` / `safe_yn` not y/n (yes/no, any
  case); a row with some of the three scores and not the others (all three empty skips the item).

The result (`expert_review` in `eval/summary.json`, and so in `report.html`) holds, for the tuned
answers: `accuracy` (mean, 95% interval over items, the 1-5 counts), `format_compliant` and `safe`
(rate, 95% interval), how many items, ratings and raters, and with several raters `agreement`
(Krippendorff's alpha, and the share of rater pairs that agree: exactly, and within one point for
accuracy). Details per item go to `eval/review_scores.json`; model cards written by the export
stage are refreshed. See `ftrecipes.evaluate.review_stats`.

Raises `DataError` (file:line list) for a malformed sheet, `EnvironmentProblem` when the run has no
review sheet to check against.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

from ftrecipes.config.problems import closest
from ftrecipes.errors import DataError, EnvironmentProblem
from ftrecipes.evaluate import review_stats as st
from ftrecipes.evaluate.review_sheet import COLUMNS, SCORE_COLUMNS
from ftrecipes.evaluate.summary_merge import merge_eval_summary, refresh_report

YES, NO = {"y", "yes"}, {"n", "no"}
MAX_LISTED = 30


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()  # spreadsheets rewrite line endings and spaces


def _records(path: Path, problems: list[str]):
    """Yields `(line, row dict)`; appends header and encoding problems to `problems`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}:1: not UTF-8 text ({exc.reason} at byte {exc.start}); save the sheet as CSV UTF-8")
        return
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","  # some locales save CSV with ';'
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        problems.append(f"{path}:1: the sheet is empty")
        return
    header = [h.strip() for h in header]
    unknown = [h for h in header if h and h not in COLUMNS]
    missing = [c for c in COLUMNS if c not in header]
    for name in unknown:
        guess = closest(name, [c for c in COLUMNS if c not in header])
        problems.append(f"{path}:1: unknown column '{name}'" + (f" (did you mean {guess}?)" if guess else ""))
    if missing:
        problems.append(f"{path}:1: missing column(s) {', '.join(missing)}; keep the header ftrecipes wrote")
    if unknown or missing:
        return
    line_end = reader.line_num
    for cells in reader:
        start, line_end = line_end + 1, reader.line_num  # a quoted cell may span several lines
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            problems.append(f"{path}:{start}: {len(cells)} cells, the header has {len(header)} "
                            f"(a '{delimiter}' inside an unquoted cell?)")
            continue
        yield start, {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header)}


def _score(where: str, row: dict, problems: list[str]) -> dict | None:
    """The row's three scores, None when all are empty (skipped); appends problems."""
    raw = {c: row[c].strip() for c in SCORE_COLUMNS[:3]}
    if not any(raw.values()):
        return None
    missing = [c for c, v in raw.items() if not v]
    if missing:
        problems.append(f"{where}: partly scored: fill {', '.join(missing)} too, or leave all three scores empty "
                        "to skip the item")
        return None
    scores: dict = {}
    accuracy = raw["accuracy_1_5"]
    try:
        value = float(accuracy)
        if value != int(value) or not 1 <= value <= 5:
            raise ValueError
        scores["accuracy"] = int(value)
    except ValueError:
        problems.append(f"{where}: accuracy_1_5 is '{accuracy}', expected a whole number from 1 to 5")
    for column, key in (("format_compliant_yn", "format_compliant"), ("safe_yn", "safe")):
        value = raw[column].lower()
        if value in YES | NO:
            scores[key] = 1 if value in YES else 0
        else:
            problems.append(f"{where}: {column} is '{raw[column]}', expected y or n")
    return scores if len(scores) == 3 else None


def read_sheets(run_dir: Path, sheets: list[Path]) -> list[dict]:
    """The valid ratings `{"id", "rater", "accuracy", "format_compliant", "safe", "comment", "where"}`
    of the sheets; raises `DataError` listing every problem."""
    meta_path, original = run_dir / "eval" / "review.json", run_dir / "eval" / "review.csv"
    if not meta_path.is_file() or not original.is_file():
        raise EnvironmentProblem(f"{run_dir} has no review sheet (eval/review.csv, eval/review.json)",
                                 hint="run the evaluate stage with evaluate.review.enabled=true first")
    with original.open(encoding="utf-8-sig", newline="") as f:
        answers = {r["id"]: _norm(r["tuned_answer"]) for r in csv.DictReader(f)}
    ids = set(json.loads(meta_path.read_text(encoding="utf-8"))["ids"])
    problems: list[str] = []
    ratings, seen = [], {}
    for sheet in sheets:
        if not sheet.is_file():
            problems.append(f"{sheet}: no such file")
            continue
        for line, row in _records(sheet, problems):
            where = f"{sheet}:{line}"
            item, rater = row["id"].strip(), row["rater"].strip() or sheet.stem
            if item not in ids:
                problems.append(f"{where}: id '{item}' is not an item of this run's review sheet")
                continue
            if _norm(row["tuned_answer"]) != answers.get(item, _norm(row["tuned_answer"])):
                problems.append(f"{where}: tuned_answer of {item} differs from the reviewed sheet "
                                "(rows moved or edited?); keep the columns ftrecipes wrote")
                continue
            if (rater, item) in seen:
                problems.append(f"{where}: {item} is scored twice by rater '{rater}' (first at {seen[rater, item]})")
                continue
            seen[rater, item] = where
            scores = _score(where, row, problems)
            if scores:
                ratings.append({"id": item, "rater": rater, **scores, "comment": row["comment"].strip(),
                                "where": where})
    if not problems and not ratings:
        problems.append(f"{sheets[0]}: no item is scored; fill accuracy_1_5, format_compliant_yn and safe_yn")
    if problems:
        listed = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                          if len(problems) > MAX_LISTED else [])
        raise DataError(f"the review sheet has {len(problems)} problem(s):\n  " + "\n  ".join(listed),
                        hint="fix those cells and run again; nothing was added to the summary")
    return ratings


def summarize(ratings: list[dict], n_items: int) -> dict:
    """The `expert_review` entry of the summary (see the module docstring)."""
    by_item: dict[str, list[dict]] = {}
    for r in ratings:
        by_item.setdefault(r["id"], []).append(r)
    raters = sorted({r["rater"] for r in ratings})

    def units(key: str) -> list[list[float]]:
        return [[r[key] for r in rs] for rs in by_item.values()]

    accuracy = st.mean_interval([sum(u) / len(u) for u in units("accuracy")])
    accuracy["counts"] = {str(k): sum(r["accuracy"] == k for r in ratings) for k in range(1, 6)}
    result = {
        "scored_answer": "tuned", "items_in_sheet": n_items, "items_scored": len(by_item),
        "ratings": len(ratings), "raters": raters, "accuracy": accuracy,
        "format_compliant": st.proportion_interval(units("format_compliant")),
        "safe": st.proportion_interval(units("safe")),
    }
    if len(raters) > 1:
        multi = {k: [u for u in units(k) if len(u) > 1] for k in ("accuracy", "format_compliant", "safe")}
        result["agreement"] = {
            "items_rated_by_several": len(multi["accuracy"]),
            "accuracy": {"krippendorff_alpha_interval": st.krippendorff_alpha(multi["accuracy"], "interval"),
                         "exact": st.pairwise_agreement(multi["accuracy"]),
                         "within_1": st.pairwise_agreement(multi["accuracy"], 1)},
            **{k: {"krippendorff_alpha_nominal": st.krippendorff_alpha(multi[k], "nominal"),
                   "exact": st.pairwise_agreement(multi[k])} for k in ("format_compliant", "safe")},
        }
    return result


def read_review(run_dir: Path, sheets: list[Path]) -> dict:
    """Validates the filled `sheets`, adds `expert_review` to `eval/summary.json`, writes
    `eval/review_scores.json`, refreshes `report.html`; returns the `expert_review` entry."""
    run_dir = Path(run_dir)
    sheets = [Path(s) for s in sheets]
    ratings = read_sheets(run_dir, sheets)
    n_items = len(json.loads((run_dir / "eval" / "review.json").read_text(encoding="utf-8"))["ids"])
    result = summarize(ratings, n_items)
    result["sheets"] = [{"path": str(s.resolve()), "sha256": hashlib.sha256(s.read_bytes()).hexdigest()}
                        for s in sheets]
    (run_dir / "eval" / "review_scores.json").write_text(
        json.dumps({"expert_review": result, "ratings": ratings}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8")
    merge_eval_summary(run_dir, "expert_review", result)
    refresh_report(run_dir)
    from ftrecipes.export.model_card import refresh_model_cards

    refresh_model_cards(run_dir)  # the card's evaluation section now has the expert scores
    return result


def format_review(result: dict) -> str:
    """A few console lines: the scores and, with several raters, the agreement."""
    def ci(entry: dict) -> str:
        return f"[{entry['ci95'][0]:.2f}, {entry['ci95'][1]:.2f}]" if entry.get("ci95") else "[-]"

    acc, fmt, safe = result["accuracy"], result["format_compliant"], result["safe"]
    lines = [f"expert review of the tuned answers: {result['items_scored']}/{result['items_in_sheet']} items, "
             f"{result['ratings']} ratings, {len(result['raters'])} rater(s)",
             f"  accuracy (1-5)    {acc['mean']:.2f}  95% CI {ci(acc)}",
             f"  format compliant  {fmt['rate']:.2f}  95% CI {ci(fmt)}",
             f"  safe              {safe['rate']:.2f}  95% CI {ci(safe)}"]
    agreement = result.get("agreement")
    if agreement:
        def show(value) -> str:
            return "-" if value is None else f"{value:.2f}"

        a, fmt_a, safe_a = (agreement[k] for k in ("accuracy", "format_compliant", "safe"))
        lines.append(f"  agreement on {agreement['items_rated_by_several']} items: accuracy alpha "
                     f"{show(a['krippendorff_alpha_interval'])} (exact {show(a['exact'])}, within 1 "
                     f"{show(a['within_1'])}); format alpha {show(fmt_a['krippendorff_alpha_nominal'])};"
                     f" safe alpha {show(safe_a['krippendorff_alpha_nominal'])}")
    return "\n".join(lines)
