"""Cross-field rules: combinations of recipe values that the JSON Schemas cannot express.

They run after the schemas pass, so each rule may assume types and required keys are right.
Each rule is a plain function `(recipe, origins) -> list[Problem]`; add one to `RULES`.
"""

from __future__ import annotations

from ftrecipes.config.problems import Problem
from ftrecipes.config.provenance import origin_of
from ftrecipes.config.rules_hardware import HARDWARE_RULES
from ftrecipes.config.rules_methods import METHOD_RULES
from ftrecipes.config.rules_objectives import OBJECTIVE_RULES
from ftrecipes.config.rules_speed import SPEED_RULES

LORA_FAMILY = ("lora", "qlora")
PIPELINE = ("prepare", "train", "evaluate", "export")


def _problem(path: str, message: str, origins: dict[str, str], hint: str | None = None) -> Problem:
    return Problem(path, message, origin_of(path, origins), hint)


def split_fractions(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    split = recipe["data"]["split"]
    held_out = split["validation"] + split.get("test", 0.0)
    if held_out >= 1:
        return [_problem("data.split", f"validation + test = {held_out:g} leaves no training rows",
                         origins, "keep data.split.validation + data.split.test below 1 (e.g. 0.1 + 0.1)")]
    return []


def stage_order(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    stages = recipe["stages"]
    ordered = [s for s in PIPELINE if s in stages]
    if stages != ordered:
        return [_problem("stages", f"{stages} is out of pipeline order", origins,
                         f"write them in the order they run: {ordered}")]
    return []


def held_out_for_evaluation(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    split = recipe["data"]["split"]
    if recipe["evaluate"].get("split") == "test" and split.get("test", 0.0) == 0 and "evaluate" in recipe["stages"]:
        return [_problem("evaluate.split", "evaluation asks for the test split, but data.split.test is 0",
                         origins, "set data.split.test (e.g. 0.1) or evaluate.split=validation")]
    return []


def model_source(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    model = recipe["model"]
    if model["source"] == "build" and "build" not in model:
        return [_problem("model.build", "source=build needs a build block", origins,
                         "add model.build (see recipes/model/tiny.yaml)")]
    if model["source"] in ("hub", "local") and not model.get("path"):
        return [_problem("model.path", f"source={model['source']} needs a path", origins,
                         "set model.path to a hub id (Qwen/Qwen3-32B) or a local folder")]
    return []


def sequence_fits_model(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    limit = recipe["model"]["architecture"]["max_position_embeddings"]
    if recipe["data"]["max_seq_len"] > limit:
        return [_problem("data.max_seq_len", f"{recipe['data']['max_seq_len']} exceeds the model's "
                         f"max_position_embeddings ({limit})", origins,
                         f"set data.max_seq_len <= {limit}")]
    return []


def hardware_shape(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    hw = recipe["hardware"]
    problems = []
    if hw["accelerator"] == "cuda" and hw["gpus_per_node"] < 1:
        problems.append(_problem("hardware.gpus_per_node", "accelerator=cuda needs at least one GPU per node",
                                 origins, "set hardware.gpus_per_node >= 1"))
    if hw["accelerator"] == "cpu" and hw["gpus_per_node"] != 0:
        problems.append(_problem("hardware.gpus_per_node", "accelerator=cpu cannot use GPUs", origins,
                                 "set hardware.gpus_per_node=0, or hardware.accelerator=cuda"))
    if hw["accelerator"] == "cpu" and hw["mixed_precision"] == "fp16":
        problems.append(_problem("hardware.mixed_precision", "fp16 mixed precision needs a GPU", origins,
                                 "use bf16 or no on CPU"))
    if hw["accelerator"] == "cuda" and not hw.get("gpu_memory_gb"):
        problems.append(_problem("hardware.gpu_memory_gb", "a GPU preset must state its memory", origins,
                                 "set hardware.gpu_memory_gb (e.g. 80)"))
    return problems


# Keys that make ftrecipes run code from elsewhere: only the person at the command line may set them.
COMMAND_LINE_ONLY = {
    "trust_remote_code": ("a recipe file may not turn on remote code",
                          "pass trust_remote_code=true on the command line if you trust the model's code"),
    "reward_modules": ("a recipe file may not allowlist reward modules (their code would run)",
                       "pass reward_modules=[mypkg.rewards] on the command line if you trust that module"),
}


def remote_code_from_command_line(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    problems = []
    for key, (message, hint) in COMMAND_LINE_ONLY.items():
        origin = origins.get(key, "")
        # a worker re-validates the run dir's recipe.resolved.yaml (origin: its path, no line), which
        # only the launcher writes, after this rule passed on the command line it was given
        recorded = origin.endswith("recipe.resolved.yaml")
        if recipe.get(key) and not (origin.startswith("command line") or recorded):
            problems.append(Problem(key, message, origin, hint))
    return problems


def validation_source(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    data = recipe["data"]
    fraction, source = data["split"]["validation"], data.get("validation_path")
    if source and fraction > 0:
        return [_problem("data.split.validation", f"data.validation_path gives the validation rows, so a "
                         f"validation fraction of {fraction:g} would be ignored", origins,
                         "set data.split.validation=0 with data.validation_path")]
    if not source and fraction == 0:
        return [_problem("data.split.validation", "no validation rows: the fraction is 0 and there is no "
                         "data.validation_path", origins, "set data.split.validation (e.g. 0.1) or data.validation_path")]
    return []


RULES = (split_fractions, stage_order, held_out_for_evaluation, model_source, sequence_fits_model,
         hardware_shape, remote_code_from_command_line, validation_source,
         *METHOD_RULES, *OBJECTIVE_RULES, *HARDWARE_RULES, *SPEED_RULES)


def check(recipe: dict, origins: dict[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    for rule in RULES:
        problems.extend(rule(recipe, origins))
    return problems
