"""Read filled expert review sheets back into a run's evaluation summary and report.

    python -m ftrecipes.review run_dir=runs/x sheet=filled.csv
    python -m ftrecipes.review run_dir=runs/x sheet=[alice.csv,bob.csv]     # several raters

The evaluate stage writes the blank sheet (`eval/review.csv`, `eval/review.html`; see
`ftrecipes.evaluate.review_sheet`). This command checks the filled sheets (every problem listed as
`file:line: ...`, exit code of a data error, nothing written), then adds the expert scores (mean and
95% interval, agreement between raters) to `eval/summary.json` under `expert_review`, writes
`eval/review_scores.json`, refreshes `report.html`, and prints the scores. Running it again with
more sheets replaces the earlier result. See `ftrecipes.evaluate.review_scores`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ftrecipes import cli_args as a
from ftrecipes.errors import ExitCode, report_errors

PROG = "python -m ftrecipes.review"
ARGS = {
    "run_dir": a.Arg(a.text, a.REQUIRED, "the run whose eval/review.csv was filled in"),
    "sheet": a.Arg(a.text_list, a.REQUIRED, "the filled sheet, or a list [a.csv,b.csv] (one per rater)"),
}


def review(argv: list[str]) -> int:
    if any(w in ("-h", "--help") for w in argv):
        print(a.usage(PROG, ARGS, __doc__))
        return ExitCode.OK
    from ftrecipes.evaluate.review_scores import format_review, read_review

    args = a.parse(argv, ARGS, PROG)
    if not args["sheet"]:
        from ftrecipes.errors import RecipeError

        raise RecipeError("sheet= names no file", hint="sheet=filled.csv or sheet=[a.csv,b.csv]")
    run_dir = Path(args["run_dir"])
    result = read_review(run_dir, [Path(s) for s in args["sheet"]])
    print(format_review(result))
    print(f"added expert_review to {run_dir / 'eval' / 'summary.json'}"
          + (f" and {run_dir / 'report.html'}" if (run_dir / "report.html").is_file() else ""))
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    return report_errors(review, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
