"""Cross-field rules about the objective group (see `ftrecipes.config.rules` for the rule shape).

Each rule is a plain function `(recipe, origins) -> list[Problem]`; add it to `OBJECTIVE_RULES`.
Messages name both keys of a refused combination.
"""

from __future__ import annotations

OBJECTIVE_RULES: tuple = ()
