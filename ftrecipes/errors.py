"""Errors that users read, and the exit code of each failure class.

A user error (a bad recipe, a bad data row, a missing package) ends the run with one clear message
and its class's exit code, never with a traceback. Anything else is our bug and keeps its
traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # an unexpected exception: a bug in ftrecipes, shown with its traceback
    RECIPE = 2  # the recipe does not compose or does not validate
    DATA = 3  # a data file or row is unusable
    ENVIRONMENT = 4  # a missing package, an unreachable hub, a missing model or file
    TRAINING = 5  # training failed (non-finite loss, out of memory)
    INTERRUPTED = 130


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
    exit_code = ExitCode.ENVIRONMENT


class TrainingError(FtrecipesError):
    exit_code = ExitCode.TRAINING


def require(module: str, *, extra: str | None = None, purpose: str = "") -> None:
    """Fails with an 'install X' message when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        what = f"ftrecipes[{extra}]" if extra else module
        raise EnvironmentProblem(
            f"{purpose or module} needs the package '{module}', which is not installed",
            hint=f"pip install '{what}'",
        )


def report_errors(run, *args) -> int:
    """Runs `run(*args)` and turns a user error into its message and exit code (no traceback).

    Anything else is a bug in ftrecipes and propagates with its traceback (exit code 1).
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
    return ExitCode.OK if code is None else code
