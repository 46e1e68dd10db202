"""An installed wheel works outside the repository: recipes and schemas ship as package data."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_recipes_and_schemas_and_runs_outside_the_repo(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("ftrecipes-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("ftrecipes/recipes/config.yaml", "ftrecipes/recipes/recipe/qwen32b_qlora.yaml",
                     "ftrecipes/schemas/recipe.schema.json", "ftrecipes/schemas/method/lora.schema.json",
                     "ftrecipes/data/builtin/invoices.jsonl"):
        assert required in names, required
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-m", "ftrecipes.launch", "recipe=qwen32b_qlora", "dry_run=true"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "32.76B total" in proc.stdout
    probe = subprocess.run([sys.executable, "-c", "import ftrecipes; print(ftrecipes.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().startswith(str(target))
