"""The command line: compose a recipe, validate it, plan it, then launch it.

    python -m ftrecipes.launch recipe=qwen32b_qlora method.r=32 hardware=8x_h100
    python -m ftrecipes.launch recipe=quickstart dry_run=true
    python -m ftrecipes.launch -m method.r=8,16,32          # a sweep: one run per value
    python -m ftrecipes.launch --cfg job recipe=quickstart  # print the validated recipe
    python -m ftrecipes.launch --config-dir ./team_recipes recipe=our_sft
    python -m ftrecipes.launch hardware=2n_8x_h100 hydra/launcher=submitit_slurm  # SLURM via submitit

Every job of a sweep is composed and validated before the first one starts. A bad recipe exits 2
with every problem listed; nothing heavy (torch, transformers) is imported until a stage runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from ftrecipes.errors import ExitCode, report_errors

USAGE = "python -m ftrecipes.launch [--help] [--cfg job] [-m] [--config-dir DIR] [key=value ...]"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ftrecipes.launch", usage=USAGE, add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("-m", "--multirun", action="store_true")
    parser.add_argument("-c", "--cfg", choices=["job", "all"])
    parser.add_argument("-cd", "--config-dir", action="append", default=[])
    parser.add_argument("overrides", nargs="*")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        from ftrecipes.config.problems import Problem, RecipeProblems

        raise RecipeProblems([Problem("", f"unknown option {u}", "command line", f"usage: {USAGE}")
                              for u in unknown])
    return args


def expand_sweeps(overrides: list[str], multirun: bool) -> list[list[str]]:
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def run_dir_for(resolved, index: int | None, stamp: _dt.datetime) -> Path:
    from ftrecipes.rundir import default_run_dir

    base = Path(resolved.recipe.run_dir) if resolved.recipe.run_dir else default_run_dir(resolved.name, stamp)
    return base / str(index) if index is not None else base


def main(argv: list[str] | None = None) -> int:
    """The command (`argv` None: this process is the run's, so `train.lean_imports` may act) or a
    call from Python with `argv` (the caller's process: nothing is kept out of it)."""
    if argv is None:
        from ftrecipes.train import lean_imports

        lean_imports.OWNS_PROCESS = True
    return report_errors(launch, sys.argv[1:] if argv is None else argv)


def launch(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.help:
        from ftrecipes.cli_help import render_help

        print(render_help(args.config_dir, USAGE))
        return ExitCode.OK
    from ftrecipes.config.problems import RecipeProblems
    from ftrecipes.config.resolve import resolve

    from ftrecipes.distributed.submitit_launch import split_overrides

    overrides, scheduler = split_overrides(args.overrides)  # hydra/launcher=submitit_*: command line only
    jobs = expand_sweeps(overrides, args.multirun)
    resolved_jobs, problems = [], []
    for job in jobs:
        try:
            resolved_jobs.append((job, resolve(job, args.config_dir)))
        except RecipeProblems as error:
            problems.extend(error.problems)
    if problems:
        raise RecipeProblems(problems)
    stamp = _dt.datetime.now()
    if len(resolved_jobs) > 1:  # a sweep's jobs share this process: what one hides, another may use
        from ftrecipes.train import lean_imports

        lean_imports.OWNS_PROCESS = False
    if scheduler:
        from ftrecipes.distributed.submitit_launch import submit

        staged = [(job, resolved, run_dir_for(resolved, index if args.multirun else None, stamp))
                  for index, (job, resolved) in enumerate(resolved_jobs)]
        return submit(staged, scheduler, args, stage=run_job)
    for index, (job, resolved) in enumerate(resolved_jobs):
        if args.multirun:
            print(f"\n#### job {index}: {' '.join(job)}", flush=True)
        code = run_job(resolved, job, run_dir_for(resolved, index if args.multirun else None, stamp), args)
        if code != ExitCode.OK:
            return code
    return ExitCode.OK


def run_job(resolved, overrides: list[str], run_dir: Path, args, start: bool = True) -> int:
    """Prints the plan, creates the run dir and (unless `start` is False: a scheduler starts it)
    runs the job."""
    import yaml

    from ftrecipes import rundir
    from ftrecipes.distributed.command import build
    from ftrecipes.distributed.engine import engine_files
    from ftrecipes.distributed.slurm import render_sbatch
    from ftrecipes.plan.summary import build_plan, render

    recipe = resolved.recipe
    resolved_path = run_dir / rundir.RESOLVED
    command = build(recipe, resolved_path)
    plan = build_plan(recipe)
    if args.cfg:
        print(yaml.safe_dump(resolved.to_write, sort_keys=False), end="")
        return ExitCode.OK
    from ftrecipes.config.advice import print_advice

    print_advice(recipe)  # values outside the usual range: printed, never refused
    files = engine_files(recipe)
    # each SLURM node runs its share through ftrecipes.distributed.node (exit codes, failure message)
    node_line = str(command) if command.in_process else f"python -m ftrecipes.distributed.node {run_dir}"
    if recipe.hardware.accelerator == "cuda":
        files["slurm.sbatch"] = render_sbatch(recipe, run_dir, node_line)
    if recipe.dry_run:
        print(f"# resolved recipe '{resolved.name}' (from {', '.join(map(str, resolved.composed.sources))})")
        print(yaml.safe_dump(resolved.to_write, sort_keys=False))
        for name, text in files.items():
            print(f"# {name} (written to the run dir at launch)\n{text}")
        if recipe.hardware.nodes > 1:
            from ftrecipes.distributed.node import node_commands

            print("# on each node, with MASTER_ADDR = node 0's address (the launcher runs node 0):")
            print("\n".join(node_commands(recipe, run_dir)) + "\n")
        print(render(plan, recipe, str(command)))
        print(f"\ndry run: nothing started. The run dir would be {run_dir}")
        return ExitCode.OK
    rundir.create(resolved, run_dir, overrides, {**plan, "command": str(command)})
    for name, text in files.items():
        (run_dir / name).write_text(text, encoding="utf-8")
    print(render(plan, recipe, str(command)))
    print(f"run dir: {run_dir}", flush=True)
    if not start:
        return ExitCode.OK
    if command.in_process:
        from ftrecipes.worker import run_stages

        run_stages(resolved_path, recipe)
    else:
        from ftrecipes.distributed.node import print_other_nodes, run_node

        print_other_nodes(recipe, run_dir)
        code = run_node(recipe, run_dir, command)
        if code != ExitCode.OK:
            return code
    print(f"\nrun dir: {run_dir}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
