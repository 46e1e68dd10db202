"""Cross-field rules about the method group (see `ftrecipes.config.rules` for the rule shape).

Each rule is a plain function `(recipe, origins) -> list[Problem]`; add it to `METHOD_RULES`.
Messages name both keys of a refused combination. Rules that need the data (AdaLoRA's schedule
when `train.max_steps` is not set) are checked again by the method when the train stage knows
the step count.

Where QLoRA runs is not refused here: bitsandbytes 0.50 runs its 4-bit layers on CUDA GPUs and
on CPUs, so both `hardware.accelerator` values can work; `ftrecipes.methods.quantized` checks the
actual device when the base loads and names the hardware when bitsandbytes cannot run there.
"""

from __future__ import annotations

from ftrecipes.config.problems import Problem
from ftrecipes.config.provenance import origin_of


def _problem(path: str, message: str, origins: dict[str, str], hint: str) -> Problem:
    return Problem(path, message, origin_of(path, origins), hint)


def adalora_schedule(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    """AdaLoRA needs a budgeting phase between tinit and the last tfinal steps, and init_r >= target_r."""
    method = recipe["method"]
    if method["name"] != "adalora":
        return []
    problems = []
    if method["target_r"] > method["init_r"]:
        problems.append(_problem("method.target_r", f"method.target_r ({method['target_r']}) is above "
                                 f"method.init_r ({method['init_r']}): AdaLoRA only takes rank away", origins,
                                 "set method.init_r above method.target_r (1.5x is common)"))
    tinit, tfinal = method["tinit"], method["tfinal"]
    if tinit < 1 and tfinal < 1 and tinit + tfinal >= 1:
        problems.append(_problem("method.tfinal", f"method.tinit ({tinit:g}) + method.tfinal ({tfinal:g}) cover "
                                 "the whole run: no steps are left to shrink the rank budget", origins,
                                 "keep method.tinit + method.tfinal below 1 (e.g. 0.1 and 0.2)"))
    steps = recipe["train"].get("max_steps")
    if steps:
        used = sum(int(v * steps) if v < 1 else int(v) for v in (tinit, tfinal))
        if used >= steps and not (tinit < 1 and tfinal < 1 and tinit + tfinal >= 1):
            problems.append(_problem("method.tinit", f"method.tinit + method.tfinal ({used} steps) leave no "
                                     f"budgeting phase in train.max_steps={steps}", origins,
                                     "lower method.tinit and method.tfinal (fractions such as 0.1 and 0.2 "
                                     "follow the schedule), or raise train.max_steps"))
    return problems


def prefix_needs_no_checkpointing(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    """Prefix tuning keeps its prefixes in the attention cache (past_key_values), and transformers
    drops the cache inside checkpointed layers, so the attention mask (extended by the prefix) no
    longer matches the keys: a sequence-length mismatch at the first step."""
    if recipe["method"]["name"] == "p_tuning_v2" and recipe["train"].get("gradient_checkpointing"):
        return [_problem("train.gradient_checkpointing", "method.name=p_tuning_v2 cannot train with "
                         "train.gradient_checkpointing=true: the prefixes live in the attention cache, which "
                         "checkpointed layers drop", origins,
                         "set train.gradient_checkpointing=false (prefix tuning trains few parameters, so "
                         "memory is rarely short), or use method=prompt_tuning or method=lora")]
    return []


PROMPT_LEARNING = ("prompt_tuning", "p_tuning", "p_tuning_v2")


def prompt_learning_without_packing(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    """Packed rows hold several examples told apart only by position_ids, which peft ignores for
    prompt-learning methods ("Position ids are not supported"), and the virtual tokens would come
    before the first example of each row only."""
    name = recipe["method"]["name"]
    if name in PROMPT_LEARNING and recipe["objective"].get("packing"):
        return [_problem("objective.packing", f"method.name={name} cannot train with objective.packing=true: "
                         "peft ignores the position_ids that keep packed examples apart, and the virtual "
                         "tokens would precede only the first example of each packed row", origins,
                         "set objective.packing=false, or use method=lora")]
    return []


def prompt_init_text(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    method = recipe["method"]
    if method["name"] != "prompt_tuning":
        return []
    if method["init"] == "text" and not method.get("init_text"):
        return [_problem("method.init_text", "method.init=text needs method.init_text", origins,
                         "set method.init_text to a task description, or method.init=random")]
    if method["init"] == "random" and method.get("init_text"):
        return [_problem("method.init_text", "method.init_text is set but method.init=random would ignore it",
                         origins, "set method.init=text to start from that text, or remove method.init_text")]
    return []


def ia3_feedforward_within_targets(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    method = recipe["method"]
    if method["name"] != "ia3":
        return []
    outside = [m for m in method["feedforward_modules"] if m not in method["target_modules"]]
    if outside:
        return [_problem("method.feedforward_modules", f"method.feedforward_modules {outside} are not in "
                         f"method.target_modules {list(method['target_modules'])}", origins,
                         "list every feed-forward module in method.target_modules too")]
    return []


METHOD_RULES: tuple = (adalora_schedule, prefix_needs_no_checkpointing, prompt_learning_without_packing,
                       prompt_init_text, ia3_feedforward_within_targets)
