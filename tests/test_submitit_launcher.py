"""Hydra's submitit launcher: the SLURM job it would submit (dry run) and a local sweep run for real."""

from __future__ import annotations

import json
import time

import pytest

from conftest import run_cli, run_module
from distributed_recipe import small_recipe

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_dry_run_renders_the_slurm_job_for_two_nodes():
    result = run_cli("recipe=qwen32b_qlora", "hardware=2n_8x_h100", "hydra/launcher=submitit_slurm",
                     "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=1440", "dry_run=true")
    assert result.code == 0, result.err
    sbatch = result.out.split("rendered by submitit (nothing submitted)\n", 1)[1]
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=64", "#SBATCH --partition=gpu", "#SBATCH --time=1440",
                 "srun --unbuffered", "-m submitit.core._submit"):
        assert line in sbatch, line
    assert "--array" not in sbatch  # one job


def test_a_sweep_is_one_job_array():
    result = run_cli("-m", "recipe=qwen32b_qlora", "hardware=2n_8x_h100", "method.r=8,16",
                     "hydra/launcher=submitit_slurm", "dry_run=true")
    assert result.code == 0, result.err
    assert "one array of 2 job(s)" in result.out and "#SBATCH --array=0-1%2" in result.out


@pytest.mark.parametrize("override,why", [
    ("hydra.launcher._target_=os.system", "keys starting with '_'"),
    ("hydra/launcher=basic", "not a launcher ftrecipes runs"),
    ("hydra.searchpath=[pkg://evil]", "Hydra's own settings cannot be changed"),
])
def test_only_the_launcher_may_be_chosen_and_only_on_the_command_line(override, why):
    result = run_cli("hydra/launcher=submitit_slurm", override, "dry_run=true")
    assert result.code == 2 and why in result.err, result.err


def test_launcher_keys_need_a_launcher():
    result = run_cli("hydra.launcher.partition=gpu", "dry_run=true")
    assert result.code == 2 and "add hydra/launcher=submitit_slurm" in result.err


def test_a_local_sweep_of_two_jobs_runs_for_real(scale_root):
    root, env = scale_root
    sweep = root / "sweep"
    started = time.time()
    result = run_module("ftrecipes.launch", "-m", *small_recipe(root), "train.max_steps=2", f"run_dir={sweep}",
                        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15",
                        "method.learning_rate=1e-3,5e-3", env=env, timeout=900)
    print(f"\nlocal sweep of 2 jobs: {time.time() - started:.1f} s")
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    assert "submitting 2 job(s) with LocalLauncher" in result.out
    for index, rate in ((0, 1e-3), (1, 5e-3)):
        run_dir = sweep / str(index)
        assert f"method.learning_rate={rate:g}" in (run_dir / "README.md").read_text()
        assert (run_dir / "model" / "model.safetensors").is_file()
        assert json.loads((run_dir / "stages.json").read_text())["train"]["steps"] == 2
    assert list((sweep / ".submitit").glob("*/*_log.out")), "submitit's own job logs"
