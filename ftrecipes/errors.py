"""Errors that users read, and the exit code of each failure class.

A user error (a bad recipe, a bad data row, a missing package) ends the run with one clear message
and its class's exit code, never with a traceback. Anything else is our bug and keeps its
traceback. The codes are a contract with batch schedulers; docs/exit-codes.md says which ones to
requeue (6 always, 7 a bounded number of times).

| code | class | meaning |
|---|---|---|
| 0 | | ok |
| 1 | (any other exception) | a bug in ftrecipes: the only case that prints a traceback |
| 2 | RecipeError, RecipeProblems | the recipe does not compose or validate, or resume would change it |
| 3 | DataError | a data file or row is unusable |
| 4 | Diverged (a TrainingError) | non-finite loss or gradient norm |
| 5 | OutOfResources | out of memory, the plan does not fit, the disk is full |
| 6 | Preempted | stopped by a signal after a checkpoint committed: requeue to resume |
| 7 | DistributedTimeout | a collective or rendezvous timed out |
| 8 | EnvironmentProblem | a missing package, model, file or hardware; a damaged checkpoint |
| 130 | | interrupted with Ctrl-C |
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # an unexpected exception: a bug in ftrecipes, shown with its traceback
    RECIPE = 2  # the recipe does not compose or does not validate
    DATA = 3  # a data file or row is unusable
    DIVERGED = 4  # non-finite loss or gradients
    OUT_OF_RESOURCES = 5  # out of memory, the plan does not fit, no disk space left
    PREEMPTED = 6  # stopped by SIGTERM/SIGUSR1/SIGUSR2 after committing a checkpoint: requeue
    DISTRIBUTED_TIMEOUT = 7  # a collective or the rendezvous timed out
    ENVIRONMENT = 8  # a missing package, an unreachable hub, a missing model or file
    INTERRUPTED = 130
    TRAINING = DIVERGED  # the old name of code 4; trainers raise TrainingError for divergence


class FtrecipesError(Exception):
    """Base of the errors that end a run with a message for people (no traceback)."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"ftrecipes: {self.message}"
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class RecipeError(FtrecipesError):
    exit_code = ExitCode.RECIPE


class DataError(FtrecipesError):
    """A data problem. `where` is `file:line` when a row is at fault."""

    exit_code = ExitCode.DATA

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.where = where


class EnvironmentProblem(FtrecipesError):
    """A missing package, model, file or device, or a checkpoint whose files do not verify."""

    exit_code = ExitCode.ENVIRONMENT


class TrainingError(FtrecipesError):
    """Training failed in a way a retry of the same recipe would repeat (exit 4)."""

    exit_code = ExitCode.DIVERGED


class Diverged(TrainingError):
    """The loss or the gradient norm stopped being finite (exit 4)."""


class OutOfResources(FtrecipesError):
    """Out of device or host memory, a plan that does not fit, or a full disk (exit 5)."""

    exit_code = ExitCode.OUT_OF_RESOURCES


class Preempted(FtrecipesError):
    """Stopped by the scheduler's signal after a checkpoint committed (exit 6: requeue to resume)."""

    exit_code = ExitCode.PREEMPTED


class DistributedTimeout(FtrecipesError):
    """A collective operation or the rendezvous timed out (exit 7)."""

    exit_code = ExitCode.DISTRIBUTED_TIMEOUT


def require(module: str, *, extra: str | None = None, purpose: str = "") -> None:
    """Fails with an 'install X' message when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        what = f"ftrecipes[{extra}]" if extra else module
        raise EnvironmentProblem(
            f"{purpose or module} needs the package '{module}', which is not installed",
            hint=f"pip install '{what}'",
        )


def classify(error: BaseException) -> FtrecipesError | None:
    """Restates a foreign exception that is a resource or cluster failure, not our bug.

    Matched by class name and message, so torch is never imported here: CUDA out of memory and
    MemoryError -> OutOfResources; OSError ENOSPC/EDQUOT -> OutOfResources; a NCCL/Gloo watchdog or
    rendezvous timeout -> DistributedTimeout; an import of a package that `train.lean_imports` kept
    out -> EnvironmentProblem. Anything else returns None (a bug: traceback).
    """
    import errno

    from ftrecipes.train.lean_imports import hidden_package

    name, text = type(error).__name__, str(error)
    hidden = hidden_package(error)
    if hidden:
        return EnvironmentProblem(f"'{hidden}' was kept out of this run because the recipe does not use it, "
                                  f"but something imported it ({text})",
                                  hint="set train.lean_imports=false to import every installed package")
    if name == "OutOfMemoryError" or isinstance(error, MemoryError) or "CUDA out of memory" in text:
        return OutOfResources(f"out of memory: {text.splitlines()[0] if text else name}",
                              hint="lower train.micro_batch_size or data.max_seq_len, or turn on "
                                   "train.gradient_checkpointing; `dry_run=true` prints the memory plan")
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {error.filename}" if error.filename else ""
        return OutOfResources(f"the disk is full{where} ({error.strerror or text})",
                              hint="free space, or point run_dir at a larger disk, and run again: it resumes from "
                                   "the last committed checkpoint")
    lowered = text.lower()
    timed_out = "timed out" in lowered or "timeout" in lowered
    # gloo reports a peer that never answered as a RuntimeError from its source path (".../gloo/..."),
    # or, when the other side's timeout closed the connection first, as "Application timeout caused
    # pair closure" (a gloo TCP pair) with no path
    collective = (name in ("DistBackendError", "DistError") or "nccl" in lowered or "gloo" in lowered
                  or "pair closure" in lowered)
    if name in ("DistStoreError", "RendezvousTimeoutError") or (collective and timed_out):
        return DistributedTimeout(f"a distributed operation timed out: {text.splitlines()[0] if text else name}",
                                  hint="check that every node is up and reachable; requeue the job to resume")
    return None


def report_errors(run, *args) -> int:
    """Runs `run(*args)` and turns a user error into its message and exit code (no traceback).

    Resource and cluster failures from torch or the OS are restated by `classify`. Anything else
    is a bug in ftrecipes and propagates with its traceback (exit code 1).
    """
    import sys

    try:
        code = run(*args)
    except FtrecipesError as error:
        print(error.render(), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ftrecipes: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as error:  # noqa: BLE001 - restated only when classify() knows it
        known = classify(error)
        if known is None:
            raise
        print(known.render(), file=sys.stderr)
        return known.exit_code
    return ExitCode.OK if code is None else code
