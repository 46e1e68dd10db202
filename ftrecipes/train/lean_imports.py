"""Keeps installed packages that a recipe does not use out of the process that runs it.

transformers, accelerate, PEFT and TRL import every optional package they find installed, even
when the run never touches it: accelerate imports DeepSpeed (which imports MLflow) to unwrap a
model, PEFT imports bitsandbytes (which imports torch's inductor), TRL imports W&B, and requests
prefers chardet (1.3 s to import) over charset_normalizer. On a 2-core machine that is about a
third of the time from the command to the first optimizer step (docs/performance.md).

`hide_unused_packages(recipe)` marks each such package as absent (`sys.modules[name] = None`, the
standard way: `import` raises ImportError and `importlib.util.find_spec` answers None, so the
libraries' own availability checks skip it) unless the recipe needs it:

- `deepspeed`: `hardware.strategy` is a zero* strategy;
- `bitsandbytes`: a method with a quantized base (`method.name=qlora`), an 8-bit or paged
  `train.optimizer`, or a local base whose config.json holds a `quantization_config`;
- `wandb` / `mlflow`: `logging.wandb.enabled` / `logging.mlflow.enabled`;
- `scipy` (transformers imports it for object-detection losses) and `chardet`: kept when the
  evaluate stage runs lm-eval (`evaluate.lm_eval.tasks`: scikit-learn needs scipy, and lm-eval's
  table writer imports chardet); chardet also when charset_normalizer is missing.

`train.lean_imports=false` turns it off. It acts only in a process that belongs to one run
(`OWNS_PROCESS`: set by the `ftrecipes.launch` command with one job, and by each rank's worker),
never in a caller's process such as `ftrecipes.launch.main([...])` from Python or a sweep's
shared process, and only after the recipe is validated.
`hidden_package(error)` tells `ftrecipes.errors.classify` that an ImportError came from here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HIDDEN: set[str] = set()  # what this process hid, for hidden_package()
OWNS_PROCESS = False  # set by the command entry points; a library caller's process is never touched


def _quantized_on_disk(model) -> bool:
    """Whether the base's config.json (a local folder, or the hub cache; never downloaded) says
    its weights are already quantized."""
    if model.source == "local":
        config = Path(str(model.path or "")).expanduser() / "config.json"
    elif model.source == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model.path, "config.json", revision=model.get("revision"))
        config = Path(cached) if isinstance(cached, str) else None
    else:
        return False
    try:
        return config is not None and "quantization_config" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def needed(recipe) -> dict[str, bool]:
    """`{package: whether the recipe uses it}` for each package this module may hide."""
    from ftrecipes.config.rules_speed import BITSANDBYTES_OPTIMIZERS
    from ftrecipes.distributed.engine import ZERO
    from ftrecipes.methods import get

    logging, stages = recipe.logging, list(recipe.stages)
    harness = "evaluate" in stages and bool(recipe.evaluate.lm_eval.tasks)
    return {
        "deepspeed": recipe.hardware.strategy in ZERO,
        "bitsandbytes": (get(recipe.method.name).quantized_base or recipe.train.optimizer in BITSANDBYTES_OPTIMIZERS
                         or _quantized_on_disk(recipe.model)),
        "wandb": bool(logging.wandb.enabled),
        "mlflow": bool(logging.mlflow.enabled),
        "scipy": harness,
        "chardet": harness or importlib.util.find_spec("charset_normalizer") is None,
    }


def acts_on(recipe) -> bool:
    """Whether the start-up tuning may change this process: it is a run's own (`OWNS_PROCESS`)
    and `train.lean_imports` is on. The other start-up modules (`distribution_cache`,
    `import_structure_cache`, `gc_pause`) follow the same rule."""
    return OWNS_PROCESS and recipe.train.get("lean_imports", True)


def hide_unused_packages(recipe) -> list[str]:
    """Hides the packages `recipe` does not use (see the module docstring); returns their names.

    A package already imported stays, and so does everything when `train.lean_imports` is off
    or the process is not the run's own (`OWNS_PROCESS`).
    """
    if not acts_on(recipe):
        return []
    hidden = []
    for name, used in needed(recipe).items():
        if used or name in sys.modules:
            continue
        sys.modules[name] = None
        HIDDEN.add(name)
        hidden.append(name)
    return hidden


def hidden_package(error: BaseException) -> str | None:
    """The package this module hid, when `error` is the ImportError that hiding it caused."""
    if not isinstance(error, ImportError):
        return None
    top = (error.name or "").split(".")[0]
    return top if top in HIDDEN and sys.modules.get(top, 0) is None else None
