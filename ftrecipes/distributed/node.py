"""This node's share of a multi-process run: torchrun, per-rank logs, one clear failure message.

    python -m ftrecipes.distributed.node RUN_DIR                                  # one node
    NODE_RANK=1 MASTER_ADDR=10.0.0.5 python -m ftrecipes.distributed.node RUN_DIR  # node 1 of 2

The launcher (`python -m ftrecipes.launch`) creates the run dir, then runs node `$NODE_RANK`
(default 0) itself through `run_node`; for `hardware.nodes` > 1 it prints the command every other
node runs on the same (shared) run dir. Environment:

- `NODE_RANK`: 0 .. hardware.nodes - 1 (SLURM: `$SLURM_NODEID`); required on nodes other than 0;
- `MASTER_ADDR`: the address of node 0, where the c10d rendezvous listens on
  `hardware.master_port`; node 0 defaults to its own host name;
- `RUN_ID`: the rendezvous id; defaults to one derived from the run dir's path, so nodes sharing
  the run dir agree without setting it.

A scheduler's preemption signal (SLURM `--signal`: SIGUSR1 from our sbatch script, SIGUSR2 from
submitit) reaches every process of the job step. This process and torchrun ignore it, so only the
workers answer: they checkpoint at the same step and exit 6 (`ftrecipes.reliability.hf`), and this
node reports 6. Left at its default, the signal would kill torchrun and orphan the workers.

When torchrun fails, `ftrecipes.distributed.failures` turns the ranks' exit reports and torchrun's
summary into one message naming the failing rank and returns ftrecipes' exit code for it.
"""

from __future__ import annotations

import collections
import hashlib
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ftrecipes.errors import EnvironmentProblem, ExitCode, report_errors


def node_values(recipe, run_dir: Path, env=None) -> dict[str, str]:
    """NODE_RANK, MASTER_ADDR and RUN_ID for this node (empty for a one-node run)."""
    env = os.environ if env is None else env
    nodes = int(recipe.hardware.nodes)
    if nodes == 1:
        return {}
    node_rank = env.get("NODE_RANK", "0")
    if not node_rank.isdigit() or int(node_rank) >= nodes:
        raise EnvironmentProblem(f"NODE_RANK={node_rank!r} is not a node of hardware.nodes={nodes}",
                                 hint=f"set NODE_RANK to 0..{nodes - 1} on each node (SLURM: $SLURM_NODEID)")
    master = env.get("MASTER_ADDR") or (socket.gethostname() if node_rank == "0" else "")
    if not master:
        raise EnvironmentProblem(f"node {node_rank} needs MASTER_ADDR, the address of node 0",
                                 hint="export MASTER_ADDR=<node 0's host name or IP> on every node")
    run_id = env.get("RUN_ID") or "ftr-" + hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]
    return {"NODE_RANK": node_rank, "MASTER_ADDR": master, "RUN_ID": run_id}


def node_commands(recipe, run_dir: Path, master_addr: str = "${MASTER_ADDR}") -> list[str]:
    """What each node runs, node 0 first (the launcher runs node 0's itself)."""
    return [f"NODE_RANK={k} MASTER_ADDR={master_addr} python -m ftrecipes.distributed.node {Path(run_dir).absolute()}"
            for k in range(int(recipe.hardware.nodes))]


def print_other_nodes(recipe, run_dir: Path) -> None:
    """For `hardware.nodes` > 1: the command each other node must run now, on the shared run dir."""
    if int(recipe.hardware.nodes) == 1 or os.environ.get("NODE_RANK", "0") != "0":
        return
    master = node_values(recipe, run_dir)["MASTER_ADDR"]
    lines = "\n".join(f"  {line}" for line in node_commands(recipe, run_dir, master)[1:])
    print(f"this is node 0 of {recipe.hardware.nodes}; start the others with (same run dir, shared):\n{lines}",
          flush=True)


def run_node(recipe, run_dir: Path, command=None, env=None) -> int:
    """Runs torchrun for this node and waits; returns 0 or ftrecipes' exit code for the failure."""
    from ftrecipes.distributed import failures
    from ftrecipes.distributed.command import build
    from ftrecipes.distributed.trainer_args import ZERO, require_deepspeed
    from ftrecipes.rundir import RESOLVED

    run_dir = Path(run_dir)
    if recipe.hardware.strategy in ZERO:
        require_deepspeed(recipe.hardware.strategy)  # here, before any worker starts
    command = command or build(recipe, run_dir / RESOLVED)
    values = node_values(recipe, run_dir, env)
    per_node = command.world_size // int(recipe.hardware.nodes)
    first = int(values.get("NODE_RANK", 0)) * per_node
    ranks = list(range(first, first + per_node))
    for rank in ranks:  # reports of an earlier attempt in this run dir would be misread
        (run_dir / "logs" / f"exit-rank{rank}.json").unlink(missing_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=400)
    with ignoring(signal.SIGUSR1, signal.SIGUSR2):  # inherited by torchrun; workers install their own
        proc = subprocess.Popen(command.exec_argv(values), stderr=subprocess.PIPE, text=True, errors="replace",
                                env={**os.environ, **(env or {})})
        for line in proc.stderr:  # passed through as it comes; the tail keeps torchrun's summary
            sys.stderr.write(line)
            tail.append(line)
        code = proc.wait()
    if code == 0:
        return ExitCode.OK
    code, message = failures.explain(run_dir, ranks, code, "".join(tail))
    print(f"ftrecipes: the run failed: {message}", file=sys.stderr, flush=True)
    return code


@contextlib.contextmanager
def ignoring(*signals):
    """These signals ignored in this process (and in the children it starts) while inside."""
    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__)
        return ExitCode.OK if args and args[0] in ("-h", "--help") else ExitCode.RECIPE
    return report_errors(_run, Path(args[0]))


def _run(run_dir: Path) -> int:
    from ftrecipes.config.resolve import load_resolved
    from ftrecipes.rundir import RESOLVED

    if not (run_dir / RESOLVED).is_file():
        raise EnvironmentProblem(f"{run_dir} has no {RESOLVED}",
                                 hint="give the run dir the launcher created (on a filesystem every node shares)")
    return run_node(load_resolved(run_dir / RESOLVED), run_dir)


if __name__ == "__main__":
    sys.exit(main())
