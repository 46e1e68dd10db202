"""`key=value` arguments for the small `python -m` tools (`ftrecipes.serve`, `ftrecipes.review`).

These tools take a handful of arguments, not a recipe, so they do not go through Hydra. The syntax
is Hydra's all the same (`run_dir=runs/x port=8001 adapters={a: runs/a, b: runs/b}`), values are
read as YAML (so `true`, `8001`, `[a.csv, b.csv]` and `{a: x}` mean what they look like), and a
misspelled name fails with did-you-mean instead of being ignored:

    >>> parse(["prot=8001"], {"port": Arg(int, 8000, "listen port")}, "python -m ftrecipes.serve")
    RecipeError: unknown argument 'prot' (fix: did you mean port=?)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftrecipes.config.problems import closest
from ftrecipes.errors import RecipeError

_REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    """One argument: `kind` checks and converts the YAML-read value; `default` is `REQUIRED` to
    make it mandatory; `choices` limits the value; `help` is shown by `--help`."""

    kind: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple = ()


REQUIRED = _REQUIRED


def usage(prog: str, spec: dict[str, Arg], doc: str = "") -> str:
    lines = [doc.strip(), "", f"usage: {prog} " + " ".join(
        f"{k}=..." if a.default is REQUIRED else f"[{k}=...]" for k, a in spec.items()), "", "arguments:"]
    for key, arg in spec.items():
        default = "required" if arg.default is REQUIRED else f"default {arg.default!r}"
        choices = f"; one of {', '.join(map(str, arg.choices))}" if arg.choices else ""
        lines.append(f"  {key:<12} {arg.help} ({default}{choices})")
    return "\n".join(lines).strip()


def _read(text: str):
    import yaml

    try:
        return yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        return text  # a plain string that happens not to be YAML (e.g. a path with ': ')


def _rejoin(argv: list[str]) -> list[str]:
    """Words the shell split inside an unquoted `{...}` or `[...]` value, joined back:
    `adapters={a: runs/a, b: runs/b}` typed without quotes arrives as four words."""
    words: list[str] = []
    for word in argv:
        if words and sum(words[-1].count(o) - words[-1].count(c) for o, c in ("{}", "[]")) > 0:
            words[-1] += " " + word
        else:
            words.append(word)
    return words


def parse(argv: list[str], spec: dict[str, Arg], prog: str) -> dict[str, Any]:
    """`{name: value}` for every name in `spec` (defaults filled in).

    Raises `RecipeError` (exit code of a recipe error, no traceback) for a word without `=`, an
    unknown or repeated name, a value of the wrong kind, or a missing required argument.
    """
    values: dict[str, Any] = {}
    for word in _rejoin(argv):
        key, sep, text = word.partition("=")
        key = key.lstrip("+")
        if not sep:
            raise RecipeError(f"'{word}' is not key=value", hint=f"usage: {prog} " + " ".join(f"{k}=..." for k in spec))
        if key not in spec:
            guess = closest(key, list(spec))
            raise RecipeError(f"unknown argument '{key}'",
                              hint=f"did you mean {guess}=?" if guess else f"known arguments: {', '.join(spec)}")
        if key in values:
            raise RecipeError(f"argument '{key}' is given twice",
                              hint="give each argument once; quote a value with braces or commas, as in "
                                   "'adapters={a: runs/a, b: runs/b}', or the shell splits it")
        arg = spec[key]
        raw = _read(text)
        try:
            value = arg.kind(raw)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{key}={text}: {exc}", hint=arg.help) from None
        if arg.choices and value not in arg.choices:
            guess = closest(str(value), [str(c) for c in arg.choices])
            hint = f"did you mean {key}={guess}?" if guess else f"use one of: {', '.join(map(str, arg.choices))}"
            raise RecipeError(f"{key}={text}: not one of {', '.join(map(str, arg.choices))}", hint=hint)
        values[key] = value
    for key, arg in spec.items():
        if key not in values:
            if arg.default is REQUIRED:
                raise RecipeError(f"the argument {key}= is required", hint=f"{key}=...: {arg.help}")
            values[key] = arg.default
    return values


# Converters for `Arg.kind`: each takes the YAML-read value and raises ValueError with a reason.


def text(value) -> str:
    if value is None or isinstance(value, (dict, list)):
        raise ValueError("expected a single value")
    return str(value)


def optional_text(value) -> str | None:
    return None if value is None else text(value)


def integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")
    return value


def optional_integer(value) -> int | None:
    return None if value is None else integer(value)


def boolean(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def text_list(value) -> list[str]:
    """One value or a YAML list of them: `sheet=a.csv` or `sheet=[a.csv,b.csv]`."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if any(isinstance(i, (dict, list)) or i is None for i in items):
        raise ValueError("expected a value or a list of values")
    return [str(i) for i in items]


def text_mapping(value) -> dict[str, str]:
    """A YAML mapping of names to values: `adapters={tenant_a: runs/a, tenant_b: runs/b}`."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a mapping such as {name_a: path_a, name_b: path_b}")
    if any(isinstance(v, (dict, list)) or v is None for v in value.values()):
        raise ValueError("each name needs one path")
    return {str(k): str(v) for k, v in value.items()}
