"""The worker entry point: runs a resolved recipe's stages. One per process (rank).

    python -m ftrecipes.worker RUN_DIR/recipe.resolved.yaml

Stages run in pipeline order, as listed in `stages` (prepare, train, evaluate, export); each is a
plain function `run_<stage>(recipe, run_dir)` that reads and writes files in the run dir, so a stage
can run alone on an earlier run (`stages=[evaluate] run_dir=runs/...`).

Under torchrun (several ranks, `ftrecipes.distributed.runtime`): every rank joins the process group
with `hardware.timeout_s` first; prepare runs on every rank (rank 0 prepares, the others wait for
it), train on every rank, evaluate and export on rank 0 only, and only rank 0 writes the run dir's
results. Each rank leaves `logs/exit-rank<N>.json` with its exit code for the launcher.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

from ftrecipes.distributed import runtime
from ftrecipes.errors import ExitCode, report_errors

STAGES = {
    "prepare": "ftrecipes.data.pipeline:run_prepare",
    "train": "ftrecipes.train.stage:run_train",
    "evaluate": "ftrecipes.evaluate.heldout:run_evaluate",
    "export": "ftrecipes.export.merge:run_export",
}


def run_stages(resolved_path: Path, recipe=None) -> dict:
    """Runs the stages of the run dir holding `resolved_path`. `recipe`: the launcher's own
    validated recipe when it runs the job in its process (the file holds the same; reading and
    validating it again costs ~0.1 s of the start); a worker process reads the file."""
    if recipe is None:
        from ftrecipes.config.resolve import load_resolved

        recipe = load_resolved(resolved_path)
    from ftrecipes.train.cpu_malloc import reuse_freed_memory
    from ftrecipes.train.distribution_cache import cache_packages_distributions
    from ftrecipes.train.gc_pause import end_of_stage, pause_collection
    from ftrecipes.train.import_structure_cache import cache_import_structure
    from ftrecipes.train.lean_imports import hide_unused_packages

    hidden = hide_unused_packages(recipe)  # before anything imports transformers; only in a process of our own
    cache_packages_distributions(recipe)  # before TRL builds its package table (same rule)
    cache_import_structure(recipe)  # before transformers builds its lazy-import table (same rule)
    reuse_freed_memory(recipe)  # CPU: glibc keeps freed blocks for the next step (same rule)
    pause_collection(recipe, next(iter(recipe.stages), None))  # until training starts (same rule)
    if hidden and os.environ.get("RANK", "0") == "0":
        print(f"ftrecipes: not importing what this recipe does not use: {', '.join(sorted(hidden))} "
              "(train.lean_imports)", flush=True)
    run_dir = resolved_path.parent
    results, run_started, stage = {}, time.perf_counter(), None
    runtime.start(recipe)
    try:
        for stage in recipe.stages:
            if not runtime.runs_here(stage):
                continue
            if stage != "train" and "train" in results:
                runtime.end_training()  # rank 0 goes on alone; the other ranks are done
            module, function = STAGES[stage].split(":")
            print(f"\n== {stage} ==", flush=True)
            started = time.perf_counter()
            try:
                results[stage] = getattr(importlib.import_module(module), function)(recipe, run_dir)
            finally:
                end_of_stage()  # the collector on, nothing frozen (train turned it on before its first step)
            print(f"== {stage} done in {time.perf_counter() - started:.1f} s ==", flush=True)
    except BaseException:
        _finish(recipe, run_dir, time.perf_counter() - run_started, failed=stage)
        raise
    end_of_stage()  # also when no stage ran in this process
    runtime.end_training()
    if runtime.is_main():
        (run_dir / "stages.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    _finish(recipe, run_dir, time.perf_counter() - run_started)
    return results


def _finish(recipe, run_dir: Path, seconds: float, failed: str | None = None) -> None:
    """summary.json, the console summary and report.html, on rank 0 only; a failure here is
    reported but never hides the stage's own error or result."""
    if not runtime.is_main():
        return
    try:
        from ftrecipes.monitor.summary import finish_run

        finish_run(recipe, run_dir, seconds, failed)
    except Exception as exc:  # noqa: BLE001 - the report is secondary to the run's outcome
        print(f"ftrecipes: could not write the run summary/report: {type(exc).__name__}: {exc}", file=sys.stderr)


def _run_for_exit_code(path: Path, seen: list) -> None:
    try:
        run_stages(path)
    except BaseException as error:
        seen.append(error)  # for this rank's exit report
        raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if argv is None:  # a rank's own process (train.lean_imports may act)
        from ftrecipes.train import lean_imports

        lean_imports.OWNS_PROCESS = True
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__)
        return ExitCode.OK if args and args[0] in ("-h", "--help") else ExitCode.RECIPE
    path = Path(args[0])
    if not path.is_file():
        print(f"ftrecipes: {path} does not exist\n  fix: give the recipe.resolved.yaml of a run dir", file=sys.stderr)
        return ExitCode.RECIPE
    if runtime.world() <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return report_errors(_run_for_exit_code, path, [])
    seen: list = []
    code = ExitCode.INTERNAL
    try:
        code = report_errors(_run_for_exit_code, path, seen)
        return code
    finally:
        runtime.write_exit_report(path.parent, code, seen[-1] if seen else None)


if __name__ == "__main__":
    sys.exit(main())
