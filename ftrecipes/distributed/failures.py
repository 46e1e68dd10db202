"""One clear message and the right exit code when ranks of a torchrun job fail.

torchrun exits 1 whatever went wrong, which would lose ftrecipes' exit codes (docs/exit-codes.md).
Each worker leaves `logs/exit-rank<N>.json` (`ftrecipes.distributed.runtime`); `explain` reads
them, plus torchrun's own "Root Cause" block, and picks, in order:

1. the earliest rank that failed with a specific class (2 recipe, 3 data, 4 diverged, 5 out of
   resources, 8 environment): a re-run would fail the same way;
2. a rank that died without a report (killed by a signal: SIGKILL, the out-of-memory killer, a
   lost node): exit 7, like a collective that timed out, since the job can be requeued;
3. a distributed timeout on any rank (7), then preemption on every reporting rank (6);
4. otherwise 1 (a bug in ftrecipes; the tracebacks are in the per-rank logs).

The message names the failing rank, its host, what happened and where its log is.
"""

from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path

from ftrecipes.errors import ExitCode

SPECIFIC = (ExitCode.RECIPE, ExitCode.DATA, ExitCode.DIVERGED, ExitCode.OUT_OF_RESOURCES, ExitCode.ENVIRONMENT)
_ROOT = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)


def read_reports(run_dir: Path) -> dict[int, dict]:
    reports = {}
    for path in sorted((Path(run_dir) / "logs").glob("exit-rank*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            reports[int(report["rank"])] = report
        except (OSError, ValueError, KeyError):
            continue
    return reports


def clear_reports(run_dir: Path) -> None:
    for path in (Path(run_dir) / "logs").glob("exit-rank*.json"):
        path.unlink(missing_ok=True)


def torchrun_root_cause(text: str) -> tuple[int, int] | None:
    """`(rank, exitcode)` of torchrun's first observed failure, from its summary block."""
    match = _ROOT.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _signal_name(exitcode: int) -> str:
    try:
        return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
    except ValueError:
        return f"signal {-exitcode}"


def rank_logs(run_dir: Path, local_rank: int) -> list[Path]:
    """torchrun's per-rank log files for a local rank, newest attempt first."""
    found = (Path(run_dir) / "logs" / "torchrun").glob(f"*/attempt_*/{local_rank}/std*.log")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def explain(run_dir: Path, ranks: list[int], torchrun_code: int, torchrun_text: str = "") -> tuple[int, str]:
    """`(exit code, message)` for a failed torchrun on this node, whose global ranks are `ranks`."""
    reports = read_reports(run_dir)
    root = torchrun_root_cause(torchrun_text)
    failed = sorted((r for r in reports.values() if r["code"] != 0), key=lambda r: r["time"])
    specific = [r for r in failed if r["code"] in SPECIFIC]
    missing = [rank for rank in ranks if rank not in reports]
    if specific:
        first = specific[0]
        return first["code"], _line(first, run_dir)
    if missing:
        dead = root[0] if root and root[0] in missing else missing[0]
        how = _signal_name(root[1]) if root and root[0] == dead and root[1] < 0 else "a signal or a crash"
        others = "; ".join(_line(r, run_dir) for r in failed[:3])
        text = (f"rank {dead} died without reporting ({how}: the out-of-memory killer, a scheduler, a lost node "
                f"or kill)" + _log_hint(run_dir, dead - min(ranks)) + (f"; then {others}" if others else ""))
        return ExitCode.DISTRIBUTED_TIMEOUT, text
    for code in (ExitCode.DISTRIBUTED_TIMEOUT, ExitCode.PREEMPTED):
        hits = [r for r in failed if r["code"] == code]
        if hits and (code != ExitCode.PREEMPTED or len(hits) == len(failed)):
            return code, _line(hits[0], run_dir)
    if failed:
        return ExitCode.INTERNAL, _line(failed[0], run_dir)
    return (torchrun_code or ExitCode.INTERNAL), f"torchrun exited with code {torchrun_code}; see its report above"


def _line(report: dict, run_dir: Path) -> str:
    what = f"{report['error']}: {report['message']}" if report.get("error") else "no error recorded"
    here = report.get("host") == socket.gethostname()  # torchrun's log dirs name local ranks only
    return (f"rank {report['rank']} on {report['host']} exited with code {report['code']} ({what})"
            + (_log_hint(run_dir, report.get("local_rank", report["rank"])) if here else ""))


def _log_hint(run_dir: Path, local_rank: int) -> str:
    logs = rank_logs(run_dir, local_rank)
    return f"; its log: {logs[0].parent}/" if logs else ""
