"""Cross-field rules about the method group (see `ftrecipes.config.rules` for the rule shape).

Each rule is a plain function `(recipe, origins) -> list[Problem]`; add it to `METHOD_RULES`.
Messages name both keys of a refused combination.
"""

from __future__ import annotations

METHOD_RULES: tuple = ()
