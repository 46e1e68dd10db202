"""`run_dir/slurm.sbatch`: the job script for clusters without Hydra's submitit plugin.

Rendered from `launch/slurm.sbatch` with one `srun` task per node, each running the run's torchrun
command with its own `NODE_RANK` (`$SLURM_NODEID`) and the first node as rendezvous host. The job
asks SLURM to send SIGUSR1 to every process of the step `signal_seconds` before the time limit:
the workers checkpoint on it and exit 6 (preempted), and the script then requeues the job, whose
re-run resumes from that checkpoint.

Recipe keys: `hardware.nodes`, `hardware.gpus_per_node`, `hardware.master_port`; the time limit and
CPUs per task are arguments (defaults 24 h and 8 per GPU).
"""

from __future__ import annotations

from pathlib import Path

from ftrecipes.paths import resource_dir


def render_sbatch(recipe, run_dir: Path, command: str, time_limit: str = "24:00:00", signal_seconds: int = 300) -> str:
    hw = recipe["hardware"]
    template = (resource_dir("launch") / "slurm.sbatch").read_text(encoding="utf-8")
    values = {"job_name": f"ftrecipes-{Path(run_dir).name}", "nodes": hw["nodes"],
              "gpus_per_node": hw["gpus_per_node"], "cpus_per_task": max(8 * hw["gpus_per_node"], 4),
              "time_limit": time_limit, "run_dir": str(run_dir), "signal_seconds": signal_seconds,
              "master_port": hw.get("master_port", 29500), "command": command.replace("'", "'\\''")}
    return template.format(**values)
