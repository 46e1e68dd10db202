"""Tracker backends: W&B, TensorBoard and MLflow sinks for the metrics rows.

`open_trackers(recipe, run_dir)` opens one sink per enabled backend; each has `log(row)` and
`finish()`. The run's `metrics.jsonl` is written whatever is enabled.

Recipe keys (`logging`): `wandb.enabled`, `wandb.mode` (`online` or `offline`; the `WANDB_MODE`
environment variable wins, and every test sets it to offline), `tensorboard.enabled` (event files
in `run_dir/tensorboard/`), `mlflow.enabled`, `mlflow.tracking_uri` (default: a file store in
`run_dir/mlruns/`), and for all of them `project`, `entity`, `run_name` (default: the run dir's
name) and `tags`. Pick backends with the `logging` group: `logging=[wandb,tensorboard]`.

The run config sent to a backend is `logged_config(recipe)`: allowlisted keys only, secrets
removed, `${oc.env:...}` never resolved. Raises `EnvironmentProblem` naming the extra to install
when a backend's package is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftrecipes.errors import EnvironmentProblem

# Dotted prefixes of the recipe keys that may leave the machine in a tracker's run config.
LOGGED_KEYS = (
    "seed", "stages", "model.name", "model.source", "model.path", "model.revision", "model.dtype",
    "model.attn_implementation", "model.architecture", "method", "objective", "data.name", "data.format",
    "data.max_seq_len", "data.split", "data.packing", "data.dedup", "data.filters", "data.template",
    "data.pii.enabled", "data.pii.mode", "train", "hardware", "evaluate", "export", "logging.project",
    "logging.run_name", "logging.tags", "logging.log_interval",
)
_SECRET_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential", "private_key")


def logged_config(recipe, run_dir: Path | None = None) -> dict:
    """The allowlisted part of the recipe, with interpolations left as written and secret-looking
    keys dropped. Workers hold the recipe with `${oc.env:...}` already resolved, so the values come
    from the run dir's `recipe.resolved.yaml`, which keeps them as written."""
    from omegaconf import OmegaConf

    written = Path(run_dir) / "recipe.resolved.yaml" if run_dir is not None else None
    source = OmegaConf.load(written) if written is not None and written.is_file() else recipe
    plain = OmegaConf.to_container(source, resolve=False)
    out: dict = {}
    for dotted in LOGGED_KEYS:
        node, parts = plain, dotted.split(".")
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = _scrub(node)
    return out


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if not any(w in str(k).lower() for w in _SECRET_WORDS)}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _require(module: str, backend: str):
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise EnvironmentProblem(f"logging to {backend} needs the '{module}' package, which is not installed",
                                 hint="pip install 'ftrecipes[track]', or drop it from logging=[...]")
    return importlib.import_module(module)


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class WandbSink:
    def __init__(self, recipe, run_dir: Path, name: str):
        wandb = _require("wandb", "W&B")
        cfg = recipe.logging
        mode = os.environ.get("WANDB_MODE") or cfg.wandb.mode
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=name, tags=list(cfg.tags),
                              config=logged_config(recipe, run_dir), dir=str(run_dir), mode=mode, reinit="finish_previous",
                              settings=wandb.Settings(save_code=False, disable_git=True, x_disable_stats=True))

    def log(self, row: dict) -> None:
        self.run.log(_numbers(row), step=int(row["step"]))

    def finish(self) -> None:
        self.run.finish()


class TensorBoardSink:
    def __init__(self, recipe, run_dir: Path, name: str):
        _require("tensorboard", "TensorBoard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, row: dict) -> None:
        prefix = "eval" if any(k.startswith("eval_") for k in row) else "train"
        for key, value in _numbers(row).items():
            tag = key.replace("eval_", "eval/", 1) if key.startswith("eval_") else f"{prefix}/{key}"
            self.writer.add_scalar(tag, value, int(row["step"]))
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


class MlflowSink:
    def __init__(self, recipe, run_dir: Path, name: str):
        mlflow = _require("mlflow", "MLflow")
        uri = recipe.logging.mlflow.tracking_uri
        if not uri:
            # MLflow 3 keeps its file store in maintenance mode behind an opt-in; a folder in the run
            # dir is what a run that must stay offline and self-contained needs
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(run_dir).resolve() / "mlruns").as_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(recipe.logging.project)
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=name, tags={t: "" for t in recipe.logging.tags})
        flat = _flatten(logged_config(recipe, run_dir))
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})

    def log(self, row: dict) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in _numbers(row).items()}, step=int(row["step"]))

    def finish(self) -> None:
        self.mlflow.end_run()


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


SINKS = {"wandb": WandbSink, "tensorboard": TensorBoardSink, "mlflow": MlflowSink}


def enabled_backends(recipe) -> list[str]:
    return [name for name in SINKS if recipe.logging[name].enabled]


def open_trackers(recipe, run_dir: Path) -> list:
    if int(os.environ.get("RANK", "0")) != 0:
        return []  # one run per job in each tracker: rank 0 reports (its values are gathered over ranks)
    name = recipe.logging.run_name or Path(run_dir).resolve().name
    sinks = []
    for backend in enabled_backends(recipe):
        try:
            sinks.append(SINKS[backend](recipe, Path(run_dir), name))
        except EnvironmentProblem:
            raise
        except Exception as exc:  # a tracker that cannot start is a setup problem, not a crash
            for sink in sinks:
                sink.finish()
            raise EnvironmentProblem(f"cannot start the {backend} tracker: {type(exc).__name__}: {str(exc)[:300]}",
                                     hint=f"fix its setup, or run without it (drop {backend} from logging=[...])") from None
    return sinks
