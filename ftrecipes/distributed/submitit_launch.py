"""SLURM (and local jobs) through Hydra's submitit launcher plugin, `pip install 'ftrecipes[slurm]'`.

    python -m ftrecipes.launch recipe=qwen32b_qlora hardware=2n_8x_h100 hydra/launcher=submitit_slurm \
        hydra.launcher.partition=gpu hydra.launcher.timeout_min=1440
    python -m ftrecipes.launch -m method.r=8,16 hydra/launcher=submitit_local     # a sweep, as local jobs

Every job of the sweep is validated and its run dir created here, before anything is submitted;
then Hydra's `SlurmLauncher` (or `LocalLauncher`) submits them as one job array and waits. Each job
runs `run_submitted` on every node it got: node rank, rendezvous host and run id come from
submitit's job environment, and the node runs its share through `ftrecipes.distributed.node` (one
process: in-process), so exit codes and failure messages are the same as without SLURM.

The job's resources default from the hardware preset (`hydra.launcher.nodes` = hardware.nodes,
`gpus_per_node`, one task per node: torchrun starts the ranks, 8 CPUs per GPU) and every
`hydra.launcher.*` key of the plugin can be set on the command line. With `dry_run=true` the sbatch
script submitit would write for the array is printed (rendered by submitit itself).

Safety: recipes may not configure Hydra (`ftrecipes.config.safety`). The launcher choice is the
one exception, and only on the command line: `hydra/launcher=submitit_slurm|submitit_local` and
`hydra.launcher.<key>=value`; the plugin's `_target_` cannot be changed, and any other `hydra.*`
override is still refused. Whoever types the command line may run commands on the cluster anyway
(`hydra.launcher.setup`), but no recipe file can.
"""

from __future__ import annotations

import re
from pathlib import Path

from ftrecipes.config.problems import Problem, RecipeProblems
from ftrecipes.errors import ExitCode, FtrecipesError, require

LAUNCHERS = ("submitit_slurm", "submitit_local")
_KEY = re.compile(r"^hydra\.launcher\.([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9][A-Za-z0-9_-]*)*)$")


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """`(recipe overrides, launcher overrides)`; refuses launcher keys it does not allow."""
    recipe, launcher, problems = [], [], []
    for text in overrides:
        key, _, value = text.partition("=")
        bare = key.lstrip("+~")
        if bare == "hydra/launcher":
            if value not in LAUNCHERS:
                problems.append(Problem(bare, f"'{value}' is not a launcher ftrecipes runs", f"command line '{text}'",
                                        f"use hydra/launcher={' or hydra/launcher='.join(LAUNCHERS)}"))
            launcher.append(f"hydra/launcher={value}")
        elif bare.startswith("hydra.launcher."):
            if not _KEY.match(bare):
                problems.append(Problem(bare, "this launcher key cannot be set (keys starting with '_' choose code)",
                                        f"command line '{text}'", "set the plugin's documented keys only"))
            launcher.append(f"{bare}={value}")
        else:
            recipe.append(text)
    if launcher and not any(o.startswith("hydra/launcher=") for o in launcher):
        problems.append(Problem("hydra/launcher", "hydra.launcher.* keys need a launcher", "command line",
                                "add hydra/launcher=submitit_slurm (or submitit_local)"))
    if problems:
        raise RecipeProblems(problems)
    return recipe, launcher


def _resource_defaults(jobs) -> list[str]:
    """`hydra.launcher.*` from the hardware preset; one array, so every job must agree."""
    shapes = {(int(r.recipe.hardware.nodes), int(r.recipe.hardware.gpus_per_node)) for _, r, _ in jobs}
    if len(shapes) > 1:
        raise RecipeProblems([Problem("hardware", f"a submitit sweep is one job array, but its jobs ask for "
                                      f"different nodes x GPUs: {sorted(shapes)}", "command line",
                                      "sweep hardware in separate launches")])
    nodes, gpus = shapes.pop()
    return [f"hydra.launcher.nodes={nodes}", "hydra.launcher.tasks_per_node=1",
            f"hydra.launcher.gpus_per_node={gpus or 'null'}", f"hydra.launcher.cpus_per_task={max(8 * gpus, 2)}",
            "hydra.launcher.name=ftrecipes"]


def _hydra_config(launcher_overrides: list[str], root: Path, config_dirs):
    """The composed Hydra config (with `hydra.launcher`) and the loader that composed it."""
    from hydra.types import RunMode

    from ftrecipes.config.compose import make_loader, search_dirs

    loader = make_loader(search_dirs(config_dirs))
    fixed = [f"hydra.sweep.dir={root}", "hydra.sweep.subdir=${run_dir}",  # each job's output dir is its run dir
             "hydra.job.chdir=false", "hydra.output_subdir=null", "hydra/job_logging=none",
             "hydra/hydra_logging=none", "hydra.job.name=ftrecipes"]
    try:
        cfg = loader.load_configuration("config", [*fixed, *launcher_overrides], RunMode.MULTIRUN)
    except Exception as exc:  # noqa: BLE001 - Hydra's composition errors, restated for the command line
        raise RecipeProblems([Problem("hydra.launcher", " ".join(str(exc).split())[:400], "command line",
                                      "check the hydra.launcher.* keys (see the submitit plugin's options)")]) from None
    return cfg, loader


def submit(jobs: list, launcher_overrides: list[str], args, stage) -> int:
    """Stages every job (`stage(resolved, overrides, run_dir, args, start=False)`), then submits them.

    `jobs`: `(overrides, resolved, run_dir)` per job. Returns the first non-zero exit code of the
    jobs, or 0. Raises `EnvironmentProblem` without the plugin (`pip install 'ftrecipes[slurm]'`).
    """
    import os

    require("hydra_plugins.hydra_submitit_launcher", extra="slurm", purpose="hydra/launcher=submitit_*")
    root = Path(os.path.commonpath([str(Path(d).absolute()) for _, _, d in jobs]))
    defaults = _resource_defaults(jobs)
    cfg, loader = _hydra_config([*launcher_overrides[:1], *defaults, *launcher_overrides[1:]], root, args.config_dir)
    for overrides, resolved, run_dir in jobs:
        code = stage(resolved, overrides, run_dir, args, start=False)
        if code != ExitCode.OK:
            return code
    sweep = [[f"run_dir={Path(d).absolute()}"] for _, _, d in jobs]
    if jobs[0][1].recipe.dry_run:
        print(f"# {cfg.hydra.runtime.choices['hydra/launcher']}: one array of {len(sweep)} job(s), "
              f"rendered by submitit (nothing submitted)\n{preview(cfg, len(sweep))}")
        return ExitCode.OK
    return _launch(cfg, loader, sweep)


def _launch(cfg, loader, sweep: list[list[str]]) -> int:
    from hydra._internal.callbacks import Callbacks
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext

    setup_globals()
    HydraConfig.instance().set_config(cfg)
    context = HydraContext(config_loader=loader, callbacks=Callbacks(cfg))
    launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=run_submitted,
                                                      config=cfg)
    print(f"submitting {len(sweep)} job(s) with {type(launcher).__name__}; waiting for them", flush=True)
    returns = launcher.launch(sweep, initial_job_idx=0)
    code = ExitCode.OK
    for job, ret in zip(sweep, returns):
        try:
            value = ret.return_value  # re-raises what the job raised
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported, then the next one's
            print(f"ftrecipes: job {job[0]} failed: {type(exc).__name__}: {exc}", flush=True)
            value = exc.exit_code if isinstance(exc, FtrecipesError) else ExitCode.INTERNAL
        print(f"job {job[0]}: exit {value}", flush=True)
        code = code or value
    return code


def run_submitted(cfg) -> int:
    """What each node of a submitted job runs: this node's share of the run in `cfg.run_dir`.

    Preemption: submitit has SLURM send SIGUSR2 ahead of the time limit. While training, the
    workers take it (`ftrecipes.reliability.hf`): checkpoint at the next step, exit 6. Then
    submitit's own handler for that signal runs here: Hydra's `checkpoint()` (the same job again),
    requeue, exit; the re-run resumes. Before training starts, submitit's handler answers at once."""
    import submitit

    from ftrecipes.config.resolve import load_resolved
    from ftrecipes.distributed.command import build
    from ftrecipes.distributed.node import run_node
    from ftrecipes.errors import report_errors
    from ftrecipes.rundir import RESOLVED

    run_dir = Path(cfg.run_dir)
    recipe = load_resolved(run_dir / RESOLVED)
    command = build(recipe, run_dir / RESOLVED)
    job = submitit.JobEnvironment()
    if command.in_process:
        from ftrecipes.worker import run_stages

        code = report_errors(lambda path: run_stages(path) and None, run_dir / RESOLVED)
    else:
        env = {"NODE_RANK": str(job.node), "MASTER_ADDR": job.hostnames[0], "RUN_ID": f"ftr-{job.job_id}"}
        code = run_node(recipe, run_dir, command, env=env)
    if code == ExitCode.PREEMPTED:
        _requeue(job)
    return code


def _requeue(job) -> None:
    """submitit's handler for its preemption signal, called now that the checkpoint is committed."""
    import signal

    sig = job._usr_sig()  # USR2, or $SUBMITIT_PREEMPT_SIGNAL
    handler = signal.getsignal(sig)
    if callable(handler):
        print(f"ftrecipes: preempted with a committed checkpoint; submitit requeues job {job.job_id}", flush=True)
        handler(sig, None)  # checkpoint() + requeue + exit (global rank 0 only; other nodes return)


def preview(cfg, jobs: int) -> str:
    """The sbatch script submitit would submit for these launcher settings (SLURM), or the local
    executor's settings."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_", None)
    if cfg.hydra.runtime.choices["hydra/launcher"] != "submitit_slurm":
        return "\n".join(f"{k}: {v}" for k, v in params.items())
    from submitit.slurm import slurm

    names = slurm.SlurmExecutor._equivalence_dict()  # the plugin's generic keys -> sbatch keys
    sbatch = {}
    for key, value in params.items():
        if key in ("submitit_folder", "max_num_timeout") or value is None:
            continue
        key = names.get(key, key)
        sbatch[key] = slurm._convert_mem(value) if key == "mem" else value
    command = f"python -u -m submitit.core._submit {params['submitit_folder']}"
    return slurm._make_sbatch_string(command=command, folder=params["submitit_folder"],
                                     map_count=jobs if jobs > 1 else None, **sbatch)
