"""Recipe problems as people read them: key path, where it came from, what is wrong, how to fix it.

Every recipe error, whether from Hydra's composition, the JSON Schemas or a cross-field rule,
becomes a `Problem`. They are all collected and then reported together by `RecipeProblems`,
which exits with code 2 and no traceback.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ftrecipes.errors import RecipeError


@dataclass(frozen=True)
class Problem:
    path: str  # dotted key path, or the override text for a composition error
    message: str
    origin: str | None = None  # "recipes/method/lora.yaml:5" or "command line 'method.r=x'"
    hint: str | None = None  # "did you mean ...", the allowed values, or how to fix it

    def render(self) -> str:
        lines = [f"  {self.path}: {self.message}" if self.path else f"  {self.message}"]
        if self.origin:
            lines.append(f"      from: {self.origin}")
        if self.hint:
            lines.append(f"      fix:  {self.hint}")
        return "\n".join(lines)


class RecipeProblems(RecipeError):
    """One or more problems with a recipe, reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.path, p.message))
        count = len(self.problems)
        super().__init__(f"the recipe has {count} error{'s' if count != 1 else ''}")

    def render(self) -> str:
        body = "\n".join(p.render() for p in self.problems)
        return f"ftrecipes: {self.message}:\n{body}\nFix the recipe or the override and run again."


def closest(word: str, candidates: list[str], cutoff: float = 0.6) -> str | None:
    """The candidate that reads most like `word`, for did-you-mean."""
    by_lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None


def format_choices(values: list) -> str:
    return ", ".join(str(v) if v is not None else "null" for v in values)
