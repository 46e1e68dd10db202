"""The exact command that runs a resolved recipe, built from `hardware.*`.

Keys that matter: hardware.accelerator, gpus_per_node, cpu_processes, nodes. One process runs in
the launcher's own process (the printed command is its equivalent). More than one runs under
torchrun, with `--standalone` on one node and c10d rendezvous flags across nodes (the rendezvous
endpoint and node rank come from the environment, as SLURM or the cluster sets them). Every
process re-reads the run dir's `recipe.resolved.yaml`, never the recipe folder.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ftrecipes.plan.memory import world_size

WORKER = ("-m", "ftrecipes.worker")


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    in_process: bool
    world_size: int

    def __str__(self) -> str:
        # "${NODE_RANK}"-style placeholders stay expandable when the line is pasted into a shell
        return " ".join(f'"{a}"' if a.startswith("${") else shlex.quote(a) for a in self.argv)


def build(recipe, resolved_path: Path) -> LaunchCommand:
    hw = recipe["hardware"]
    world = world_size(hw)
    per_node = world // hw["nodes"]
    target = [*WORKER, str(resolved_path)]
    if world == 1:
        return LaunchCommand(["python", *target], True, 1)
    argv = ["torchrun", "--nproc_per_node", str(per_node)]
    if hw["nodes"] == 1:
        argv.append("--standalone")
    else:
        argv += ["--nnodes", str(hw["nodes"]), "--node_rank", "${NODE_RANK}",
                 "--rdzv_backend", "c10d", "--rdzv_id", "${RUN_ID}",
                 "--rdzv_endpoint", f"${{MASTER_ADDR}}:${{MASTER_PORT:-{hw.get('master_port', 29500)}}}"]
    return LaunchCommand(argv + target, False, world)
