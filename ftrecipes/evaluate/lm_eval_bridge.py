"""lm-evaluation-harness on the tuned model: `run_lm_eval(recipe, run_dir) -> dict | None`.

Runs the tasks of `evaluate.lm_eval.tasks` through lm-eval's Python API (`simple_evaluate`) on the
tuned model as ftrecipes loads it (`load_tuned`: the base plus `adapter/`, or `model/`), and adds
the scores to `eval/summary.json` under `lm_eval` (so they show in `report.html`):

    "lm_eval": {"tuned": {"heldout": {"exact_match": 0.95, "exact_match_stderr": 0.03}, ...},
                "base": {...}, "n_docs": {"heldout": 60}, "lm_eval_version": "0.4.13", ...}

The full harness output goes to `eval/lm_eval/results_<model>.json`.

- `heldout`: a task built from the recipe's own held-out split, so the harness runs offline. Its
  YAML and data (`eval/lm_eval/tasks/`) are generated here: each prompt rendered with the tuned
  tokenizer's chat template (generation prompt added), greedy generation up to
  `evaluate.max_new_tokens` tokens, stopped at the end-of-sequence token, exact match against the
  reference after stripping surrounding whitespace: the same measure as the evaluate stage's
  `exact_match`, now with the harness's standard error. Always zero-shot.
- any other name: a task or group of the installed harness (`mmlu`, `arc_easy`, ...), or of the
  folder `evaluate.lm_eval.include_path`. Its data comes from the Hugging Face hub or the local
  cache; an unknown name fails before any model loads (with did-you-mean), unreachable data fails
  with the task and the cause.

Recipe keys: `evaluate.lm_eval.tasks` (empty: nothing runs), `.limit` (documents per task),
`.num_fewshot` (harness tasks; null: each task's default), `.batch_size`, `.compare_base` (also the
untuned base), `.include_path`, `.apply_chat_template` (harness tasks' prompts through the chat
template); `evaluate.split`, `evaluate.max_new_tokens`; `seed` (the harness's seeds).

Raises `EnvironmentProblem` (`pip install 'ftrecipes[eval]'`) without lm-eval, or when a task's
data cannot be loaded; `RecipeError` for an unknown task name; `DataError` without held-out rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftrecipes.config.problems import closest
from ftrecipes.errors import DataError, EnvironmentProblem, RecipeError, require
from ftrecipes.evaluate.summary_merge import merge_eval_summary

LOCAL = "heldout"
LOCAL_TASK = "ftrecipes_heldout"  # the harness-side name, clear of the harness's own tasks
DEFAULTS = {"tasks": [], "limit": None, "num_fewshot": None, "batch_size": 8, "compare_base": False,
            "include_path": None, "apply_chat_template": False}


def settings(recipe) -> dict:
    """`evaluate.lm_eval` with defaults for keys a recipe from an older ftrecipes lacks."""
    given = recipe.evaluate.get("lm_eval") or {}
    return {key: given.get(key, default) for key, default in DEFAULTS.items()}


def _split_rows(recipe, run_dir: Path) -> list[dict]:
    from ftrecipes.data.splits import read_split

    summary = run_dir / "eval" / "summary.json"
    split = (json.loads(summary.read_text()).get("split") if summary.is_file() else None) or recipe.evaluate.split
    rows = read_split(run_dir, split) or read_split(run_dir, "validation")
    if not rows:
        raise DataError(f"no held-out rows in {run_dir / 'data'} for the lm-eval task '{LOCAL}'",
                        hint="run the prepare stage with data.split.test or data.split.validation above 0")
    return rows


def write_heldout_task(recipe, run_dir: Path, tokenizer, folder: Path) -> Path:
    """Writes the `heldout` task (YAML and JSONL data) into `folder`; returns the YAML's path."""
    import yaml

    from ftrecipes.evaluate.review_sheet import prompt_and_reference

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{LOCAL_TASK}.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for index, row in enumerate(_split_rows(recipe, run_dir)):
            pair = prompt_and_reference(row)
            if pair is None:
                continue
            text = tokenizer.apply_chat_template(pair[0], tokenize=False, add_generation_prompt=True)
            f.write(json.dumps({"id": index, "prompt": text, "reference": pair[1]}, ensure_ascii=False) + "\n")
    eos = tokenizer.decode([tokenizer.eos_token_id], skip_special_tokens=False)
    task = {
        "task": LOCAL_TASK,
        "dataset_path": "json",  # the datasets library's local JSON builder: no network
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{reference}}",
        "num_fewshot": 0,  # the prompt is already a rendered chat; the harness then ignores num_fewshot
        "generation_kwargs": {"until": [eos], "do_sample": False,
                              "max_gen_toks": int(recipe.evaluate.max_new_tokens)},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "regexes_to_ignore": [r"^\s+", r"\s+$"]}],
        "metadata": {"version": 1.0, "source": str(run_dir.resolve())},
    }
    path = folder / f"{LOCAL_TASK}.yaml"
    path.write_text("# Written by ftrecipes (evaluate.lm_eval.tasks=[heldout]) from the held-out split.\n"
                    + yaml.safe_dump(task, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _task_manager(paths: list[str], defaults: bool):
    from lm_eval.tasks import TaskManager

    # Indexing the harness's own ~15,000 task files takes seconds: only when a named task needs it.
    return TaskManager(include_path=paths or None, include_defaults=defaults)


def _include_paths(cfg: dict) -> list[str]:
    if not cfg["include_path"]:
        return []
    folder = Path(cfg["include_path"]).expanduser()
    if not folder.is_dir():
        raise EnvironmentProblem(f"evaluate.lm_eval.include_path '{cfg['include_path']}' is not a folder",
                                 hint="point it at a folder of lm-eval task YAML files")
    return [str(folder)]


def check_names(names: list[str], manager) -> None:
    """Raises `RecipeError` naming every task the harness does not know, with did-you-mean."""
    from importlib.metadata import version

    known = manager.all_tasks
    unknown = [n for n in names if n not in known]
    if unknown:
        guesses = {n: closest(n, known, 0.75) for n in unknown}
        listed = ", ".join(f"'{n}'" + (f" (did you mean {g}?)" if g else "") for n, g in guesses.items())
        raise RecipeError(
            f"evaluate.lm_eval.tasks: lm-eval {version('lm_eval')} has no task {listed}",
            hint="`lm-eval ls tasks` lists them; for a benchmark it does not ship (e.g. CLUE's cmnli, csl, "
                 "iflytek), write a task YAML and set evaluate.lm_eval.include_path to its folder")


def _load_tasks(names: list[str], manager) -> dict:
    """The harness's task objects; data that cannot be loaded becomes an `EnvironmentProblem`."""
    import warnings

    from lm_eval.tasks import get_task_dict

    tasks = {}
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # its successor is not yet in 0.4.x docs
                tasks.update(get_task_dict([name], manager))
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "data not reachable"
            cause = str(exc).splitlines()[0][:300] if str(exc) else ""
            raise EnvironmentProblem(
                f"lm-eval task '{name}' could not load its data: {type(exc).__name__}: {cause}",
                hint="its data set comes from the Hugging Face hub: connect to the network once (it is then cached), "
                     "or drop the task; the task 'heldout' runs offline") from None
    return tasks


def _flatten(results: dict, names: dict[str, str]) -> dict:
    """`{our name: {metric: value}}` from the harness's `{"task": {"metric,filter": value}}`."""
    out = {}
    for ours, theirs in names.items():
        entry = results.get(theirs, {})
        scores = {}
        for key, value in entry.items():
            if "," not in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            scores[metric if filt == "none" else f"{metric} ({filt})"] = value
        out[ours] = scores
    return out


def _write_samples(path: Path, samples: list[dict]) -> None:
    """The heldout task's answers, one line per document: id, prediction, reference, exact match."""
    with path.open("w", encoding="utf-8") as f:
        for s in sorted(samples, key=lambda s: s["doc"]["id"]):
            f.write(json.dumps({"id": s["doc"]["id"], "prediction": (s.get("filtered_resps") or [""])[0],
                                "reference": s["doc"]["reference"], "exact_match": s.get("exact_match")},
                               ensure_ascii=False) + "\n")


def _evaluate(lm, names: list[str], manager, cfg: dict, seed: int, chat: bool) -> dict:
    from lm_eval import simple_evaluate

    # By name, through the same TaskManager: the data sets are cached by the check in _load_tasks.
    return simple_evaluate(model=lm, tasks=names, task_manager=manager, num_fewshot=cfg["num_fewshot"],
                           limit=cfg["limit"], bootstrap_iters=1000, log_samples=LOCAL_TASK in names,
                           apply_chat_template=chat, random_seed=seed, numpy_random_seed=seed,
                           torch_random_seed=seed, fewshot_random_seed=seed)


def run_lm_eval(recipe, run_dir: Path) -> dict | None:
    """Runs `evaluate.lm_eval.tasks`; returns the `lm_eval` entry it adds to `eval/summary.json`,
    or None when no task is listed."""
    cfg = settings(recipe)
    if not cfg["tasks"]:
        return None
    require("lm_eval", extra="eval", purpose="evaluate.lm_eval")
    from importlib.metadata import version

    from lm_eval.models.huggingface import HFLM

    from ftrecipes.model.load import load_model_and_tokenizer, load_tuned

    run_dir = Path(run_dir)
    out = run_dir / "eval" / "lm_eval"
    task_dir = out / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    named = [t for t in cfg["tasks"] if t != LOCAL]
    manager = _task_manager(_include_paths(cfg), defaults=True) if named else None
    if named:
        check_names(named, manager)
        _load_tasks(named, manager)  # fail on unreachable data before loading a model

    summary: dict = {"tasks": list(cfg["tasks"]), "limit": cfg["limit"], "num_fewshot": cfg["num_fewshot"],
                     "lm_eval_version": version("lm_eval"), "n_docs": {}}
    names = ({LOCAL: LOCAL_TASK} if LOCAL in cfg["tasks"] else {}) | {n: n for n in named}
    runs = [(named, manager, bool(cfg["apply_chat_template"]))] if named else []
    base, local_pending = None, LOCAL in cfg["tasks"]
    # The base first: loading the adapter wraps the base model in place.
    for label in ("base", "tuned") if cfg["compare_base"] else ("tuned",):
        if label == "base":
            base = model, tokenizer = load_model_and_tokenizer(recipe)
        else:
            model, tokenizer = load_tuned(recipe, run_dir, base)
        if local_pending:  # written once, with the first tokenizer loaded (base and tuned share it)
            write_heldout_task(recipe, run_dir, tokenizer, task_dir)
            runs.insert(0, ([LOCAL_TASK], _task_manager([str(task_dir)], defaults=False), False))
            local_pending = False
        model.eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg["batch_size"])
        results, configs, n_docs = {}, {}, {}
        for task_names, task_manager, chat in runs:
            res = _evaluate(lm, task_names, task_manager, cfg, int(recipe.seed), chat)
            results.update(res["results"])
            configs.update(res.get("configs", {}))
            n_docs.update({k: v.get("effective", v.get("original")) for k, v in res.get("n-samples", {}).items()})
            if LOCAL_TASK in res.get("samples", {}):
                _write_samples(out / f"samples_{LOCAL}_{label}.jsonl", res["samples"][LOCAL_TASK])
        (out / f"results_{label}.json").write_text(
            json.dumps({"results": results, "configs": configs, "n-samples": n_docs}, indent=2, default=str) + "\n")
        summary[label] = _flatten(results, names)
        summary["n_docs"] = {ours: n_docs.get(theirs) for ours, theirs in names.items()}
    merge_eval_summary(run_dir, "lm_eval", summary)
    print(format_lm_eval(summary))
    return summary


def format_lm_eval(summary: dict) -> str:
    lines = [f"lm-eval {summary['lm_eval_version']}:"]
    for label in ("base", "tuned"):
        for task, scores in summary.get(label, {}).items():
            shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if not k.endswith("_stderr")) or "-"
            lines.append(f"  {label:<6}{task:<24}{shown}  (n={summary['n_docs'].get(task)})")
    return "\n".join(lines)


# `python -m ftrecipes.evaluate.lm_eval_bridge run_dir=... tasks=[heldout,mmlu]`: the harness on a
# finished run, with the run's recipe and these arguments in place of its evaluate.lm_eval keys.

def _cli(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    from ftrecipes import cli_args as a
    from ftrecipes.config.resolve import load_resolved

    spec = {"run_dir": a.Arg(a.text, a.REQUIRED, "a run dir with a trained model"),
            "tasks": a.Arg(a.text_list, a.REQUIRED, "heldout and/or harness task names"),
            "limit": a.Arg(a.optional_integer, None, "documents per task"),
            "num_fewshot": a.Arg(a.optional_integer, None, "few-shot examples (harness tasks)"),
            "batch_size": a.Arg(a.integer, 8, "requests per batch"),
            "compare_base": a.Arg(a.boolean, False, "also the untuned base"),
            "include_path": a.Arg(a.optional_text, None, "a folder of task YAMLs"),
            "apply_chat_template": a.Arg(a.boolean, False, "harness prompts through the chat template")}
    prog = "python -m ftrecipes.evaluate.lm_eval_bridge"
    if any(w in ("-h", "--help") for w in argv):
        print(a.usage(prog, spec, __doc__))
        return 0
    args = a.parse(argv, spec, prog)
    run_dir = Path(args.pop("run_dir"))
    if not (run_dir / "recipe.resolved.yaml").is_file():
        raise EnvironmentProblem(f"{run_dir} is not a run dir (no recipe.resolved.yaml)")
    tree = OmegaConf.to_container(load_resolved(run_dir / "recipe.resolved.yaml"), resolve=True)
    tree["evaluate"]["lm_eval"] = args
    run_lm_eval(OmegaConf.create(tree), run_dir)
    return 0


if __name__ == "__main__":
    import sys

    from ftrecipes.errors import report_errors

    sys.exit(report_errors(_cli, sys.argv[1:]))
