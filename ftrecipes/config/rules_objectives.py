"""Cross-field rules about the objective group (see `ftrecipes.config.rules` for the rule shape).

Each rule is a plain function `(recipe, origins) -> list[Problem]`; add it to `OBJECTIVE_RULES`.
Messages name both keys of a refused combination. Which row kinds each objective trains on, and
which kind each `data.format` yields, are the tables of `ftrecipes.train.stage` (the trainers
check the prepared rows against the same tables when the format is `auto`).
"""

from __future__ import annotations

import re

from ftrecipes.config.problems import Problem
from ftrecipes.config.provenance import origin_of
from ftrecipes.train import rewards as reward_registry
from ftrecipes.train.stage import ACCEPTS, FORMAT_KINDS, SUGGESTED_FORMAT

# Formats whose rows carry no reference answer: the evaluate stage has nothing to score them on.
NO_REFERENCE = ("prompt", "text")


def _problem(path: str, message: str, origins: dict[str, str], hint: str | None = None) -> Problem:
    return Problem(path, message, origin_of(path, origins), hint)


def _declared_formats(data: dict) -> list[tuple[str, str]]:
    """`(key path, format)` for every format the data recipe states (not `auto`)."""
    found = [("data.format", data["format"])]
    found += [(f"data.sources.{i}.format", s.get("format", "auto")) for i, s in enumerate(data.get("sources") or [])]
    if data.get("validation_path"):
        found.append(("data.validation_format", data.get("validation_format", "auto")))
    return [(path, fmt) for path, fmt in found if fmt != "auto"]


def data_format_fits_objective(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    """Only a run that trains needs its rows to fit the objective: `stages=[prepare]` prepares any
    format (the data report is useful on its own)."""
    if "train" not in recipe["stages"]:
        return []
    name = recipe["objective"]["name"]
    problems = []
    for path, fmt in _declared_formats(recipe["data"]):
        kind = FORMAT_KINDS[fmt]
        if kind not in ACCEPTS[name]:
            problems.append(_problem(
                path, f"{path}={fmt} gives {kind} rows, but objective.name={name} trains on "
                f"{' or '.join(ACCEPTS[name])} rows", origins,
                f"set {path} to {SUGGESTED_FORMAT[name]} with matching data, or choose an objective for {fmt} rows"))
    return problems


def evaluate_needs_references(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    if "evaluate" not in recipe["stages"]:
        return []
    return [_problem(path, f"the evaluate stage scores answers against references, but {path}={fmt} rows "
                     "have none", origins, "drop evaluate from stages (stages=[prepare,train,export]), or use "
                     "rows with answers")
            for path, fmt in _declared_formats(recipe["data"]) if fmt in NO_REFERENCE]


def _world_size(hardware: dict) -> int:
    from ftrecipes.plan.memory import world_size

    return world_size(hardware)


def grpo_batch_holds_whole_groups(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    objective = recipe["objective"]
    if objective["name"] != "grpo":
        return []
    generations, micro = objective["num_generations"], recipe["train"]["micro_batch_size"]
    world = _world_size(recipe["hardware"])
    if (micro * world) % generations:
        per_step = f"{micro} per device x {world} devices = {micro * world}" if world > 1 else f"{micro}"
        return [_problem("train.micro_batch_size", f"train.micro_batch_size ({per_step} completions per step) "
                         f"is not a multiple of objective.num_generations={generations}", origins,
                         f"set train.micro_batch_size to a multiple of {generations} (it counts completions: "
                         f"{generations} per prompt)")]
    return []


def grpo_completion_fits_model(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    objective = recipe["objective"]
    limit = recipe["model"]["architecture"]["max_position_embeddings"]
    if objective["name"] == "grpo" and objective["max_completion_length"] >= limit:
        return [_problem("objective.max_completion_length", f"{objective['max_completion_length']} leaves no room "
                         f"for the prompt in model.architecture.max_position_embeddings ({limit})", origins,
                         f"set objective.max_completion_length well below {limit}")]
    return []


def grpo_reference_fits_method(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    """GRPO's KL term scores the reference with a frozen copy of the adapter (TRL adds it); an
    AdaLoRA model holds one trainable adapter only, and GRPOTrainer takes no separate reference."""
    objective = recipe["objective"]
    if objective["name"] == "grpo" and objective["beta"] > 0 and recipe["method"]["name"] == "adalora":
        return [_problem("objective.beta", f"objective.beta={objective['beta']:g} needs a frozen copy of the "
                         "adapter as the reference, which method.name=adalora cannot hold (one trainable adapter "
                         "per model)", origins, "set objective.beta=0, or use method=lora or method=full")]
    return []


def _reward_parameters(index: int, entry: dict, origins: dict[str, str]) -> list[Problem]:
    """Each built-in gets exactly the keys it reads; `args` only goes to user functions."""
    name, base = entry["name"], f"objective.rewards.{index}"
    builtin = name in reward_registry.BUILTINS
    own = reward_registry.BUILTIN_KEYS.get(name, ("args",))
    problems = []
    for key in reward_registry.PARAM_KEYS:
        if entry.get(key) is not None and key not in own:
            users = [n for n, keys in reward_registry.BUILTIN_KEYS.items() if key in keys] or ["user functions"]
            problems.append(_problem(f"{base}.{key}", f"{base}.{key} does not apply to reward '{name}'", origins,
                                     f"remove it; it is read by: {', '.join(users)}"))
    for key in reward_registry.REQUIRED_KEYS.get(name, ()) if builtin else ():
        if entry.get(key) is None:
            problems.append(_problem(f"{base}.{key}", f"reward '{name}' needs {base}.{key}", origins,
                                     f"set {base}.{key}"))
    if name == "regex" and entry.get("pattern") is not None:
        try:
            re.compile(entry["pattern"])
        except re.error as exc:
            problems.append(_problem(f"{base}.pattern", f"not a valid regular expression: {exc}", origins,
                                     "fix the pattern (Python re syntax)"))
    if name == "json_schema" and entry.get("json_schema") is not None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(entry["json_schema"])
        except SchemaError as exc:
            problems.append(_problem(f"{base}.json_schema", f"not a valid JSON Schema: {exc.message}", origins,
                                     "fix the schema (draft 2020-12)"))
    return problems


def grpo_rewards_resolve(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    """Reward names must be built-ins, entry points or allowlisted dotted paths (nothing is imported
    here), and reference-based rewards need rows with answers."""
    objective = recipe["objective"]
    if objective["name"] != "grpo":
        return []
    allowlist = recipe.get("reward_modules") or []
    formats = [fmt for _, fmt in _declared_formats(recipe["data"])]
    problems = []
    for index, entry in enumerate(objective["rewards"]):
        path = f"objective.rewards.{index}.name"
        refused = reward_registry.check_name(entry["name"], allowlist)
        if refused:
            problems.append(_problem(path, refused[0], origins, refused[1]))
            continue
        problems += _reward_parameters(index, entry, origins)
        needs_reference = getattr(reward_registry.BUILTINS.get(entry["name"]), "needs_reference", False)
        if needs_reference and "prompt" in formats:
            problems.append(_problem(path, f"reward '{entry['name']}' compares with each row's answer, but "
                                     "data.format=prompt rows have none", origins,
                                     "use rows with answers (data.format=alpaca, chat or sharegpt), or a reward "
                                     "that needs no reference (regex, json_schema, length_penalty)"))
    return problems


OBJECTIVE_RULES: tuple = (data_format_fits_objective, evaluate_needs_references, grpo_batch_holds_whole_groups,
                          grpo_completion_fits_model, grpo_reference_fits_method, grpo_rewards_resolve)
