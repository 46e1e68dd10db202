"""How the launcher turns per-rank exit reports and torchrun's summary into one exit code and message."""

from __future__ import annotations

import json
import time

from ftrecipes.distributed import failures
from ftrecipes.errors import ExitCode, classify

TORCHRUN_SUMMARY = """
Root Cause (first observed failure):
[0]:
  time      : 2026-11-23_11:24:58
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 27006)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 27006
"""


def report(run_dir, rank, code, error=None, message="", at=None):
    path = run_dir / "logs" / f"exit-rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rank": rank, "local_rank": rank, "host": "elsewhere", "code": code,
                                "error": error, "message": message, "time": at or time.time()}))


def test_the_earliest_specific_failure_wins_over_the_ranks_torn_down_after_it(tmp_path):
    report(tmp_path, 0, 6, "Preempted", "stopped by SIGTERM", at=2.0)
    report(tmp_path, 1, 3, "DataError", "train.jsonl:4: no answer", at=1.0)
    code, message = failures.explain(tmp_path, [0, 1], 1)
    assert code == ExitCode.DATA and "rank 1" in message and "train.jsonl:4" in message


def test_a_rank_that_died_without_a_report_is_named_with_its_signal(tmp_path):
    report(tmp_path, 0, 1, "RuntimeError", "Connection closed by peer")
    code, message = failures.explain(tmp_path, [0, 1], 1, TORCHRUN_SUMMARY)
    assert code == ExitCode.DISTRIBUTED_TIMEOUT
    assert message.startswith("rank 1 died without reporting (signal 9 (SIGKILL)") and "rank 0" in message


def test_timeouts_preemption_and_bugs(tmp_path):
    report(tmp_path, 0, 7, "DistributedTimeout", "timed out")
    report(tmp_path, 1, 6, "Preempted")
    assert failures.explain(tmp_path, [0, 1], 1)[0] == ExitCode.DISTRIBUTED_TIMEOUT
    report(tmp_path, 0, 6, "Preempted")
    assert failures.explain(tmp_path, [0, 1], 1)[0] == ExitCode.PREEMPTED
    report(tmp_path, 0, 1, "KeyError", "'x'")
    assert failures.explain(tmp_path, [0, 1], 1)[0] == ExitCode.INTERNAL


def test_a_gloo_timeout_is_a_distributed_timeout():
    error = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] "
                         "Timed out waiting 20000ms for send operation to complete")
    assert classify(error).exit_code == ExitCode.DISTRIBUTED_TIMEOUT
    # seen on rank 0 when the hung rank's peer closed the connection first
    assert classify(RuntimeError("Application timeout caused pair closure")).exit_code == ExitCode.DISTRIBUTED_TIMEOUT
    assert classify(RuntimeError("a bug")) is None
    assert classify(RuntimeError("the timeout key is missing")) is None  # a timeout word alone is not a collective
