"""`python -m ftrecipes.plan recipe=...`: the plan alone, without launching anything.

Takes the same overrides as `python -m ftrecipes.launch`. With `run_dir=` pointing at a prepared
run, token counts come from its data report and plan.json is written there. Never imports torch.
"""

from __future__ import annotations

import json
import sys

from ftrecipes.errors import report_errors


def main(argv: list[str] | None = None) -> int:
    return report_errors(plan, sys.argv[1:] if argv is None else argv)


def plan(args: list[str]) -> int:
    import datetime as _dt

    from ftrecipes.config.resolve import resolve
    from ftrecipes.distributed.command import build
    from ftrecipes.launch import parse_args, run_dir_for
    from ftrecipes.plan.summary import build_plan, render
    from ftrecipes.rundir import RESOLVED

    parsed = parse_args(args)
    resolved = resolve(parsed.overrides, parsed.config_dir)
    run_dir = run_dir_for(resolved, None, _dt.datetime.now())
    existing = run_dir if run_dir.is_dir() else None
    result = build_plan(resolved.recipe, existing)
    print(render(result, resolved.recipe, str(build(resolved.recipe, run_dir / RESOLVED))))
    if existing:
        (existing / "plan.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {existing / 'plan.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
