"""`--help`: every recipe group with its options, across all recipe folders on the search path."""

from __future__ import annotations

from pathlib import Path

from ftrecipes.config.compose import ENV_PATH, GROUPS, search_dirs


def group_options(dirs: list[Path]) -> dict[str, dict[str, Path]]:
    """group -> {option: folder it comes from}; earlier folders shadow later ones, as in composition."""
    found: dict[str, dict[str, Path]] = {g: {} for g in GROUPS}
    for base in dirs:
        for group in GROUPS:
            for path in sorted((base / group).glob("*.y*ml")):
                found[group].setdefault(path.stem, base)
    return found


def render_help(config_dirs: list[str], usage: str) -> str:
    dirs = search_dirs(config_dirs)
    builtin = dirs[-1]
    lines = [f"usage: {usage}", "",
             "Compose a recipe from one option per group, override any key, validate, plan, launch.", "",
             "Recipe groups (pick with group=option):"]
    for group, options in group_options(dirs).items():
        shown = [name if folder == builtin else f"{name} [{folder}]" for name, folder in sorted(options.items())]
        lines.append(f"  {group:<10} {', '.join(shown) or '(none)'}")
    lines += ["",
              "Run-level keys: seed, run_dir, stages=[prepare,train,evaluate,export], dry_run=true,",
              "                trust_remote_code=true (command line only), logging.*, train.*, evaluate.*, export.*",
              "",
              "Options:",
              "  -h, --help           this text",
              "  --cfg job            print the validated recipe and exit",
              "  -m, --multirun       sweep: method.r=8,16 runs one job per value",
              "  -cd, --config-dir D  add a recipe folder (searched before the built-in recipes)",
              f"  ${ENV_PATH}  more recipe folders, separated by ':'",
              "",
              "Examples:",
              "  python -m ftrecipes.launch recipe=quickstart",
              "  python -m ftrecipes.launch recipe=qwen32b_qlora method.r=32 hardware=8x_h100 dry_run=true",
              "  python -m ftrecipes.launch data.path=my.jsonl data.format=alpaca stages=[prepare]",
              "  python -m ftrecipes.launch logging=[wandb,tensorboard] logging.project=my-project",
              "",
              f"Recipe folders searched, in order: {', '.join(str(d) for d in dirs)}",
              "Exit codes: 0 ok, 2 recipe, 3 data, 4 diverged, 5 out of resources, 6 preempted (requeue),",
              "            7 distributed timeout, 8 environment, 1 internal bug (docs/exit-codes.md)."]
    return "\n".join(lines)
