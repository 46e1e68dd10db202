"""The exact command that runs a resolved recipe, built from `hardware.*`.

Keys that matter: hardware.accelerator, gpus_per_node, cpu_processes, nodes, strategy,
master_port. One process runs in the launcher's own process (the printed command is its
equivalent). More than one process, or any DeepSpeed strategy (it needs torchrun's environment),
runs under torchrun: `--standalone` on one node; across nodes c10d rendezvous flags, the same
command on every node with its own node rank (`${NODE_RANK}`, `${MASTER_ADDR}`, `${RUN_ID}` in
the printed form; `ftrecipes.distributed.node` fills them in on each node). Each rank's output
goes to `run_dir/logs/torchrun/` (torchrun's `--log-dir`, `--tee`); only local rank 0 is echoed
to the console. Every process re-reads the run dir's `recipe.resolved.yaml`, never the recipe
folder.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ftrecipes.plan.memory import world_size

WORKER = ("-m", "ftrecipes.worker")
PLACEHOLDERS = ("NODE_RANK", "MASTER_ADDR", "RUN_ID")


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    in_process: bool
    world_size: int

    def __str__(self) -> str:
        # "${NODE_RANK}"-style placeholders stay expandable when the line is pasted into a shell
        return " ".join(f'"{a}"' if "${" in a else shlex.quote(a) for a in self.argv)

    def exec_argv(self, values: dict[str, str] | None = None) -> list[str]:
        """The argv to execute here: this interpreter for `python`/`torchrun` (a venv need not be
        on PATH), and the placeholders replaced by `values`."""
        argv = []
        for arg in self.argv:
            for name, value in (values or {}).items():
                arg = arg.replace(f"${{{name}}}", str(value))
            argv.append(arg)
        if argv[0] == "torchrun":
            return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
        if argv[0] == "python":
            return [sys.executable, *argv[1:]]
        return argv


def build(recipe, resolved_path: Path) -> LaunchCommand:
    hw = recipe["hardware"]
    world = world_size(hw)
    per_node = world // hw["nodes"]
    target = [*WORKER, str(resolved_path)]
    if world == 1 and not str(hw["strategy"]).startswith("zero"):
        return LaunchCommand(["python", *target], True, 1)
    logs = Path(resolved_path).parent / "logs" / "torchrun"
    argv = ["torchrun", "--nproc_per_node", str(per_node)]
    if hw["nodes"] == 1:
        argv.append("--standalone")
    else:
        argv += ["--nnodes", str(hw["nodes"]), "--node_rank", "${NODE_RANK}",
                 "--rdzv_backend", "c10d", "--rdzv_id", "${RUN_ID}",
                 "--rdzv_endpoint", f"${{MASTER_ADDR}}:{hw.get('master_port', 29500)}",
                 "--rdzv_conf", f"join_timeout={hw.get('rendezvous_timeout_s', 600)}"]
    argv += ["--log-dir", str(logs), "--tee", "3", "--local-ranks-filter", "0"]
    return LaunchCommand(argv + target, False, world)
