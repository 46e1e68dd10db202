"""The command line: dry run, help, --cfg, sweeps."""

from __future__ import annotations

import json

import yaml

from conftest import REPO, run_cli, run_module

PROBE = (
    "import sys, contextlib, io\n"
    "from ftrecipes.launch import main\n"
    "out = io.StringIO()\n"
    "with contextlib.redirect_stdout(out):\n"
    "    code = main(['recipe=qwen32b_qlora', 'dry_run=true'])\n"
    "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules)\n"
    "print(__import__('json').dumps({'code': int(code), 'heavy': heavy, 'out': out.getvalue()}))\n"
)


def test_dry_run_prints_recipe_plan_and_command_without_heavy_imports():
    result = run_module("ftrecipes", "--help")  # python -m ftrecipes works too
    assert result.code == 0
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["heavy"] == []
    out = report["out"]
    assert "path: Qwen/Qwen3-32B" in out
    assert "32.76B total" in out
    assert "trainable     134.22M" in out
    assert "memory " in out and "GiB of 80 GiB" in out
    assert "launch        python -m ftrecipes.worker runs/qwen32b_qlora/" in out
    assert "dry run: nothing started" in out


def test_dry_run_creates_nothing(tmp_path):
    result = run_cli("dry_run=true", f"run_dir={tmp_path / 'run'}")
    assert result.code == 0
    assert not (tmp_path / "run").exists()


def test_multi_gpu_dry_run_uses_torchrun():
    result = run_cli("recipe=qwen32b_qlora", "hardware=8x_h100", "dry_run=true")
    assert result.code == 0
    assert "torchrun --nproc_per_node 8 --standalone --log-dir" in result.out and "-m ftrecipes.worker" in result.out


def test_help_lists_every_group_and_option():
    result = run_cli("--help")
    assert result.code == 0
    lines = {line.split()[0]: line for line in result.out.splitlines() if line.startswith("  ") and line.split()}
    for group, options in {
        "model": ["tiny", "qwen3_32b", "qwen2_5_7b", "llama3_1_8b", "llama3_1_70b"],
        "method": ["full", "lora"], "objective": ["sft"], "data": ["quickstart"],
        "hardware": ["cpu", "1x_rtx4090", "8x_a100_80g"], "recipe": ["quickstart", "qwen32b_qlora"],
    }.items():
        for option in options:
            assert option in lines[group], (group, option)


def test_help_shows_team_options_with_their_folder(team_dir):
    (team_dir / "recipe" / "ours.yaml").write_text("# @package _global_\nseed: 1\n")
    result = run_cli("--config-dir", str(team_dir), "--help")
    assert f"ours [{team_dir}]" in result.out


def test_cfg_job_prints_the_validated_recipe():
    result = run_cli("--cfg", "job", "method.r=4")
    assert result.code == 0
    printed = yaml.safe_load(result.out)
    assert printed["method"]["r"] == 4
    assert printed["model"]["name"] == "tiny"


def test_multirun_sweeps_every_value():
    result = run_cli("-m", "method.r=8,16", "dry_run=true", "run_dir=/tmp/sweep")
    assert result.code == 0
    assert result.out.count("#### job") == 2
    assert "/tmp/sweep/0/recipe.resolved.yaml" in result.out and "/tmp/sweep/1/" in result.out
    assert "r: 8" in result.out and "r: 16" in result.out


def test_multirun_validates_every_job_before_starting():
    result = run_cli("-m", "method.r=8,0", "dry_run=true")
    assert result.code == 2
    assert "method.r: 0 is out of range" in result.err
    assert "#### job" not in result.out
